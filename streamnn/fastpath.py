"""A numpy training step for plain MLPs on the CPU: the same math as torch, a fraction of the cost.

For a small network, one torch optimizer step (zero_grad, forward, loss, backward, Adam) costs
about 0.4 ms on one CPU thread, almost all of it framework overhead. For the common case (an
`MLP` of `nn.Linear` layers with relu/tanh/sigmoid/leaky-relu activations, cross-entropy or squared
loss, SGD/Adam/AdamW, on the CPU) this module computes the forward pass, the backward pass and the
optimizer update in numpy, *in place on the torch tensors* (parameters and the torch optimizer's own
state tensors are shared as numpy views). The torch module and optimizer therefore stay the single
source of truth: `state_dict()`, checkpoints, growth and a later switch to the torch path all see
the same numbers. Anything else (dropout, normalization layers, other losses, optimizers or
devices, gradient clipping) uses the generic torch step.

>>> import numpy as np, torch
>>> from streamnn.modules import MLP
>>> net = MLP(3, 2, hidden=(4,), seed=0)
>>> opt = torch.optim.Adam(net.parameters(), lr=0.01)
>>> kernel = MLPKernel.build(net, opt, "ce")
>>> X = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
>>> y = np.array([0, 1] * 4)
>>> per = kernel.step(X, y, None)
>>> per.shape, bool(np.isfinite(per).all())
((8,), True)
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from .modules import MLP, BlockLinear, MemberMean

__all__ = ["MLPKernel"]

_ACTS = (nn.ReLU, nn.Tanh, nn.Sigmoid, nn.Identity, nn.LeakyReLU)


def _act_forward(kind, z):
    """`kind`: an activation class, or a float: a leaky relu with that negative slope (read from
    the module, so that `nn.LeakyReLU(0.2)` trains with 0.2 as torch does)."""
    if kind is nn.ReLU:
        return np.maximum(z, 0.0)
    if kind is nn.Tanh:
        return np.tanh(z)
    if kind is nn.Sigmoid:
        return 1.0 / (1.0 + np.exp(-z))
    if isinstance(kind, float):
        return np.where(z > 0, z, z * np.asarray(kind, dtype=z.dtype))
    return z


def _act_backward(kind, g, z, h):
    """The gradient through the activation; computed in place in `g` (which the caller owns)
    when that gives the same array as the plain expression."""
    if g.dtype != z.dtype:
        return _act_backward_copy(kind, g, z, h)
    if kind is nn.ReLU:
        np.multiply(g, z > 0, out=g)
    elif kind is nn.Tanh:
        g *= 1.0 - h * h
    elif kind is nn.Sigmoid:
        g *= h
        g *= 1.0 - h
    elif isinstance(kind, float):
        g *= np.where(z > 0, 1.0, kind).astype(g.dtype)
    return g


def _act_backward_copy(kind, g, z, h):
    if kind is nn.ReLU:
        return g * (z > 0)
    if kind is nn.Tanh:
        return g * (1.0 - h * h)
    if kind is nn.Sigmoid:
        return g * h * (1.0 - h)
    if isinstance(kind, float):
        return g * np.where(z > 0, 1.0, kind).astype(g.dtype)
    return g


def _mm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """`a @ b`; an outer product (inner size 1) as a multiply, which gives the same array as
    numpy's matmul loop for that case (a zero accumulator plus one product) in a third of the time."""
    if a.shape[1] == 1 and a.shape[0] > 1 and b.shape[1] > 1 and a.dtype == b.dtype:
        out = np.multiply(a, b)
        out += 0.0
        return out
    return a @ b


class MLPKernel:
    """Forward, backward and optimizer update of an `MLP` in numpy, on shared memory."""

    @classmethod
    def build(cls, module, optimizer, loss):
        """A kernel for `module`, or None if the network, loss or optimizer is not supported."""
        if loss not in ("ce", "mse") or not isinstance(module, MLP):
            return None
        kind = type(optimizer)
        if kind not in (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD) or len(optimizer.param_groups) != 1:
            return None
        g = optimizer.param_groups[0]
        if g.get("amsgrad") or g.get("maximize") or g.get("nesterov") or g.get("dampening", 0):
            return None
        if kind is torch.optim.Adam and g.get("decoupled_weight_decay"):
            return None
        layers, pending, members = [], None, 1
        for m in module.net:
            if members > 1:
                return None
            if isinstance(m, MemberMean):
                if pending is None:
                    return None
                members = m.members
            elif isinstance(m, nn.Linear):
                if pending is not None:
                    return None
                if m.weight.device.type != "cpu" or m.weight.dtype != torch.float32 or m.bias is None:
                    return None
                pending = m
            elif type(m) in _ACTS:
                if pending is None:
                    return None
                act = float(m.negative_slope) if type(m) is nn.LeakyReLU else type(m)
                layers.append((pending, act))
                pending = None
            else:
                return None
        if pending is None:
            return None
        layers.append((pending, None))
        params = [p for lin, _ in layers for p in (lin.weight, lin.bias)]
        if {id(p) for p in g["params"]} != {id(p) for p in params} or len(params) != len(g["params"]):
            return None
        kernel = cls(layers, params, optimizer, kind, loss)
        kernel.members = members
        kernel.masks = [lin.mask().numpy() if isinstance(lin, BlockLinear) else None for lin, _ in layers]
        return kernel

    members = 1        # networks trained as one (an `MLP(members=K)`): outputs (B, O * K), output-major
    masks = None       # per layer: the 0/1 block mask of its weight, or None

    def __init__(self, layers, params, optimizer, kind, loss):
        """Flatten the parameters (and the optimizer's state) into one buffer each, so that an
        optimizer update is a handful of vector operations; torch tensors become views of them."""
        self.optimizer, self.kind, self.loss = optimizer, kind, loss
        sizes = [p.numel() for p in params]
        bounds = np.cumsum([0] + sizes)
        self.flat = np.concatenate([p.detach().numpy().ravel() for p in params]).astype(np.float32)
        with torch.no_grad():
            for p, a, b in zip(params, bounds[:-1], bounds[1:]):
                p.data = torch.from_numpy(self.flat[a:b]).view(p.shape)
        views = [self.flat[a:b].reshape(p.shape) for p, a, b in zip(params, bounds[:-1], bounds[1:])]
        self.layers = [(views[2 * i], views[2 * i + 1], act) for i, (_, act) in enumerate(layers)]
        self._forward_layers = [(Wt.T, b, act) for Wt, b, act in self.layers]
        self._grad = np.zeros_like(self.flat)               # the flat gradient, written in place
        self._grad_views = [self._grad[a:b].reshape(p.shape) for p, a, b in
                            zip(params, bounds[:-1], bounds[1:])]
        self._work = np.empty((2, len(self.flat)), dtype=np.float32)
        self.finite = True
        self.steps = []
        if kind is torch.optim.SGD:
            self.m = self._flat_state(params, bounds, "momentum_buffer") if g0(optimizer)["momentum"] else None
            return
        self.m = self._flat_state(params, bounds, "exp_avg")
        self.v = self._flat_state(params, bounds, "exp_avg_sq")
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

    def _flat_state(self, params, bounds, name):
        """One flat numpy buffer for a state tensor of every parameter; torch keeps views of it."""
        flat = np.zeros(int(bounds[-1]), dtype=np.float32)
        for p, a, b in zip(params, bounds[:-1], bounds[1:]):
            st = self.optimizer.state[p]
            old = st.get(name)
            if old is not None:
                flat[a:b] = old.detach().numpy().ravel()
            st[name] = torch.from_numpy(flat[a:b]).view(p.shape)
        return flat

    # -- one step -------------------------------------------------------------------------------

    def step(self, X: np.ndarray, T: np.ndarray, W: np.ndarray | None, update: bool = True) -> np.ndarray:
        """Loss per sample before the update (B,), then (if `update` and finite) one update;
        `finite` tells afterwards whether every loss was finite.

        X: (B, F) float32 scaled inputs; T: (B,) class indices ("ce") or scaled targets ("mse");
        W: (B,) sample weights or None.
        """
        hs, zs = [X], []
        h = X
        for WtT, b, act in self._forward_layers:            # forward
            z = _mm(h, WtT)                                 # (B, out)
            z += b
            zs.append(z)
            h = _act_forward(act, z) if act is not None else z
            hs.append(h)
        per, g = self._loss_grad(h, T) if self.members == 1 else self._members_loss_grad(h, T)
        self.finite = math.isfinite(np.add.reduce(per)) or bool(np.isfinite(per).all())
        if not update or not self.finite:
            return per
        wts = (W / W.sum())[:, None] if W is not None else np.float64(1.0 / len(X))
        if g.dtype == np.float32 and g.ndim == 2:           # (g * wts).astype(float32), in place
            np.multiply(g, wts, out=g, dtype=np.float64, casting="same_kind")
        else:
            g = (g * wts).astype(np.float32)
        grads, views = [], self._grad_views if g.dtype == X.dtype == np.float32 else None
        for i in range(len(self.layers) - 1, -1, -1):       # backward
            Wt, b, act = self.layers[i]
            if act is not None:
                g = _act_backward(act, g, zs[i], hs[i + 1])
            mask = self.masks[i] if self.masks else None
            if views is not None:                           # dW (out, in), db (out,) in place
                np.matmul(g.T, hs[i], out=views[2 * i])
                if mask is not None:
                    views[2 * i] *= mask
                np.add.reduce(g, 0, out=views[2 * i + 1])
            else:
                grads.append((g.T @ hs[i] if mask is None else (g.T @ hs[i]) * mask, g.sum(axis=0)))
            if i > 0:
                g = _mm(g, Wt)
        if views is not None:
            self._update(self._grad)
            return per
        grads.reverse()
        self._update([gr for pair in grads for gr in pair])
        return per

    def _loss_grad(self, out: np.ndarray, T: np.ndarray):
        """Per-sample loss (B,) and its gradient with respect to `out` (B, O); subclasses may
        swap in another loss (the multi-head learners do)."""
        B = len(out)
        if self.loss == "ce":
            two = out.shape[1] == 2                         # the same values, without a reduction
            m = np.maximum(out[:, :1], out[:, 1:]) if two else out.max(axis=1, keepdims=True)
            e = np.exp(out - m)
            s = e[:, :1] + e[:, 1:] if two else e.sum(axis=1, keepdims=True)
            idx = T.astype(np.int64, copy=False)
            rows = np.arange(B)
            per = (np.log(s[:, 0]) + m[:, 0] - out[rows, idx]).astype(np.float64)
            g = e / s
            g[rows, idx] -= 1.0                             # d(loss_i)/d(logits_i)
            return per, g
        diff = out[:, 0] - T
        if out.shape[1] == 1 and diff.dtype == out.dtype:
            g = (2.0 * diff).reshape(B, 1)
        else:
            g = np.zeros_like(out)
            g[:, 0] = 2.0 * diff
        return np.square(diff, dtype=np.float64), g

    def _members_loss_grad(self, out: np.ndarray, T: np.ndarray):
        """The loss of `members` networks, each on its own outputs: `out` (B, O * K) output-major;
        per-sample loss = the members' mean, and its gradient (B, O * K)."""
        B, K = len(out), self.members
        z = out.reshape(B, -1, K)                            # (B, O, K)
        if self.loss == "ce":
            m = z.max(axis=1, keepdims=True)
            e = np.exp(z - m)
            s = e.sum(axis=1, keepdims=True)
            idx = T.astype(np.int64, copy=False)
            rows = np.arange(B)
            per = (np.log(s[:, 0]) + m[:, 0] - z[rows, idx]).astype(np.float64).mean(axis=1)
            g = e / s
            g[rows, idx] -= 1.0
        else:
            diff = z[:, 0] - T[:, None].astype(z.dtype)      # (B, K)
            per = np.square(diff, dtype=np.float64).mean(axis=1)
            g = np.zeros_like(z)
            g[:, 0] = 2.0 * diff
        g /= np.float32(K)
        return per, g.reshape(B, -1)

    def _update(self, grads):
        """One optimizer update from the gradients (a list in parameter order, or one flat array)."""
        g = grads if isinstance(grads, np.ndarray) else np.concatenate([gr.ravel() for gr in grads])
        group = g0(self.optimizer)
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
        adam_update(p, g, self.m, self.v, self.steps, group, self.kind is torch.optim.AdamW, self._work)


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


def g0(optimizer):
    return optimizer.param_groups[0]
