"""Old home of the numpy training step; it now lives in `streamnn.backends` (one implementation).

`MLPKernel.build(module, optimizer, loss)` gives the numpy backend of an `MLP` (or None), as before.

>>> import numpy as np, torch
>>> from streamnn.modules import MLP
>>> net = MLP(3, 2, hidden=(4,), seed=0)
>>> kernel = MLPKernel.build(net, torch.optim.Adam(net.parameters(), lr=0.01), "ce")
>>> X = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
>>> kernel.step(X, np.array([0, 1] * 4), None).shape
(8,)
"""

from __future__ import annotations

from .backends.numpy_backend import NumpyBackend
from .backends.ops import mm as _mm  # noqa: F401
from .backends.optim import adam_update  # noqa: F401
from .modules import MLP

__all__ = ["MLPKernel"]


class MLPKernel(NumpyBackend):
    @classmethod
    def build(cls, module, optimizer, loss, grad_clip=None):
        """The numpy backend of an `MLP`, or None where it does not apply."""
        if not isinstance(module, MLP):
            return None
        return NumpyBackend.build(module, optimizer, loss, grad_clip)[0]
