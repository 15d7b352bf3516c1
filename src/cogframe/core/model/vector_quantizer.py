"""The trainable codebook of cogframe's VQ-VAE: EMA updates with dead-code restart.

:class:`EMACodebook` is the quantiser that *trains*: it updates itself from the data and restarts
dead codes. icetk's released codebook, which only encodes and carries a 1x1 input projection, is
:class:`~cogframe.core.model.icetk_vqvae.IcetkCodebook`.

Codebook updates follow VQ-VAE-2 (arXiv 1906.00446) / icetk's ``VectorQuantizeEMA``: codes are the
nearest codebook rows in L2; the codebook is not trained by gradients but tracks exponential moving
averages of the encoder outputs assigned to each code (decay 0.99), with Laplace-smoothed cluster
sizes so that a code with no assignments does not divide by zero.

Dead codes: a code whose EMA usage (``cluster_size``) falls below ``dead_code_threshold``
(expected assignments per batch) is restarted from a random encoder output of the current batch,
as in Jukebox (Dhariwal et al., 2020). Without this, codes initialised far from the data are never
chosen and a large part of the codebook stays wasted. The buffers start at zero usage, so on the
first training step every code is restarted from the data: a cheap data-dependent initialisation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["EMACodebook"]


class EMACodebook(nn.Module):
    """Nearest-neighbour quantiser over ``[N, D, H, W]`` feature maps whose codebook trains by EMA.

    Not trained by gradients: in training mode every forward moves the codes towards the encoder
    outputs assigned to them and restarts dead codes; the gradient passes straight through.

    Args:
        codebook_size: Number of codes K.
        code_dim: Dimension D of each code.
        decay: EMA decay of the cluster statistics.
        eps: Laplace smoothing constant for the cluster sizes.
        dead_code_threshold: Codes whose EMA usage drops below this are restarted (0 disables).

    Buffers (saved in the state dict): ``embed [K, D]``, ``cluster_size [K]``, ``embed_avg [K, D]``.
    """

    def __init__(self, codebook_size: int, code_dim: int, decay: float = 0.99, eps: float = 1e-5,
                 dead_code_threshold: float = 1.0) -> None:
        super().__init__()
        self.codebook_size = int(codebook_size)
        self.code_dim = int(code_dim)
        self.decay = float(decay)
        self.eps = float(eps)
        self.dead_code_threshold = float(dead_code_threshold)
        embed = torch.randn(self.codebook_size, self.code_dim)
        self.register_buffer("embed", embed)
        self.register_buffer("cluster_size", torch.zeros(self.codebook_size))
        self.register_buffer("embed_avg", embed.clone())
        self.register_buffer("restarts", torch.zeros((), dtype=torch.long))

    def codes(self, z: torch.Tensor) -> torch.Tensor:
        """Nearest code per position: ``[N, D, H, W]`` float -> ``[N, H, W]`` long."""
        flat = z.permute(0, 2, 3, 1).reshape(-1, self.code_dim)
        # ||z||^2 is constant per row, so argmin(||z - e||^2) = argmin(||e||^2 - 2 z.e).
        dist = self.embed.pow(2).sum(1)[None, :] - 2 * flat @ self.embed.t()
        return dist.argmin(1).view(z.shape[0], z.shape[2], z.shape[3])

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """Code vectors: ``[N, H, W]`` long -> ``[N, D, H, W]`` float."""
        return F.embedding(codes, self.embed).permute(0, 3, 1, 2).contiguous()

    def forward(self, z: torch.Tensor, update: bool | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Quantises ``z`` with a straight-through gradient.

        Args:
            z: Encoder output ``[N, D, H, W]``.
            update: Update the EMA codebook; defaults to ``self.training``.

        Returns:
            ``(z_q, codes, stats)``: ``z_q`` equals the code vectors in value while its gradient
            flows to ``z`` unchanged (straight-through); ``codes [N, H, W]``; ``stats`` with
            ``commit`` (MSE between ``z`` and the detached codes) and ``perplexity`` (of the batch's
            code usage; equals K when all codes are used equally).
        """
        codes = self.codes(z.detach())
        if self.training if update is None else update:
            self._update(z.detach(), codes)
        quantized = self.lookup(codes)
        commit = F.mse_loss(z, quantized.detach())
        z_q = z + (quantized - z).detach()
        usage = torch.bincount(codes.flatten(), minlength=self.codebook_size).float()
        probs = usage / usage.sum()
        perplexity = torch.exp(-(probs * torch.log(probs + 1e-10)).sum())
        return z_q, codes, {"commit": commit, "perplexity": perplexity}

    @torch.no_grad()
    def _update(self, z: torch.Tensor, codes: torch.Tensor) -> None:
        flat = z.permute(0, 2, 3, 1).reshape(-1, self.code_dim)
        onehot = F.one_hot(codes.flatten(), self.codebook_size).type(flat.dtype)
        counts = onehot.sum(0)
        sums = onehot.t() @ flat
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embed_avg.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        # Laplace smoothing: (n_k + eps) / (n + K eps) * n keeps the total but never divides by 0.
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (total + self.codebook_size * self.eps) * total
        self.embed.copy_(self.embed_avg / smoothed.clamp_min(self.eps)[:, None])
        if self.dead_code_threshold > 0:
            self._restart_dead(flat)

    @torch.no_grad()
    def _restart_dead(self, flat: torch.Tensor) -> None:
        dead = self.cluster_size < self.dead_code_threshold
        n_dead = int(dead.sum())
        if n_dead == 0:
            return
        picks = torch.randint(0, flat.shape[0], (n_dead,), device=flat.device)
        fresh = flat[picks]
        self.embed[dead] = fresh
        # Give the restarted code the statistics of one threshold's worth of usage at its new
        # place, so the next EMA step keeps it there instead of pulling it back to zero.
        self.cluster_size[dead] = self.dead_code_threshold
        self.embed_avg[dead] = fresh * self.dead_code_threshold
        self.restarts += n_dead
