"""Token samplers (kind ``token_sampler``): greedy, temperature, top-k, top-p and cluster.

Every sampler follows the protocol of :mod:`cogframe.core.generation.token_sampling`::

    tokens = sampler(logits [N, V], positions LongTensor[N], noise RowNoise) -> LongTensor[N]

and draws its randomness from ``noise`` only, which is keyed by (seed, stream, slot): the
token of a slot does not depend on which other slots share the forward pass, so parallel-wave
decoding reproduces sequential decoding with sampling too.
"""

from __future__ import annotations

import torch

from cogframe.core.generation.token_sampling import (
    RowNoise,
    cluster_sample,
    kmeans_clusters,
    load_clusters,
    sample_categorical,
    top_k_filter,
    top_p_filter,
)
from cogframe.errors import ConfigError
from cogframe.hookspecs import hookimpl
from cogframe.registry import Capabilities, component

__all__ = ["ClusterSampler", "GreedySampler", "TemperatureSampler", "TopKSampler", "TopPSampler"]


def _positive(name: str, value: float) -> float:
    value = float(value)
    if not value > 0:
        raise ConfigError(f"{name} must be > 0, got {value}; use greedy for deterministic decoding.")
    return value


@component("token_sampler", "greedy", description="Most likely token (argmax); no randomness.")
class GreedySampler:
    """The most likely token of each row (the first one on ties).

    ``deterministic``: the token depends on the logits alone (no noise, no position), which is what
    makes speculative decoding exact with it (:mod:`cogframe.core.generation.speculative`).
    """

    deterministic = True

    def __call__(self, logits: torch.Tensor, positions: torch.Tensor, noise: RowNoise) -> torch.Tensor:
        return logits.argmax(-1)


@component("token_sampler", "temperature", description="Sample softmax(logits / temperature).")
class TemperatureSampler:
    """Sample from ``softmax(logits / temperature)``.

    Args:
        temperature: Above 1 flattens, below 1 sharpens the distribution.
    """

    def __init__(self, temperature: float = 1.0) -> None:
        self.temperature = _positive("temperature", temperature)

    def __call__(self, logits: torch.Tensor, positions: torch.Tensor, noise: RowNoise) -> torch.Tensor:
        return sample_categorical(logits.double() / self.temperature, noise.uniform(0))


@component("token_sampler", "top_k", description="Sample among the k most likely tokens.")
class TopKSampler:
    """Sample among the ``k`` most likely tokens, after dividing by ``temperature``.

    Args:
        k: Tokens kept per row.
        temperature: Softmax temperature.
    """

    def __init__(self, k: int = 50, temperature: float = 1.0) -> None:
        if int(k) < 1:
            raise ConfigError(f"k must be >= 1, got {k}.")
        self.k = int(k)
        self.temperature = _positive("temperature", temperature)

    def __call__(self, logits: torch.Tensor, positions: torch.Tensor, noise: RowNoise) -> torch.Tensor:
        return sample_categorical(top_k_filter(logits.double() / self.temperature, self.k), noise.uniform(0))


@component("token_sampler", "top_p", description="Nucleus sampling: the most likely tokens up to mass p.")
class TopPSampler:
    """Sample within the smallest set of most likely tokens whose probability reaches ``p``.

    Args:
        p: Probability mass kept, in (0, 1].
        temperature: Softmax temperature (applied before the nucleus is cut).
    """

    def __init__(self, p: float = 0.9, temperature: float = 1.0) -> None:
        if not 0 < float(p) <= 1:
            raise ConfigError(f"p must be in (0, 1], got {p}.")
        self.p = float(p)
        self.temperature = _positive("temperature", temperature)

    def __call__(self, logits: torch.Tensor, positions: torch.Tensor, noise: RowNoise) -> torch.Tensor:
        return sample_categorical(top_p_filter(logits.double() / self.temperature, self.p), noise.uniform(0))


def _codebook(image_tokenizer) -> torch.Tensor:
    """The ``[V, D]`` code vectors of an image tokenizer (``codebook`` or ``quantizer.embed``)."""
    book = getattr(image_tokenizer, "codebook", None)
    if callable(book):
        book = book()
    if book is None:
        book = getattr(getattr(image_tokenizer, "quantizer", None), "embed", None)
    if not isinstance(book, torch.Tensor) or book.dim() != 2:
        raise ConfigError(
            f"cannot read a codebook from {type(image_tokenizer).__name__}: it needs a [V, D] tensor "
            "attribute 'codebook' or 'quantizer.embed'; or give the sampler a clusters .npy file."
        )
    return book


@component("token_sampler", "cluster",
           description="CogView2 cluster sampling: top-k token clusters, then a token inside one.",
           runtime_kwargs=("image_tokenizer",),
           capabilities=Capabilities(extra={"files": {"clusters": (
               "copy cluster_label2.npy (20000 image ids -> 500 clusters) from the CogVideo GitHub repository "
               "(THUDM/CogVideo, branch CogVideo, top folder), or drop `clusters` to cluster the image "
               "tokenizer's codebook with k-means instead")}}))
class ClusterSampler:
    """CogView2/CogVideo cluster sampling (``CoglmStrategy``, THUDM/CogVideo coglm_strategy.py).

    Sums ``softmax(logits / temperature)`` per cluster of token ids, keeps the ``top_k``
    clusters, picks one in proportion to its mass, then samples a token inside it from
    ``softmax(logits / temperature / temperature2)``.

    Args:
        top_k: Clusters kept (CogVideo frames: 12; first frame: 16).
        temperature: First temperature (CogVideo: 1.05; first frame: 1.0).
        temperature2: In-cluster temperature (0.89).
        clusters: ``.npy`` file with one cluster id per image token id (CogVideo's
            ``cluster_label2.npy``); None computes k-means clusters of the image tokenizer's
            codebook.
        num_clusters: Clusters of the k-means (CogVideo: 500 over 20000 codes).
        kmeans_seed: Seed of the k-means initialisation.
        image_tokenizer: Supplied by the task: the tokenizer whose codebook is clustered.
    """

    def __init__(self, top_k: int = 12, temperature: float = 1.05, temperature2: float = 0.89,
                 clusters: str | None = None, num_clusters: int = 500, kmeans_seed: int = 0,
                 image_tokenizer=None) -> None:
        if int(top_k) < 1:
            raise ConfigError(f"top_k must be >= 1 cluster, got {top_k}.")
        self.top_k = int(top_k)
        self.temperature = _positive("temperature", temperature)
        self.temperature2 = _positive("temperature2", temperature2)
        if clusters is not None:
            self.clusters = load_clusters(clusters)
        elif image_tokenizer is not None:
            book = _codebook(image_tokenizer)
            self.clusters = kmeans_clusters(book, min(int(num_clusters), book.shape[0]), seed=kmeans_seed)
        else:
            raise ConfigError("the cluster sampler needs clusters: set clusters: <file.npy> or let the "
                              "task pass the image tokenizer (its codebook is clustered with k-means).")

    def __call__(self, logits: torch.Tensor, positions: torch.Tensor, noise: RowNoise) -> torch.Tensor:
        return cluster_sample(logits, self.clusters, noise, top_k=self.top_k,
                              temperature=self.temperature, temperature2=self.temperature2)


@hookimpl
def register_components():
    return [GreedySampler, TemperatureSampler, TopKSampler, TopPSampler, ClusterSampler]
