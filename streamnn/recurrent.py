"""Shared parts of the sequence learners: the recurrent network, a numpy copy of its one-step
forward, and the per-key store of hidden states, BPTT segments and windows.

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

from collections import OrderedDict

import numpy as np
import torch
from torch import nn

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


# --- per-key store ------------------------------------------------------------------------------

def _grow_last(a: np.ndarray, width: int) -> np.ndarray:
    if a.shape[-1] >= width:
        return a
    pad = np.full(a.shape[:-1] + (width - a.shape[-1],), np.nan)
    return np.concatenate([a, pad], axis=-1)


class KeyStore:
    """Per-key slots: recent raw rows `X` (cap, seq_len, F), targets `Y`, weights `W`, their
    count `length`, and (stateful mode) the current state `h`, the state `h0` at the start of the
    BPTT segment, `hmid` where the segment is cut on truncation, and `new`, the events not yet
    trained on. Keys are kept in least-recently-learned order; past `max_keys` the oldest is
    dropped (its untrained events are counted in `n_evicted_events`).
    """

    def __init__(self, seq_len: int, state_size: int, max_keys: int | None = None):
        self.seq_len, self.state_size, self.max_keys = seq_len, state_size, max_keys
        self.slots: OrderedDict = OrderedDict()
        self.free: list = []
        self.n_evicted_keys = self.n_evicted_events = 0
        self._alloc(0, 0)

    def _alloc(self, cap: int, n_features: int):
        self.cap = cap
        self.X = np.full((cap, self.seq_len, n_features), np.nan)
        self.Y = np.full((cap, self.seq_len), np.nan)
        self.W = np.ones((cap, self.seq_len))
        self.length = np.zeros(cap, np.int64)
        self.new = np.zeros(cap, np.int64)
        self.h, self.h0, self.hmid = (np.zeros((cap, self.state_size), np.float32) for _ in range(3))

    def __len__(self) -> int:
        return len(self.slots)

    def get(self, key):
        """The slot of `key` or None; does not touch the recency order (for predictions)."""
        return self.slots.get(key)

    def slot(self, key) -> int:
        """The slot of `key`, created if new, marked as most recently used."""
        s = self.slots.get(key)
        if s is not None:
            self.slots.move_to_end(key)
            return s
        if self.max_keys is not None and len(self.slots) >= self.max_keys:
            _, old = self.slots.popitem(last=False)
            self.n_evicted_keys += 1
            self.n_evicted_events += int(self.new[old])
            self.free.append(old)
        if self.free:
            s = self.free.pop()
        else:
            s = len(self.slots)
            if s >= self.cap:
                self._grow(max(1, 2 * self.cap))
        self._clear(s)
        self.slots[key] = s
        return s

    def _grow(self, cap: int):
        arrays = {k: getattr(self, k) for k in ("X", "Y", "W", "length", "new", "h", "h0", "hmid")}
        self._alloc(cap, self.X.shape[-1])
        for k, a in arrays.items():
            getattr(self, k)[: len(a)] = a

    def _clear(self, s: int):
        self.X[s], self.Y[s], self.W[s] = np.nan, np.nan, 1.0
        self.length[s] = self.new[s] = 0
        self.h[s] = self.h0[s] = self.hmid[s] = 0.0

    def ensure_features(self, n: int):
        if n > self.X.shape[-1]:
            self.X = _grow_last(self.X, n)

    def put(self, s: int, pos: int, row: np.ndarray, y: float, w: float):
        self.X[s, pos, : len(row)] = row
        self.X[s, pos, len(row):] = np.nan
        self.Y[s, pos], self.W[s, pos] = y, w

    def push(self, s: int, row: np.ndarray, y: float, w: float):
        """Windowed mode: shift the key's history left by one and put the row last."""
        if self.seq_len == 0:
            return
        for a in (self.X, self.Y, self.W):
            a[s, :-1] = a[s, 1:]
        self.put(s, self.seq_len - 1, row, y, w)
        self.length[s] = min(self.length[s] + 1, self.seq_len)

    def history(self, slots, n_features: int) -> np.ndarray:
        """Windowed mode: the histories of `slots` (None = unknown key) -> (B, seq_len, F)."""
        out = np.full((len(slots), self.seq_len, n_features), np.nan)
        F = min(n_features, self.X.shape[-1])
        for i, s in enumerate(slots):
            if s is not None:
                out[i, :, :F] = self.X[s, :, :F]
        return out

    def states(self, slots) -> np.ndarray:
        """Stateful mode: the current states of `slots` (None = zeros) -> (B, S)."""
        out = np.zeros((len(slots), self.state_size), np.float32)
        for i, s in enumerate(slots):
            if s is not None:
                out[i] = self.h[s]
        return out

    def state_dict(self) -> dict:
        """Plain types and tensors; slot numbers are kept, so that batches keep their order."""
        plain = lambda k: k.item() if isinstance(k, np.generic) else k  # noqa: E731
        s = {k: torch.from_numpy(getattr(self, k).copy()) for k in ("X", "Y", "W", "length", "new", "h", "h0", "hmid")}
        s.update(keys=[plain(k) for k in self.slots], slots=list(self.slots.values()), free=list(self.free),
                 evicted=[self.n_evicted_keys, self.n_evicted_events])
        return s

    def load_state_dict(self, s: dict):
        for k in ("X", "Y", "W", "length", "new", "h", "h0", "hmid"):
            setattr(self, k, s[k].numpy().copy())
        self.cap = len(self.length)
        self.slots = OrderedDict(zip(s["keys"], s["slots"]))
        self.free = list(s["free"])
        self.n_evicted_keys, self.n_evicted_events = s["evicted"]


class WindowBuffer:
    """The last `capacity` training windows: X (cap, T, F) raw rows, Y (cap, T) targets, w (cap,)."""

    def __init__(self, capacity: int, length: int):
        self.capacity, self.length = int(capacity), int(length)
        self.X = np.full((self.capacity, self.length, 0), np.nan)
        self.Y = np.full((self.capacity, self.length), np.nan)
        self.w = np.ones(self.capacity)
        self.size = self.head = 0

    def append(self, X: np.ndarray, Y: np.ndarray, w: float):
        self.X = _grow_last(self.X, X.shape[-1])
        h = self.head
        self.X[h, :, : X.shape[-1]] = X
        self.X[h, :, X.shape[-1]:] = np.nan
        self.Y[h], self.w[h] = Y, w
        self.head = (h + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def last(self, n: int):
        """The `n` most recent windows, oldest first: (X, Y, w)."""
        n = min(n, self.size)
        idx = (self.head - n + np.arange(n)) % self.capacity
        return self.X[idx], self.Y[idx], self.w[idx]

    def state_dict(self) -> dict:
        return {"X": torch.from_numpy(self.X.copy()), "Y": torch.from_numpy(self.Y.copy()),
                "w": torch.from_numpy(self.w.copy()), "size": self.size, "head": self.head}

    def load_state_dict(self, s: dict):
        self.X, self.Y, self.w = (s[k].numpy().copy() for k in ("X", "Y", "w"))
        self.size, self.head = s["size"], s["head"]
