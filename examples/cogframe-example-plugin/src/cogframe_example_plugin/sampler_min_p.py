"""Token sampler ``min_p``: keep the tokens at least ``p`` times as likely as the most likely one.

Min-p sampling (Nguyen et al., "Turning Up the Heat: Min-p Sampling for Creative and Coherent
LLM Outputs", arXiv 2407.01082) scales its cut with the model's confidence: a peaked row keeps few
tokens, a flat row keeps many. The temperature is applied first, then the cut (as in Hugging
Face transformers' logits processors).

Like every cogframe sampler it takes its randomness from the ``noise`` argument only (one uniform
per row, keyed by seed, stream and slot), so parallel-wave decoding gives the same tokens as
sequential decoding.
"""

from __future__ import annotations

import math

import torch

from cogframe.core.generation.token_sampling import RowNoise, sample_categorical
from cogframe.hookspecs import hookimpl
from cogframe.registry import component

__all__ = ["COMPONENTS", "MinPSampler", "min_p_filter"]


def min_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Sets to ``-inf`` every logit whose probability is below ``p`` times the row's largest.

    ``prob_i >= p * prob_max`` is ``logit_i >= logit_max + log(p)``: no softmax is needed, and the
    most likely token always survives.
    """
    cut = logits.amax(dim=-1, keepdim=True) + math.log(p)
    return logits.masked_fill(logits < cut, float("-inf"))


@component("token_sampler", "min_p", description="Min-p sampling: tokens at least p times as likely as the top one.")
class MinPSampler:
    """Sample among the tokens whose probability is at least ``p`` times the most likely one's.

    Args:
        p: Relative probability cut, in (0, 1]; 1 keeps only the most likely token(s), 0.05 is typical.
        temperature: Softmax temperature, applied before the cut.
    """

    def __init__(self, p: float = 0.1, temperature: float = 1.0) -> None:
        if not 0 < float(p) <= 1:
            raise ValueError(f"p must be in (0, 1], got {p}; 0.05-0.1 is typical")
        if not float(temperature) > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}; use the greedy sampler for argmax")
        self.p, self.temperature = float(p), float(temperature)

    def __call__(self, logits: torch.Tensor, positions: torch.Tensor, noise: RowNoise) -> torch.Tensor:
        return sample_categorical(min_p_filter(logits.double() / self.temperature, self.p), noise.uniform(0))


COMPONENTS = [MinPSampler]


@hookimpl
def register_components():
    return [MinPSampler]
