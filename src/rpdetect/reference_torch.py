"""The paper's equations in torch, differentiable: what the benchmark's torch baseline and
attacks that know the detector (they need gradients through the scores) compute. The statement
of the method is ``rpdetect.reference`` (numpy, float64); tests hold this module to it.

Shapes follow the graph: z_clean [B, K], z_noisy [B, n, K] -> per-copy scores [B, n].

    score1_i  = std_k(Z(x) - Z(x~_i))               population std     (Eq. 5)
    score2_i  = || softmax Z(x) - softmax Z(x~_i) ||_1                (Eq. 6)
    flipped_i = argmax Z(x~_i) != argmax Z(x)      (not differentiable; see ``soft_flips``)

Needs torch (the ``export`` extra); nothing else in rpdetect imports this module at start-up.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["TorchScores", "noisy_copies", "score1", "score2", "scores", "soft_flips"]


def noisy_copies(x: torch.Tensor, noise: torch.Tensor, kappas: torch.Tensor, *,
                 clip: bool = False) -> torch.Tensor:
    """x~_i = x + noise_i * kappa_i for x [B, C, H, W], noise [B, n, C, H, W] and kappas [n]
    -> [B, n, C, H, W]."""
    out = x[:, None] + noise * kappas.to(noise.dtype).view(1, -1, 1, 1, 1)
    return out.clamp(0.0, 1.0) if clip else out


def score1(z_clean: torch.Tensor, z_noisy: torch.Tensor) -> torch.Tensor:
    """Eq. 5: population std over classes of Z(x) - Z(x~_i); [B, K], [B, n, K] -> [B, n]."""
    return (z_clean[:, None, :] - z_noisy).std(dim=-1, correction=0)


def score2(z_clean: torch.Tensor, z_noisy: torch.Tensor) -> torch.Tensor:
    """Eq. 6: L1 norm of softmax Z(x) - softmax Z(x~_i); [B, K], [B, n, K] -> [B, n]."""
    return (torch.softmax(z_clean, dim=-1)[:, None, :] - torch.softmax(z_noisy, dim=-1)
            ).abs().sum(dim=-1)


def soft_flips(z_clean: torch.Tensor, z_noisy: torch.Tensor, *, temperature: float = 1.0
               ) -> torch.Tensor:
    """A differentiable stand-in for the flip count: sum over copies of 1 - p_i(y), the
    probability copy i gives the clean label y = argmax Z(x) (at ``temperature``); [B]."""
    label = z_clean.argmax(dim=-1)
    p = torch.softmax(z_noisy / temperature, dim=-1)
    return (1.0 - p.gather(-1, label.view(-1, 1, 1).expand(-1, p.shape[1], 1))[..., 0]).sum(-1)


class TorchScores(NamedTuple):
    label: torch.Tensor  # [B]
    score1: torch.Tensor  # [B, n]
    score2: torch.Tensor  # [B, n]
    flipped: torch.Tensor  # [B, n] bool
    flips: torch.Tensor  # [B] int64

    @property
    def score1_max(self) -> torch.Tensor:
        return self.score1.amax(dim=1)

    @property
    def score2_max(self) -> torch.Tensor:
        return self.score2.amax(dim=1)


def scores(z_clean: torch.Tensor, z_noisy: torch.Tensor) -> TorchScores:
    """Every statistic the detector computes, from logits z_clean [B, K], z_noisy [B, n, K]."""
    label = z_clean.argmax(dim=-1)
    flipped = z_noisy.argmax(dim=-1) != label[:, None]
    return TorchScores(label, score1(z_clean, z_noisy), score2(z_clean, z_noisy), flipped,
                       flipped.sum(dim=1))
