"""Backends: one interface (`forward(Z)`, `step(...)`, state shared with the torch objects) with a
numpy backend for small CPU networks and a torch backend for everything else.

`select(module, optimizer, loss, ...)` picks one and says why (`backend.describe()`, shown by a
learner as `learner.backend_`, e.g. "numpy: MLP of Linear(9->32)+ReLU, Linear(32->2); ..." or
"torch: module has GELU"). A network, loss or optimizer the numpy backend does not reproduce
exactly goes to torch; it is never run with approximate math.
"""

from __future__ import annotations

from .graph import eval_ops, run
from .numpy_backend import NumpyBackend
from .ops import ACTIVATIONS, activation
from .optim import adam_update
from .torch_backend import TorchBackend

__all__ = ["select", "explain", "NumpyBackend", "TorchBackend", "ACTIVATIONS", "activation", "eval_ops", "run",
           "adam_update"]


def explain(module, optimizer, loss, device, stochastic=False, refuse: str | None = None) -> str | None:
    """None when the numpy backend reproduces this learner's step, else the reason; builds nothing.

    `loss`: a numpy loss name or op (None: the learner's loss has no numpy form); `stochastic`:
    the network draws random numbers in training (dropout, noise); `refuse`: a reason of the
    learner's own to use torch.
    """
    if refuse is not None:
        return refuse
    if device.type != "cpu":
        return f"device {device.type}"
    if stochastic:
        return "the network draws random numbers in training"
    if loss is None:
        return "the loss has no numpy form"
    return NumpyBackend.check(module, optimizer, loss)[-1]


def select(module, optimizer, loss, device, grad_clip=None, stochastic=False, refuse: str | None = None):
    """The backend for one learner: numpy where it reproduces torch's step, else torch (with the
    reason, see `explain`)."""
    why = explain(module, optimizer, loss, device, stochastic, refuse)
    if why is None:
        backend, why = NumpyBackend.build(module, optimizer, loss, grad_clip)
        if backend is not None:
            return backend
    return TorchBackend(module, optimizer, device, grad_clip, why)
