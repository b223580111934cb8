"""One flat parameter buffer, its gradient and the optimizer's state, shared with torch.

The parameters of the network move into one float32 buffer and the torch tensors become views of
it; the torch optimizer's own state tensors (Adam's moments, SGD's momentum, the step counters) do
the same. The torch module and optimizer therefore stay the single source of truth:
`state_dict()`, checkpoints, growth and a later switch to the torch backend all see the same
numbers, and an update here is a handful of vector operations with torch's math.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["FlatState", "check_optimizer", "adam_update"]

OPTIMIZERS = (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD)


def check_optimizer(optimizer) -> str | None:
    """None when the numpy update reproduces `optimizer`, else the reason it does not."""
    kind = type(optimizer)
    if kind not in OPTIMIZERS:
        return f"optimizer {kind.__name__}"
    if len(optimizer.param_groups) != 1:
        return "several parameter groups"
    g = optimizer.param_groups[0]
    for flag in ("amsgrad", "maximize", "nesterov", "dampening"):
        if g.get(flag):
            return f"optimizer option {flag}"
    return None


class FlatState:
    """Parameters `params` (in layer order) as views of `flat`; `grad` the flat gradient, with
    `views(grad)` per parameter; `update()` applies one step of `optimizer` to `flat`."""

    def __init__(self, params, optimizer):
        self.optimizer, self.kind = optimizer, type(optimizer)
        self.bounds = bounds = np.cumsum([0] + [p.numel() for p in params])
        self.flat = np.concatenate([p.detach().numpy().ravel() for p in params]).astype(np.float32)
        with torch.no_grad():
            for p, a, b in zip(params, bounds[:-1], bounds[1:]):
                p.data = torch.from_numpy(self.flat[a:b]).view(p.shape)
        self.param_views = self.views(self.flat, params)
        self.grad = np.zeros_like(self.flat)                 # the flat gradient, written in place
        self.grad_views = self.views(self.grad, params)
        self.work = np.empty((2, len(self.flat)), dtype=np.float32)
        self.scale = None                                    # (P,) update scale per element, or None
        self.steps, self.m, self.v = [], None, None
        group = optimizer.param_groups[0]
        if self.kind is torch.optim.SGD:
            if group["momentum"]:
                self.m = self._flat_state(params, "momentum_buffer")
            return
        self.m = self._flat_state(params, "exp_avg")
        self.v = self._flat_state(params, "exp_avg_sq")
        for p in params:
            st = optimizer.state[p]
            if "step" not in st:
                st["step"] = torch.zeros((), dtype=torch.float32)
            self.steps.append(st["step"].numpy())
        if len({a.dtype for a in self.steps}) == 1 and all(a.ndim == 0 for a in self.steps):
            flat = np.array(self.steps)                     # the step counters, views of one buffer
            for i, p in enumerate(params):
                optimizer.state[p]["step"] = torch.from_numpy(flat[i: i + 1]).view(())
            self.steps = [flat]

    def views(self, flat, params):
        b = self.bounds
        return [flat[b[i]:b[i + 1]].reshape(p.shape) for i, p in enumerate(params)]

    def _flat_state(self, params, name):
        """One flat numpy buffer for a state tensor of every parameter; torch keeps views of it."""
        b = self.bounds
        flat = np.zeros(int(b[-1]), dtype=np.float32)
        for i, p in enumerate(params):
            st = self.optimizer.state[p]
            old = st.get(name)
            if old is not None:
                flat[b[i]:b[i + 1]] = old.detach().numpy().ravel()
            st[name] = torch.from_numpy(flat[b[i]:b[i + 1]]).view(p.shape)
        return flat

    def clip(self, max_norm: float):
        """Scale the gradient to a global L2 norm of at most `max_norm` (torch's clip_grad_norm_)."""
        g64 = self.grad.astype(np.float64)
        norm = math.sqrt(float(g64 @ g64))
        if norm > max_norm:
            self.grad *= np.float32(max_norm / (norm + 1e-6))

    def set_scales(self, scales: dict | None, params):
        """Scale each element's update (`MLP.lr_scales`: {id(param): array}); None: no scaling."""
        self.scale = None if scales is None else np.concatenate(
            [scales.get(id(p), np.ones(p.shape, np.float32)).ravel() for p in params]).astype(np.float32)

    def update(self, g=None):
        """One optimizer update from the flat gradient `g` (default: `self.grad`), each element's
        change scaled by `scale` where it is set (a learning rate per element, for any optimizer)."""
        if self.scale is None:
            return self._update(g)
        before = self.flat.copy()
        self._update(g)
        self.flat -= before                                  # the change ...
        self.flat *= self.scale                              # ... scaled ...
        self.flat += before                                  # ... from where it was

    def _update(self, g=None):
        g = self.grad if g is None else g
        group = self.optimizer.param_groups[0]
        lr, wd = group["lr"], group.get("weight_decay", 0.0)
        p = self.flat
        if self.kind is torch.optim.SGD:
            if wd:
                g = g + wd * p
            if self.m is not None:
                self.m *= group["momentum"]
                self.m += g
                g = self.m
            p -= lr * g
            return
        decoupled = self.kind is torch.optim.AdamW or bool(group.get("decoupled_weight_decay"))
        adam_update(p, g, self.m, self.v, self.steps, group, decoupled, self.work)


def adam_update(p, g, m, v, steps, group, decoupled: bool, work=None) -> None:
    """One Adam (or AdamW, `decoupled`) update of the flat parameters `p`, in place, with torch's
    math: `m`, `v` are the flat moment buffers, `steps` numpy views of the step counters (all set
    to the first one plus 1); `work`, an optional (2, len(p)) float32 scratch buffer, saves the
    temporaries' allocations."""
    lr, wd = group["lr"], group.get("weight_decay", 0.0)
    beta1, beta2 = group["betas"]
    t = float(steps[0].flat[0]) + 1.0
    for sv in steps:
        sv[...] = t
    if wd:
        if decoupled:
            p *= 1.0 - lr * wd
        else:
            g = g + wd * p
    eps = group["eps"]
    if work is None or work.shape[1] != len(p) or not (   # otherwise the scratch's dtype would round
            g.dtype == m.dtype == v.dtype == p.dtype == work.dtype == np.float32
            and type(lr) is type(beta1) is type(beta2) is type(eps) is float):
        m += (1.0 - beta1) * (g - m)
        v *= beta2
        v += (1.0 - beta2) * (g * g)
        denom = np.sqrt(v)
        denom *= 1.0 / np.sqrt(1.0 - beta2**t)
        denom += eps
        p -= (lr / (1.0 - beta1**t)) * (m / denom)
        return
    a, d = work[0], work[1]                                 # the same operations, in scratch space
    np.subtract(g, m, out=a)
    a *= 1.0 - beta1
    m += a
    v *= beta2
    np.multiply(g, g, out=a)
    a *= 1.0 - beta2
    v += a
    np.sqrt(v, out=d)
    d *= np.float64(1.0 / math.sqrt(1.0 - beta2**t))
    d += eps
    np.divide(m, d, out=a)
    a *= lr / (1.0 - beta1**t)
    p -= a
