"""The torch backend: any module, optimizer, loss and device, through torch's own step.

`forward` runs the module in eval mode under `torch.inference_mode()`; `step` takes the per-sample
losses from the learner's `per_sample(Z, T)` (training mode, the learner's RNG stream), reduces
them with the sample weights and takes one optimizer step unless the loss is not finite.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..modules import lr_scales_of

__all__ = ["TorchBackend"]


class TorchBackend:
    name = "torch"

    def __init__(self, module, optimizer, device, grad_clip=None, reason: str = ""):
        self.module, self.optimizer, self.device = module, optimizer, device
        self.grad_clip, self.reason = grad_clip, reason
        scales = lr_scales_of(module)               # an update scale per element (members' lr), or None
        self.scales = None if scales is None else [
            (p, torch.as_tensor(scales[id(p)], device=device)) for p in module.parameters() if id(p) in scales]

    def describe(self) -> str:
        return f"torch: {self.reason}" if self.reason else "torch"

    def forward(self, Z: np.ndarray) -> np.ndarray:
        """Scaled rows -> outputs as numpy, in eval mode, with no side effects."""
        module = self.module
        was_training = module.training
        module.eval()
        with torch.inference_mode():
            out = module(torch.as_tensor(Z, device=self.device))
        module.train(was_training)
        return out.cpu().numpy()

    def step(self, Z: np.ndarray, T: np.ndarray, W: np.ndarray, p: int, per_sample):
        """One step on scaled rows Z (B, F) and targets T; returns (prequential loss of the last
        `p` rows, whether a step was taken)."""
        dev = self.device
        Zt = torch.as_tensor(Z, device=dev)                          # (B, F)
        Tt = torch.as_tensor(T, device=dev)                          # (B,) or (B, K)
        per = per_sample(Zt, Tt)                                     # (B,)
        if W.min() == 1.0 and W.max() == 1.0:
            loss = per.mean()
        else:
            Wt = torch.as_tensor(W, dtype=torch.float32, device=dev)
            loss = (per * Wt).sum() / Wt.sum().clamp_min(1e-12)
        return self.apply(loss, per[-p:].detach().mean())

    def apply(self, loss, preq_t):
        """Backward and optimizer step on `loss` unless it is not finite; returns (the prequential
        loss `preq_t` as a float, whether a step was taken), with one device sync."""
        total, preq = torch.stack([loss.detach(), preq_t]).tolist()
        if not math.isfinite(total):
            return preq, False
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip:
            nn.utils.clip_grad_norm_(self.module.parameters(), self.grad_clip)
        if self.scales is None:
            self.optimizer.step()
            return preq, True
        with torch.no_grad():
            before = [p.detach().clone() for p, _ in self.scales]
            self.optimizer.step()
            for (p, s), b in zip(self.scales, before):
                p.sub_(b).mul_(s).add_(b)           # the change scaled, from where it was
        return preq, True
