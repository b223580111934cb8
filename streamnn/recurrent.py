"""Shared parts of the sequence learners: the recurrent network and a numpy copy of its one-step
forward (the per-key store of states, segments and windows is in `streamnn.keystore`).

A recurrent state is kept per key as one flat float32 vector of `state_size` numbers
(LSTM: h and c of every layer; GRU/RNN: h of every layer), so that the states of many keys
stack into a (B, S) matrix and run through one batched cell step.

>>> import numpy as np, torch
>>> net = SeqNet(3, 2, cell="gru", hidden_size=4, num_layers=2)
>>> z, s = np.ones((5, 3), np.float32), np.zeros((5, net.state_size), np.float32)
>>> out, s1 = np_step(numpy_plan(net), z, s)              # one event of 5 keys
>>> ref, s2 = net(torch.from_numpy(z)[:, None], torch.from_numpy(s))
>>> np.allclose(out, ref[:, -1].detach().numpy(), atol=1e-5), np.allclose(s1, s2.detach().numpy(), atol=1e-5)
(True, True)
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .keystore import KeyStore, WindowBuffer  # noqa: F401  (re-exported: their old home)
from .modules import _swap_param

__all__ = ["SeqNet", "numpy_plan", "np_step", "np_run", "KeyStore", "WindowBuffer", "CELLS"]

CELLS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}
FORGET_BIAS = 1.0


class SeqNet(nn.Module):
    """A stacked LSTM / GRU / RNN followed by dropout and a linear head on every time step.

    `forward(x, state)` maps (B, T, F) inputs and (B, S) flat states (None = zeros) to
    (B, T, O) outputs and the (B, S) state after the last step.
    """

    def __init__(self, n_features: int, n_outputs: int, cell: str = "lstm", hidden_size: int = 32,
                 num_layers: int = 1, dropout: float = 0.0):
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"cell={cell!r}: use one of {sorted(CELLS)}")
        self.cell, self.hidden_size, self.num_layers = cell, hidden_size, num_layers
        self.rnn = CELLS[cell](n_features, hidden_size, num_layers, batch_first=True,
                               dropout=dropout if num_layers > 1 else 0.0)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Linear(hidden_size, n_outputs)
        if cell == "lstm":   # a positive forget-gate bias: remember by default (Jozefowicz et al., 2015)
            with torch.no_grad():
                for i in range(num_layers):
                    getattr(self.rnn, f"bias_ih_l{i}")[hidden_size:2 * hidden_size] = FORGET_BIAS
                    getattr(self.rnn, f"bias_hh_l{i}")[hidden_size:2 * hidden_size] = 0.0

    @property
    def state_size(self) -> int:
        return (2 if self.cell == "lstm" else 1) * self.num_layers * self.hidden_size

    def forward(self, x: torch.Tensor, state: torch.Tensor | None = None):
        B, L, H = x.shape[0], self.num_layers, self.hidden_size
        hx = None
        if state is not None:
            if self.cell == "lstm":
                s = state.reshape(B, 2, L, H).permute(1, 2, 0, 3)          # (2, L, B, H)
                hx = (s[0].contiguous(), s[1].contiguous())
            else:
                hx = state.reshape(B, L, H).transpose(0, 1).contiguous()    # (L, B, H)
        y, hn = self.rnn(x, hx)                                             # (B, T, H)
        if self.cell == "lstm":
            flat = torch.stack(hn).permute(2, 0, 1, 3).reshape(B, -1)       # (B, 2*L*H)
        else:
            flat = hn.transpose(0, 1).reshape(B, -1)                        # (B, L*H)
        return self.head(self.drop(y)), flat

    def grow_input(self, n_in: int, optimizer=None):
        """Append input columns; new weights start at 0, so outputs do not change."""
        old = self.rnn.weight_ih_l0
        extra = n_in - old.shape[1]
        if extra <= 0:
            return
        with torch.no_grad():
            new = nn.Parameter(torch.cat([old, old.new_zeros(old.shape[0], extra)], dim=1))
        self.rnn.weight_ih_l0 = new            # RNNBase.__setattr__ refreshes its flat weights
        self.rnn.input_size = n_in
        _swap_param(optimizer, old, new, lambda t: torch.cat([t, t.new_zeros(t.shape[0], extra)], 1))


# --- numpy one-step forward (eval mode) --------------------------------------------------------

def numpy_plan(net: SeqNet):
    """A numpy snapshot of `net`'s weights for `np_step`; rebuild it after any update.

    Weights are transposed, biases summed, and for the LSTM the rows of the sigmoid gates halved,
    so that one `tanh` over all gates gives the sigmoids as 0.5 + 0.5 * tanh(g / 2).
    """
    rnn, layers, H = net.rnn, [], net.hidden_size
    for i in range(net.num_layers):
        get = lambda name: getattr(rnn, f"{name}_l{i}").detach().cpu().numpy().astype(np.float32)  # noqa: E731
        Wi, Wh, bi, bh = get("weight_ih").T.copy(), get("weight_hh").T.copy(), get("bias_ih"), get("bias_hh")
        if net.cell == "lstm":
            scale = np.full(4 * H, 0.5, np.float32)
            scale[2 * H:3 * H] = 1.0                                          # i, f, (g), o
            layers.append((Wi * scale, Wh * scale, (bi + bh) * scale))
        elif net.cell == "gru":
            layers.append((Wi, Wh, bi, bh))
        else:
            layers.append((Wi, Wh, bi + bh))
    head = (net.head.weight.detach().cpu().numpy().T.copy(), net.head.bias.detach().cpu().numpy().copy())
    return net.cell, net.num_layers, H, layers, head


def np_step(plan, z: np.ndarray, s: np.ndarray):
    """One cell step for a batch: z (B, F) float32, s (B, S) -> outputs (B, O), new states (B, S)."""
    cell, L, H, layers, (Wo, bo) = plan
    inp, parts = z, []
    if cell == "lstm":
        hs, cs = [], []
        for i, (Wi, Wh, b) in enumerate(layers):
            t = np.tanh(inp @ Wi + s[:, i * H:(i + 1) * H] @ Wh + b)        # (B, 4H)
            a = 0.5 + 0.5 * t                                               # sigmoids of i, f, o
            c = a[:, H:2 * H] * s[:, (L + i) * H:(L + i + 1) * H] + a[:, :H] * t[:, 2 * H:3 * H]
            inp = a[:, 3 * H:] * np.tanh(c)
            hs.append(inp)
            cs.append(c)
        parts = hs + cs
    else:
        for i, layer in enumerate(layers):
            h = s[:, i * H:(i + 1) * H]
            if cell == "gru":
                Wi, Wh, bi, bh = layer
                gi, gh = inp @ Wi + bi, h @ Wh + bh                           # (B, 3H): r, z, n
                a = 0.5 + 0.5 * np.tanh(0.5 * (gi[:, :2 * H] + gh[:, :2 * H]))
                u = a[:, H:]
                inp = (1.0 - u) * np.tanh(gi[:, 2 * H:] + a[:, :H] * gh[:, 2 * H:]) + u * h
            else:
                Wi, Wh, b = layer
                inp = np.tanh(inp @ Wi + h @ Wh + b)
            parts.append(inp)
    new = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
    return inp @ Wo + bo, new


def np_run(plan, Z: np.ndarray, s: np.ndarray | None = None):
    """Run a window: Z (B, T, F) from states s (B, S) (None = zeros) -> last outputs (B, O), states."""
    B, T = Z.shape[:2]
    if s is None:
        _, L, H = plan[:3]
        s = np.zeros((B, (2 if plan[0] == "lstm" else 1) * L * H), np.float32)
    out = None
    for t in range(T):
        out, s = np_step(plan, Z[:, t], s)
    return out, s
