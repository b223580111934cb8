"""The numpy backend: forward, backward and optimizer update of a small CPU network in numpy.

For a small network, one torch optimizer step (zero_grad, forward, loss, backward, Adam) costs
about 0.4 ms on one CPU thread, almost all of it framework overhead. For a chain of `nn.Linear`
layers and the activations of `streamnn.backends.ops` (an `MLP`, a dense `AutoEncoder`, an
`nn.Sequential`), a loss of `streamnn.backends.losses` and SGD/Adam/AdamW on the CPU, this backend
runs the whole step in numpy, in place on the torch tensors (`streamnn.backends.optim`). The same
op list runs `forward` (prediction) and `step` (training).

>>> import numpy as np, torch
>>> from streamnn.modules import MLP
>>> net = MLP(3, 2, hidden=(4,), seed=0)
>>> opt = torch.optim.Adam(net.parameters(), lr=0.01)
>>> backend, why = NumpyBackend.build(net, opt, "ce")
>>> backend.describe()
'numpy: MLP of Linear(3->4)+ReLU, Linear(4->2); cross-entropy; Adam'
>>> X = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
>>> per = backend.step(X, np.array([0, 1] * 4), None)
>>> per.shape, bool(np.isfinite(per).all()), backend.forward(X).shape
((8,), True, (8, 2))
"""

from __future__ import annotations

import math

import numpy as np

from ..modules import lr_scales_of
from .graph import train_layers
from .losses import loss_op
from .ops import MemberMean
from .optim import FlatState, check_optimizer

__all__ = ["NumpyBackend"]


class NumpyBackend:
    """`forward(Z)` in eval mode and `step(X, T, W) -> per-sample loss` with one update."""

    name = "numpy"

    @classmethod
    def check(cls, module, optimizer, loss):
        """(layers, members, params, loss op, None), or (.., the reason the numpy backend cannot
        run this network, loss and optimizer); builds nothing."""
        layers, members, params, why = train_layers(module)
        if why:
            return None, 1, None, None, why
        lo = loss_op(loss, members)
        if lo is None:
            return None, 1, None, None, f"loss {loss!r}"
        why = check_optimizer(optimizer)
        if why:
            return None, 1, None, None, why
        opt_params = optimizer.param_groups[0]["params"]
        if {id(p) for p in opt_params} != {id(p) for p in params} or len(params) != len(opt_params):
            return None, 1, None, None, "the optimizer holds other parameters than the layers"
        return layers, members, params, lo, None

    @classmethod
    def build(cls, module, optimizer, loss, grad_clip=None):
        """(backend, None), or (None, the reason the numpy backend cannot run this)."""
        layers, members, params, lo, why = cls.check(module, optimizer, loss)
        if why:
            return None, why
        return cls(module, layers, members, params, optimizer, lo, grad_clip), None

    def __init__(self, module, layers, members, params, optimizer, loss, grad_clip=None):
        self.loss, self.grad_clip, self.members = loss, grad_clip, members
        self.state = FlatState(params, optimizer)
        self.state.set_scales(lr_scales_of(module), params)
        pv, gv = self.state.param_views, self.state.grad_views
        for i, (lin, _) in enumerate(layers):         # the ops now read the flat buffer
            lin.rebind(pv[2 * i], pv[2 * i + 1], gv[2 * i], gv[2 * i + 1])
        self.layers = layers
        self._calls = [f for lin, act in layers                # the ops' forwards, bound once
                       for f in (lin.forward, act.forward if act is not None and act.name != "identity" else None) if f]
        if members > 1:
            self._calls.append(MemberMean(members).forward)
        self.finite = True
        self.module_name = type(module).__name__
        self.optimizer_name = type(optimizer).__name__

    @property
    def flat(self) -> np.ndarray:
        return self.state.flat

    def describe(self) -> str:
        chain = ", ".join(lin.name + (f"+{act.name}" if act is not None and act.name != "identity" else "")
                          for lin, act in self.layers)
        return f"numpy: {self.module_name} of {chain}; {self.loss.name}; {self.optimizer_name}"

    def forward(self, Z: np.ndarray) -> np.ndarray:
        """Scaled rows (B, F) or (F,) -> outputs in eval mode (the members' mean for an ensemble)."""
        h = Z
        for f in self._calls:
            h = f(h)
        return h

    def step(self, X: np.ndarray, T, W: np.ndarray | None, update: bool = True) -> np.ndarray:
        """Loss per sample before the update (B,), then (if `update` and finite) one update;
        `finite` tells afterwards whether every loss was finite.

        X: (B, F) float32 scaled inputs; T: (B,) class indices, (B,) or (B, K) scaled targets, or
        None for a loss whose target is the input (the autoencoder); W: (B,) weights or None.
        """
        hs, zs, h = [X], [], X
        for lin, act in self.layers:                  # forward, keeping what backward reads
            z = lin.forward(h)                        # (B, out)
            zs.append(z)
            h = act.forward(z) if act is not None else z
            hs.append(h)
        per, g = self.loss(h, X if self.loss.target_is_input else T)
        self.finite = math.isfinite(np.add.reduce(per)) or bool(np.isfinite(per).all())
        if not update or not self.finite:
            return per
        g = self.loss.weigh(g, W)
        for i in range(len(self.layers) - 1, -1, -1):  # backward, into the flat gradient
            lin, act = self.layers[i]
            if act is not None:
                g = act.backward(g, zs[i], hs[i + 1])
            g = lin.backward(g, hs[i], i > 0)
        if self.grad_clip:
            self.state.clip(self.grad_clip)
        self.state.update()
        return per
