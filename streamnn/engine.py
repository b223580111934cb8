"""Which backend trains a learner's network and predicts with it, and why (`backend_`).

Mixed into `TorchLearner`. The numpy backend (`streamnn.backends`) is chosen lazily, at the first
optimizer step (`_kernel`: the backend, or False when torch trains the network); prediction runs
the numpy backend's own op list once it exists, before that the same ops built for prediction
only, and torch where the network has no numpy form. `TorchLearner._invalidate` drops them all.
"""

from __future__ import annotations

import numpy as np

from . import backends

__all__ = ["BackendChoice"]


class BackendChoice:
    """`_forward`, `backend_` and the choice of backend; needs `module_`, `optimizer_`,
    `_device`, `grad_clip`, `_stochastic` and the slots `_plan`, `_kernel`, `_torch`, `_why`."""

    def _forward(self, Z: np.ndarray) -> np.ndarray:
        """Scaled rows (B, F) or (F,) -> network outputs as numpy, in eval mode, no side effects:
        the numpy backend's ops once it trains the network, else the same ops built for
        prediction only, else torch."""
        if self._kernel:
            return self._kernel.forward(Z)
        if self._plan is None and self._device.type == "cpu":
            self._plan = backends.eval_ops(self.module_)[0] or False
        if self._plan:
            return backends.run(self._plan, Z)
        return self._torch_backend().forward(Z)

    # -- backends ----------------------------------------------------------------------------

    @property
    def backend_(self) -> str:
        """The backend that trains the network and why, e.g. "numpy: MLP of Linear(9->32)+ReLU,
        Linear(32->2); cross-entropy; Adam" or "torch: module has GELU"."""
        if self.module_ is None:
            return "none: not built yet (the network is built from the first sample)"
        b = self._active_backend()
        return b.describe() if b is not None else "none: chosen at the first optimizer step"

    def _active_backend(self):
        """The backend in use (chosen now if it was not yet), or None before the first step."""
        if hasattr(self, "_ae_kernel"):   # AutoencoderDetector keeps its numpy backend in its own slot
            own = self._ae_kernel
            if own is not False:
                return own
            torch_backend = self._torch_backend()
            torch_backend.reason = backends.explain(self.module_, self.optimizer_, "recon", self._device,
                                                    self._stochastic) or "the detector's own choice"
            return torch_backend
        if self._kernel is None:
            self._kernel = self._make_kernel() or False
        return self._kernel or self._torch_backend()

    def _select_backend(self):
        """Hook: the backend for this learner (`streamnn.backends.select`)."""
        return backends.select(self.module_, self.optimizer_, self._fast_loss(), self._device,
                               self.grad_clip, self._stochastic)

    def _make_kernel(self):
        """The numpy backend, or None (the reason kept for `backend_`)."""
        backend = self._select_backend()
        if backend.name != "numpy":
            self._why = backend.reason
            return None
        self._plan = None   # the backend moved the parameters into one flat buffer
        return backend

    def _torch_backend(self):
        if self._torch is None:
            if self._kernel is None:   # not chosen yet (a prediction before the first step)
                self._kernel = self._make_kernel() or False
            why = self._why or ("numpy backend switched off" if self._kernel is False else "")
            self._torch = backends.TorchBackend(self.module_, self.optimizer_, self._device, self.grad_clip, why)
        return self._torch
