"""The Fréchet distance between two sets of clips on the features of the moving-shapes classifier.

This is the offline analogue of FVD (Fréchet Video Distance) for the synthetic domain: each clip
is embedded by :class:`~cogframe.core.metrics.video_classifier.VideoClassifier` (its penultimate
``embed_dim``-d layer), each set of embeddings is summarised by its mean ``mu`` and covariance
``S``, and the distance between the two Gaussians is

    d^2 = |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1^{1/2} S2 S1^{1/2})^{1/2}).

**Why this form, and why it is exact.** The usual formula writes ``Tr((S1 S2)^{1/2})``. ``S1 S2``
is not symmetric, so its square root needs a general (complex, Schur-based) matrix square root,
usually scipy's ``sqrtm``, which returns small imaginary parts that have to be thrown away. For
covariance matrices (symmetric positive semi-definite) the two traces are equal: ``S1 S2 =
A B`` and ``S1^{1/2} S2 S1^{1/2} = B A`` with ``A = S1^{1/2}``, ``B = S1^{1/2} S2``, and ``AB`` and
``BA`` have the same eigenvalues. ``M = S1^{1/2} S2 S1^{1/2}`` is symmetric PSD, so its eigenvalues
are real and >= 0 and ``Tr(M^{1/2})`` is the sum of their square roots. Both square roots here
are of symmetric PSD matrices, done by symmetric eigendecomposition (``numpy.linalg.eigh``), which
is backward stable: no scipy, no complex numbers, nothing discarded. Eigenvalues that rounding
makes slightly negative are clipped to 0 (they are 0 in exact arithmetic).

**Small sets.** With fewer clips than feature dimensions a covariance is singular. The formula
above needs no inverse, so it stays defined, but to keep the eigen-decompositions well conditioned
``eps`` (default :data:`DEFAULT_EPS` = 1e-6) is added to the diagonal of both covariances. That adds
a constant to both ``Tr S`` terms and changes ``Tr M^{1/2}`` by about the same, so the distance of a
set to itself stays 0 up to rounding. All arithmetic is float64.

**Scale.** The values depend on this classifier and this domain. They are *not* comparable with
published FVD numbers (I3D features of Kinetics-trained networks on real videos); compare them
with the floor of two disjoint real sets of the same size (docs/quality.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from cogframe.core.metrics.video_classifier import VideoClassifier, load_video_classifier
from cogframe.errors import DataError, ShapeError

__all__ = [
    "DEFAULT_EPS",
    "FeatureStats",
    "embed_clips",
    "feature_stats",
    "frechet_distance",
    "frechet_distance_of_clips",
    "frechet_distance_of_stats",
    "load_video_classifier",
    "sqrt_psd",
]

DEFAULT_EPS = 1e-6


@dataclass(frozen=True)
class FeatureStats:
    """Mean and covariance of a set of features (what the distance compares).

    Attributes:
        mean: ``float64 [D]``.
        cov: ``float64 [D, D]``, the unbiased (``N - 1``) sample covariance.
        count: Number of feature vectors.
    """

    mean: np.ndarray
    cov: np.ndarray
    count: int


def _as_features(features: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    if isinstance(features, torch.Tensor):
        features = features.detach().cpu().double().numpy()
    array = np.asarray(features, dtype=np.float64)
    if array.ndim != 2:
        raise ShapeError(f"{name} has shape {array.shape}; features must be [N, D] (one row per clip).")
    if array.shape[0] < 2:
        raise ShapeError(f"{name} has {array.shape[0]} feature vector(s); a covariance needs >= 2 clips per set "
                         "(use tens to hundreds: the distance's floor shrinks as sets grow).")
    if not np.isfinite(array).all():
        raise DataError(f"{name} holds NaN or infinite values; the features come from a broken classifier or "
                        "broken clips: check the weights and the clips' pixels.")
    return array


def feature_stats(features: np.ndarray | torch.Tensor, *, name: str = "features") -> FeatureStats:
    """Mean and unbiased covariance of ``features [N, D]`` (N >= 2).

    Raises:
        ShapeError: Not ``[N, D]`` or fewer than 2 rows.
        DataError: Non-finite values.
    """
    array = _as_features(features, name)
    return FeatureStats(mean=array.mean(axis=0), cov=np.cov(array, rowvar=False).reshape(array.shape[1], -1),
                        count=int(array.shape[0]))


def sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    """The symmetric square root of a symmetric positive semi-definite matrix, by ``eigh``.

    The matrix is symmetrised first (rounding can make it asymmetric by ~1 ulp) and eigenvalues
    below 0, which are rounding errors of a PSD matrix, are taken as 0.
    """
    sym = (matrix + matrix.T) / 2.0
    values, vectors = np.linalg.eigh(sym)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance_of_stats(a: FeatureStats, b: FeatureStats, *, eps: float = DEFAULT_EPS) -> float:
    """The Fréchet distance (squared, as FID/FVD report it) between two Gaussians.

    Args:
        a: Statistics of the first set.
        b: Statistics of the second set.
        eps: Added to the diagonal of both covariances (see the module docstring), >= 0.

    Raises:
        ShapeError: The two sets have features of different dimensions.
    """
    if a.mean.shape != b.mean.shape:
        raise ShapeError(f"the two feature sets have {a.mean.shape[0]} and {b.mean.shape[0]} dimensions; embed "
                         "both with the same classifier.")
    if eps < 0:
        raise ShapeError(f"eps={eps}: the diagonal offset must be >= 0.")
    eye = np.eye(a.mean.shape[0]) * eps
    s1, s2 = a.cov + eye, b.cov + eye
    root1 = sqrt_psd(s1)
    middle = root1 @ s2 @ root1
    values = np.linalg.eigvalsh((middle + middle.T) / 2.0)
    trace_sqrt = float(np.sqrt(np.clip(values, 0.0, None)).sum())
    diff = a.mean - b.mean
    distance = float(diff @ diff) + float(np.trace(s1) + np.trace(s2)) - 2.0 * trace_sqrt
    # In exact arithmetic the trace term is >= 0 (it is a squared Wasserstein-2 distance); rounding
    # can leave a tiny negative value for identical sets, which is reported as 0.
    return max(distance, 0.0)


def frechet_distance(features_a: np.ndarray | torch.Tensor, features_b: np.ndarray | torch.Tensor, *,
                     eps: float = DEFAULT_EPS) -> float:
    """The Fréchet distance between two feature sets ``[N_a, D]`` and ``[N_b, D]`` (N >= 2 each).

    Raises:
        ShapeError: A set that is not ``[N, D]``, has fewer than 2 rows, or dimensions that differ.
        DataError: Non-finite features.
    """
    return frechet_distance_of_stats(feature_stats(features_a, name="features_a"),
                                     feature_stats(features_b, name="features_b"), eps=eps)


def embed_clips(classifier: VideoClassifier, clips: np.ndarray | torch.Tensor | Sequence[np.ndarray],
                *, batch_size: int = 64) -> np.ndarray:
    """The classifier's embedding of every clip, computed ``batch_size`` clips at a time.

    Args:
        classifier: A trained :class:`VideoClassifier` (e.g. from :func:`load_video_classifier`).
        clips: uint8 ``[B, T, H, W, 3]``, or a sequence of ``[T_i, H, W, 3]`` clips of any lengths
            (each is resampled to the classifier's frame count).
        batch_size: Clips per forward pass (>= 1).

    Returns:
        ``float64 [B, embed_dim]``.

    Raises:
        ShapeError: Clips of the wrong dtype, shape or frame size (the message says which clip).
    """
    if batch_size < 1:
        raise ShapeError(f"batch_size={batch_size}: embed at least one clip per pass.")
    items = list(clips) if not isinstance(clips, (np.ndarray, torch.Tensor)) or clips.ndim == 5 else None
    if items is None:
        raise ShapeError(f"clips have shape {tuple(clips.shape)}; pass uint8 [B, T, H, W, 3] or a list of "
                         "[T, H, W, 3] clips.")
    if not items:
        raise ShapeError("no clips given; pass at least two uint8 [T, H, W, 3] clips per set.")
    out = []
    for start in range(0, len(items), batch_size):
        try:
            out.append(classifier.features(items[start:start + batch_size]).double().numpy())
        except ShapeError as exc:
            # The classifier numbers clips within the batch; say which clip of the whole set it is.
            raise ShapeError(f"in clips {start}..{min(start + batch_size, len(items)) - 1}: {exc}") from None
    return np.concatenate(out)


def frechet_distance_of_clips(classifier: VideoClassifier, clips_a, clips_b, *, batch_size: int = 64,
                              eps: float = DEFAULT_EPS) -> float:
    """The Fréchet distance between two sets of uint8 clips on ``classifier``'s embedding.

    Args:
        classifier: The clip classifier (the shipped one: ``load_video_classifier(asset_path(
            "tiny/video_classifier"))``).
        clips_a: uint8 ``[B, T, H, W, 3]`` or a list of ``[T_i, H, W, 3]`` (>= 2 clips).
        clips_b: The same for the second set (any count >= 2, any frame counts).
        batch_size: Clips per forward pass.
        eps: Diagonal offset of the covariances (module docstring).

    Returns:
        The squared Fréchet distance, >= 0; 0 for a set and itself (up to rounding).

    Raises:
        ShapeError: Bad clips or a set of fewer than 2 clips.
    """
    features_a = embed_clips(classifier, clips_a, batch_size=batch_size)
    features_b = embed_clips(classifier, clips_b, batch_size=batch_size)
    return frechet_distance_of_stats(feature_stats(features_a, name="clips_a"),
                                     feature_stats(features_b, name="clips_b"), eps=eps)
