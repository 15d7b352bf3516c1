"""Token samplers: the interface, position-keyed randomness and the sampling math.

The cluster sampler is CogView2's ``CoglmStrategy`` (THUDM/CogVideo coglm_strategy.py).

A token sampler (registry kind ``token_sampler``) turns logits into token ids::

    tokens = sampler(logits, positions, noise)

* ``logits``: ``[N, V]`` float, one row per token being sampled (V = image vocabulary);
* ``positions``: ``LongTensor[N]``, the natural slot of each row (samplers may use it, e.g. for a
  per-frame temperature; most ignore it);
* ``noise``: a :class:`RowNoise` whose ``uniform(draw)`` gives one uniform number per row;
* returns ``LongTensor[N]`` token ids.

Why position-keyed randomness: the uniforms of a row are a hash of (seed, stream, slot, draw),
not the next numbers of a shared generator. So the token drawn for slot ``s`` does not depend on
how many other tokens are sampled in the same forward or in which order; that is what makes
parallel-wave decoding produce exactly the tokens of one-token-at-a-time decoding, with sampling
and not only with greedy decoding. Every sampler here is also *row-wise*: a row's result depends
on that row's logits and uniforms only (softmax, cumsum and search along the last dimension).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from cogframe.errors import ConfigError, DataError, ShapeError

__all__ = [
    "RowNoise",
    "SlotNoise",
    "TokenSampler",
    "cluster_sample",
    "kmeans_clusters",
    "load_clusters",
    "sample_categorical",
    "sample_weights",
    "top_k_filter",
    "top_p_filter",
]

_M32 = 0xFFFFFFFF

# The hash runs in numpy uint32, whose multiplication wraps modulo 2**32 exactly as the hash is
# defined: a handful of vectorised ops per call instead of ~30 small torch ops (the per-pass
# cost of sampling at the tiny models' width was mostly op dispatch). Inputs are always arrays,
# never numpy scalars (scalar arithmetic warns on the intended wrap-around).


def _u32(value) -> np.ndarray:
    """Low 32 bits of int64 values (a tensor, an array or an int) as a uint32 array."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return (np.atleast_1d(np.asarray(value, dtype=np.int64)) & _M32).astype(np.uint32)


def _hash32(x: np.ndarray) -> np.ndarray:
    """The ``lowbias32`` integer hash (good avalanche, 32 bits in, 32 bits out), uint32 arrays."""
    x = x ^ (x >> np.uint32(16))
    x = x * np.uint32(0x7FEB352D)
    x = x ^ (x >> np.uint32(15))
    x = x * np.uint32(0x846CA68B)
    return x ^ (x >> np.uint32(16))


def _mix(h: np.ndarray, value) -> np.ndarray:
    """Fold a 64-bit value (int, int64 tensor or array) into a 32-bit running hash (low word,
    then high word)."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    value = np.atleast_1d(np.asarray(value, dtype=np.int64))
    h = _hash32(h ^ (value & _M32).astype(np.uint32))
    return _hash32(h ^ ((value >> 32) & _M32).astype(np.uint32) ^ np.uint32(0x9E3779B9))


class RowNoise:
    """Uniform random numbers for the rows of one sampling call, keyed per row.

    Args:
        keys: ``LongTensor[N]`` 32-bit keys, one per row (see :meth:`SlotNoise.rows`).
    """

    def __init__(self, keys: torch.Tensor):
        if keys.dim() != 1:
            raise ShapeError(f"noise keys must be one key per row ([N]), got shape {tuple(keys.shape)}.")
        self.keys = keys.long()

    def __len__(self) -> int:
        return int(self.keys.numel())

    def uniform(self, draw: int) -> torch.Tensor:
        """``float64[N]`` uniforms in ``[0, 1)`` for draw number ``draw`` (0, 1, ...) of each row.

        Two 32-bit hashes give the 53 mantissa bits; the same (key, draw) always gives the
        same number.
        """
        base = _mix(_u32(self.keys), int(draw))
        hi = (_hash32(base ^ np.uint32(0x68E31DA4)) >> np.uint32(5)).astype(np.int64)  # 27 bits
        lo = (_hash32(base ^ np.uint32(0xB5297A4D)) >> np.uint32(6)).astype(np.int64)  # 26 bits
        # Exact: the integer is below 2**53 and the division is by a power of two.
        return torch.from_numpy((hi * (1 << 26) + lo).astype(np.float64) / float(1 << 53))

    def select(self, index: torch.Tensor) -> "RowNoise":
        """The noise of a subset of rows (keys follow the rows)."""
        return RowNoise(self.keys[index])


class SlotNoise:
    """Counter-based randomness: the uniforms of a token depend on (seed, stream, slot) only.

    Args:
        seed: The run's seed (any Python int).

    ``stream`` separates independent samples that share slots: the batch row of a prompt, or the
    (round, prompt, window) of a stage-2 window.
    """

    def __init__(self, seed: int = 0):
        self.seed = int(seed)

    def rows(self, streams: torch.Tensor, slots: torch.Tensor) -> RowNoise:
        """Row noise for rows whose (stream, slot) pairs are given (``[N]`` each)."""
        if streams.shape != slots.shape or streams.dim() != 1:
            raise ShapeError(
                f"streams and slots must both be [N]; got {tuple(streams.shape)} and "
                f"{tuple(slots.shape)}."
            )
        # Keys live on the CPU; uniforms move to the logits' device. The seed's hash is the same
        # for every row, so it is computed once and broadcast.
        h = _mix(np.zeros(1, dtype=np.uint32), self.seed)
        h = _mix(h, streams.long())
        h = _mix(h, slots.long())
        return RowNoise(torch.from_numpy(h.astype(np.int64)))


class TokenSampler(Protocol):
    """What the decoders need from a sampler (see the module docstring)."""

    def __call__(self, logits: torch.Tensor, positions: torch.Tensor, noise: RowNoise) -> torch.Tensor:
        """Return ``LongTensor[N]`` token ids for ``[N, V]`` logits."""
        ...


# ================================================================================== sampling math
def sample_categorical(logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF sampling of ``softmax(logits)`` per row with the given uniforms.

    Args:
        logits: ``[N, V]``; ``-inf`` entries are never chosen.
        u: ``[N]`` uniforms in ``[0, 1)``.

    Returns:
        ``LongTensor[N]`` (see :func:`sample_weights`).
    """
    return sample_weights(torch.softmax(logits.double(), dim=-1), u)


def sample_weights(weights: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF sampling of rows of non-negative weights (they need not sum to one).

    Args:
        weights: ``[N, V]`` non-negative, at least one positive entry per row.
        u: ``[N]`` uniforms in ``[0, 1)``.

    Returns:
        ``LongTensor[N]``: the smallest index whose cumulative weight exceeds ``u * total``;
        an index of zero weight is never returned.
    """
    cdf = weights.double().cumsum(-1)
    total = cdf[:, -1:]
    # Keep the target strictly below the total so the search never runs past a positive mass.
    target = torch.minimum(u.to(cdf).unsqueeze(-1) * total,
                           torch.nextafter(total, torch.zeros_like(total)))
    index = torch.searchsorted(cdf, target, right=True).squeeze(-1)
    return index.clamp(max=weights.shape[-1] - 1).to(weights.device)


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Set every logit below the row's k-th largest to ``-inf`` (ties at the k-th are kept)."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = logits.topk(k, dim=-1).values[:, -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose probability reaches ``p`` (nucleus)."""
    if p >= 1.0:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = torch.softmax(sorted_logits.double(), dim=-1)
    before = probs.cumsum(-1) - probs  # mass of strictly more likely tokens
    drop_sorted = before >= p
    drop_sorted[:, 0] = False  # the most likely token always survives
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def cluster_sample(
    logits: torch.Tensor,
    clusters: torch.Tensor,
    noise: RowNoise,
    *,
    top_k: int,
    temperature: float,
    temperature2: float,
) -> torch.Tensor:
    """CogView2's cluster sampling (``CoglmStrategy``, THUDM/CogVideo coglm_strategy.py).

    1. ``logits / temperature``; softmax; sum the probability of each cluster.
    2. Keep the ``top_k`` clusters by mass; pick one in proportion to its mass (draw 0).
    3. Mask every token outside it and sample from ``softmax(logits / temperature / temperature2)``
       (draw 1); the released code divides the already tempered logits by ``temperature2``.

    Args:
        logits: ``[N, V]``.
        clusters: ``LongTensor[V]``: the cluster of every token id, in ``[0, C)``.
        noise: Row noise (two draws per row).
        top_k: Clusters kept.
        temperature: First temperature.
        temperature2: In-cluster temperature.
    """
    if clusters.shape != (logits.shape[-1],):
        raise ShapeError(
            f"cluster labels cover {clusters.numel()} token ids but the logits have {logits.shape[-1]} "
            "(dimension 1); build the clusters from the image tokenizer of this model."
        )
    clusters = clusters.to(logits.device)
    num_clusters = int(clusters.max()) + 1
    scaled = logits.double() / temperature
    probs = torch.softmax(scaled, dim=-1)
    mass = torch.zeros(logits.shape[0], num_clusters, dtype=probs.dtype, device=probs.device)
    mass.scatter_add_(1, clusters.expand_as(probs), probs)
    k = min(int(top_k), num_clusters)
    best_mass, best = mass.topk(k, dim=-1)
    pick = sample_weights(best_mass, noise.uniform(0))
    chosen = best.gather(1, pick.unsqueeze(-1))
    inside = scaled.masked_fill(clusters.unsqueeze(0) != chosen, float("-inf"))
    return sample_categorical(inside / temperature2, noise.uniform(1))


# ================================================================================== clusters
def kmeans_clusters(codebook: torch.Tensor, k: int, seed: int = 0, iterations: int = 30) -> torch.Tensor:
    """Cluster the rows of an image tokenizer's codebook with k-means (k-means++ start).

    CogVideo ships 500 clusters of icetk's 20000 codes (``cluster_label2.npy``); for another
    tokenizer this recomputes an equivalent grouping: similar codes share a cluster.

    Args:
        codebook: ``[V, D]`` code vectors.
        k: Number of clusters (``1 <= k <= V``).
        seed: Seed of the initialisation; the result is deterministic for a given seed.
        iterations: Lloyd iterations (stops early when assignments no longer change).

    Returns:
        ``LongTensor[V]``: cluster id of each code, every id in ``[0, k)`` used at least once.
    """
    if codebook.dim() != 2:
        raise ShapeError(f"codebook must be [num_codes, dim], got shape {tuple(codebook.shape)}.")
    x = codebook.detach().double().cpu()
    n = x.shape[0]
    if not 1 <= k <= n:
        raise ConfigError(f"num_clusters must be in 1..{n} (the codebook size), got {k}.")
    gen = torch.Generator().manual_seed(int(seed))
    centers = x[torch.randint(n, (1,), generator=gen)]
    nearest = torch.cdist(x, centers).squeeze(1) ** 2
    for _ in range(1, k):  # k-means++: next centre with probability ~ squared distance
        weights = nearest if float(nearest.sum()) > 0 else torch.ones_like(nearest)
        idx = torch.multinomial(weights, 1, generator=gen)
        centers = torch.cat([centers, x[idx]])
        nearest = torch.minimum(nearest, ((x - x[idx]) ** 2).sum(1))
    labels = torch.cdist(x, centers).argmin(1)
    for _ in range(iterations):
        sums = torch.zeros_like(centers).index_add_(0, labels, x)
        counts = torch.bincount(labels, minlength=k)
        empty = (counts == 0).nonzero().squeeze(-1)
        centers = sums / counts.clamp_min(1).unsqueeze(1).to(x)
        if empty.numel():  # an empty cluster takes the codes farthest from their centres
            far = ((x - centers[labels]) ** 2).sum(1).topk(empty.numel()).indices
            centers[empty] = x[far]
        new = torch.cdist(x, centers).argmin(1)
        if torch.equal(new, labels) and not empty.numel():
            break
        labels = new
    # Relabel by first appearance so ids are stable and dense.
    _, first = torch.unique(labels, return_inverse=True)
    return first.long()


def load_clusters(path: str | Path, vocab_size: int | None = None) -> torch.Tensor:
    """Read cluster labels from a ``.npy`` file (e.g. CogVideo's ``cluster_label2.npy``).

    Raises:
        DataError: The file is missing or not a 1-D integer array, or its length is not
            ``vocab_size`` when that is given.
    """
    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise DataError(f"no cluster label file at {path}; give an existing .npy file or leave "
                        "clusters unset to compute k-means clusters from the image tokenizer.")
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read cluster labels from {path}: {exc}. Save them with numpy.save.") from exc
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer) or array.size == 0 or array.min() < 0:
        raise DataError(f"{path} must hold a non-empty 1-D array of non-negative integer cluster ids, "
                        f"got dtype {array.dtype} and shape {array.shape}.")
    if vocab_size is not None and array.size != vocab_size:
        raise DataError(f"{path} labels {array.size} token ids but the image vocabulary has {vocab_size}; "
                        "use the labels of this model's image tokenizer.")
    return torch.from_numpy(array.astype(np.int64))
