"""Autoencoder `nn.Module`s for anomaly detection, their input growth and a numpy scoring path.

Every network reads flat rows (B, C * W): C channels (features) times a window of W time steps,
**channel-major** (all W steps of channel 0, then of channel 1, ...), so a new channel appends
columns at the end and old columns never move. W = 1 is a plain (non-windowed) autoencoder.

Encoders: "dense" (an MLP that shrinks to the latent size), "conv" (Conv1d layers over time, then
a Linear to the latent) and "lstm" (an LSTM over the window, its last state to the latent). The
decoder is always an MLP that mirrors the hidden sizes back to C * W outputs. `variational=True`
makes the encoder output a Gaussian (mean, log-variance) and `forward` sample from it in training.

>>> import torch
>>> net = AutoEncoder(n_channels=2, window=8, hidden=(8,), latent=3, encoder="conv", seed=0)
>>> recon, mu, logvar = net(torch.zeros(5, 16))
>>> tuple(recon.shape), tuple(mu.shape), logvar is None
((5, 16), (5, 3), True)
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .backends.numpy_backend import NumpyBackend
from .backends.ops import activation
from .modules import _swap_param, grow_input, make_activation

__all__ = ["AutoEncoder", "AEKernel", "ENCODERS", "numpy_errors_plan", "errors_numpy", "error_row", "frozen_plan"]

ENCODERS = ("dense", "conv", "lstm")


class AutoEncoder(nn.Module):
    """An autoencoder over flat (B, C * W) rows; returns (reconstruction, mu, logvar or None).

    Parameters
    ----------
    n_channels, window
        Channels C and window length W of the input rows.
    hidden
        Widths between input and latent (conv: channels of the Conv1d layers); the decoder mirrors them.
    latent
        Size of the bottleneck.
    activation
        Name of the activation ("tanh", "relu", ...).
    encoder
        "dense", "conv" or "lstm" (the last two need `window > 1` to make sense).
    variational
        Gaussian latent: the encoder outputs (mu, logvar); training samples z = mu + sigma * eps.
    seed
        Fixes the initial weights without touching the global RNG.
    """

    def __init__(self, n_channels: int, window: int = 1, hidden=(16,), latent: int = 4,
                 activation="tanh", encoder: str = "dense", variational: bool = False, seed=None):
        super().__init__()
        if encoder not in ENCODERS:
            raise ValueError(f"encoder={encoder!r}: use one of {ENCODERS}")
        self.n_channels, self.window, self.latent = n_channels, window, latent
        self.kind, self.variational = encoder, variational
        out = 2 * latent if variational else latent
        n_in = n_channels * window
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            if encoder == "dense":
                self.encoder = _mlp([n_in, *hidden, out], activation)
            elif encoder == "conv":
                layers, c, w = [], n_channels, window
                for h in hidden:
                    k = min(3, w)
                    stride = 2 if w >= 4 else 1
                    layers += [nn.Conv1d(c, h, k, stride=stride, padding=k // 2), make_activation(activation)]
                    c, w = h, (w + 2 * (k // 2) - k) // stride + 1
                self.conv = nn.Sequential(*layers)                  # (B, C, W) -> (B, c, w)
                self.encoder = nn.Sequential(nn.Linear(c * w, out))
            else:
                h = hidden[0] if hidden else latent
                self.lstm = nn.LSTM(n_channels, h, batch_first=True)  # (B, W, C) -> (B, W, h)
                self.encoder = _mlp([h, *hidden[1:], out], activation)
            self.decoder = _mlp([latent, *reversed(hidden), n_in], activation)

    def encode(self, x: torch.Tensor):  # (B, C*W) -> mu (B, L), logvar (B, L) or None
        if self.kind == "conv":
            x = self.conv(x.reshape(x.shape[0], self.n_channels, self.window)).flatten(1)
        elif self.kind == "lstm":
            seq = x.reshape(x.shape[0], self.n_channels, self.window).transpose(1, 2)  # (B, W, C)
            x = self.lstm(seq)[0][:, -1]                                              # (B, h)
        h = self.encoder(x)
        if self.variational:
            return h[:, :self.latent], h[:, self.latent:].clamp(-10.0, 10.0)
        return h, None

    def forward(self, x: torch.Tensor):  # (B, C*W) -> (B, C*W), (B, L), (B, L) | None
        mu, logvar = self.encode(x)
        z = mu
        if self.variational and self.training:
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self.decoder(z), mu, logvar

    def grow(self, n_channels: int, optimizer=None):
        """Add input channels (zero weights: the reconstruction of old channels is unchanged)."""
        extra = n_channels - self.n_channels
        if extra <= 0:
            return
        W = self.window
        if self.kind == "dense":
            grow_input(self.encoder[0], n_channels * W, optimizer)
        elif self.kind == "conv":
            _grow_param(self.conv[0], "weight", 1, extra, optimizer)          # (O, C, k)
            self.conv[0].in_channels = n_channels
        else:
            _grow_param(self.lstm, "weight_ih_l0", 1, extra, optimizer)       # (4h, C)
            self.lstm.input_size = n_channels
        last = self.decoder[-1]                                                # new outputs at the end
        _grow_param(last, "weight", 0, extra * W, optimizer)
        _grow_param(last, "bias", 0, extra * W, optimizer)
        last.out_features = n_channels * W
        self.n_channels = n_channels


def _mlp(sizes, activation) -> nn.Sequential:
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(make_activation(activation))
    return nn.Sequential(*layers)


def _grow_param(module: nn.Module, name: str, dim: int, extra: int, optimizer):
    old = getattr(module, name)

    def pad(t):
        shape = list(t.shape)
        shape[dim] = extra
        return torch.cat([t, t.new_zeros(shape)], dim)

    with torch.no_grad():
        new = nn.Parameter(pad(old.detach()))
    setattr(module, name, new)
    _swap_param(optimizer, old, new, pad)
    if isinstance(module, nn.LSTM):
        module._flat_weights = [getattr(module, n) for n in module._flat_weights_names]


# --- numpy scoring: a batch-1 reconstruction error in microseconds ------------------------------

def numpy_errors_plan(module: AutoEncoder):
    """Numpy steps for (encoder, decoder), or None where a layer has no numpy form (LSTM, GPU).

    Each step is (W, b, activation or None). Dense layers share memory with the parameters
    (optimizer steps are seen without copying); each Conv1d is linear, so it is folded into a
    dense matrix, a copy that must be rebuilt after every optimizer step (`module.kind == "conv"`).
    """
    if module.kind == "lstm" or next(module.parameters()).device.type != "cpu":
        return None
    enc = []
    if module.kind == "conv":
        c, w = module.n_channels, module.window
        with torch.no_grad():
            for m in module.conv:
                if isinstance(m, nn.Conv1d):
                    eye = torch.eye(c * w).reshape(c * w, c, w)
                    zero = m(torch.zeros(1, c, w))                      # (1, O, w')
                    A = (m(eye) - zero).flatten(1)                       # (c*w, O*w')
                    enc.append(("linear", A.T.contiguous().numpy(), zero.flatten().numpy().copy()))
                    c, w = zero.shape[1], zero.shape[2]
                else:
                    enc.append(("act", _np_act(m)))
    for m in module.encoder:
        enc.append(("linear", m.weight.detach().numpy(), m.bias.detach().numpy()) if isinstance(m, nn.Linear)
                   else ("act", _np_act(m)))
    dec = [("linear", m.weight.detach().numpy(), m.bias.detach().numpy()) if isinstance(m, nn.Linear)
           else ("act", _np_act(m)) for m in module.decoder]
    if any(step[1] is None for step in enc + dec):
        return None
    return _compact(enc), _compact(dec), module.latent, module.variational


def _compact(steps):
    """[("linear", W, b), ("act", f), ...] -> [(W, b, f or None), ...]."""
    out = []
    for step in steps:
        if step[0] == "linear":
            out.append([step[1], step[2], None])
        else:
            out[-1][2] = step[1]
    return [tuple(s) for s in out]


def _run(steps, h):
    for W, b, f in steps:
        h = h @ W.T
        h += b
        if f is not None:
            h = f(h)
    return h


def _np_act(m):
    """The forward of activation `m` from the one registry (`streamnn.backends.ops`), or None."""
    op = activation(m)
    return op.forward if op is not None else None


def errors_numpy(plan, Z: np.ndarray, kl_weight: float, cols=None):
    """Per-row reconstruction error (B,) of scaled rows Z (B, n_in) (mean squared error over the
    columns `cols`, default all), plus KL/n_in when kl_weight. A single row Z (n_in,) gives a
    float (the per-event path: a dozen small numpy calls)."""
    enc, dec, L, variational = plan
    if Z.ndim == 1 and not variational:
        return error_row(enc + dec if dec else enc, Z, cols)
    h = _run(enc, Z)
    if variational:
        mu, logvar = h[:, :L], np.clip(h[:, L:], -10.0, 10.0)
    else:
        mu, logvar = h, None
    d = _run(dec, mu) - Z
    if cols is not None:
        d = d[:, cols]
    if len(d) == 1:
        err = np.array([d[0] @ d[0]]) / d.shape[1]
    else:
        err = np.add.reduce(d * d, axis=1) / d.shape[1]
    if variational and kl_weight:
        kl = 0.5 * (mu ** 2 + np.exp(logvar) - 1.0 - logvar).sum(axis=1)
        err = err + kl_weight * kl / Z.shape[1]
    return err


def frozen_plan(plan):
    """A float64 copy of a dense, non-variational plan with consecutive linear layers folded into
    one (the latent layer has no activation: encoder-out and decoder-in become one matrix), for
    the per-event path; a copy, so it must be rebuilt after every optimizer step. None where the
    plan does not qualify."""
    enc, dec, L, variational = plan
    if variational:
        return None
    steps = []
    for W, b, f in enc + dec:
        W, b = W.astype(np.float64), b.astype(np.float64)
        if steps and steps[-1][2] is None:            # (W2 (W1 h + b1) + b2) = (W2 W1) h + (W2 b1 + b2)
            W1, b1, _ = steps.pop()
            W, b = W @ W1, W @ b1 + b
        steps.append((W, b, f))
    return steps, [], L, False


def error_row(steps, z: np.ndarray, cols=None) -> float:
    """The reconstruction error of one scaled row `z` (n,) through the (W, b, activation) `steps`
    (encoder then decoder), as a float: matrix-vector products (`W.dot`, the same BLAS call as
    `W @ h` at a third less overhead), the mean squared error over the columns `cols` (default all)."""
    h = z
    for W, b, f in steps:
        h = W.dot(h)
        h += b
        if f is not None:
            h = f(h)
    d = h - z
    if cols is not None:
        d = d[cols]
    return float(d.dot(d)) / len(d)


# --- numpy training step for the dense, deterministic autoencoder ------------------------------

class AEKernel(NumpyBackend):
    """The numpy backend (`streamnn.backends`) of a dense, non-variational `AutoEncoder`: its
    reconstruction loss, forward, backward and update in numpy, in place on the torch parameters
    and the torch optimizer's own state tensors."""

    @classmethod
    def build(cls, module: AutoEncoder, optimizer, grad_clip=None):
        """A kernel, or None where the network, optimizer or device is not supported."""
        if module.kind != "dense" or module.variational:
            return None
        layers, members, params, loss, why = cls.check(module, optimizer, "recon")
        return None if why else cls(module, layers, members, params, optimizer, loss, grad_clip)

    def step(self, X: np.ndarray, W: np.ndarray | None) -> np.ndarray:
        """Reconstruction error per row (B,) before the update; then one update if all are finite."""
        return super().step(X, None, W)
