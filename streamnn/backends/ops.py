"""The numpy ops: each op keeps its forward and its backward side by side (micrograd style).

One activation registry (`ACTIVATIONS`) maps a torch activation *class* to a factory that reads
the op's parameters from the module *instance* (`nn.LeakyReLU(0.2)` gives a slope of 0.2,
`nn.ELU(0.5)` an alpha of 0.5), so prediction and training run the same math as torch. A module
without an entry has no numpy form: the learner then uses the torch backend, never a guess.

>>> import numpy as np
>>> from torch import nn
>>> op = activation(nn.LeakyReLU(0.2))
>>> z = np.array([[-1.0, 2.0]], np.float32)
>>> op.forward(z).tolist(), op.backward(np.ones_like(z), z, op.forward(z)).tolist()
([[-0.20000000298023224, 2.0]], [[0.20000000298023224, 1.0]])
>>> activation(nn.GELU()) is None
True
"""

from __future__ import annotations

import numpy as np
from torch import nn

__all__ = ["ACTIVATIONS", "activation", "Act", "Linear", "MemberMean", "Norm", "mm"]


def mm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """`a @ b`; an outer product (inner size 1) as a multiply, which gives the same array as
    numpy's matmul loop for that case (a zero accumulator plus one product) in a third of the time."""
    if a.ndim == 2 and a.shape[1] == 1 and a.shape[0] > 1 and b.shape[1] > 1 and a.dtype == b.dtype:
        out = np.multiply(a, b)
        out += 0.0
        return out
    return a @ b


# --- activations: forward(z) -> h; backward(g, z, h) -> dL/dz (in place in g, which the caller owns)

class Act:
    """Base of the elementwise activations; `name` describes the op (with its parameters)."""

    name = "identity"
    trainable = True

    def forward(self, z):
        return z

    def backward(self, g, z, h):
        return g

    def __repr__(self):
        return self.name


class ReLU(Act):
    name = "ReLU"

    def forward(self, z):
        return np.maximum(z, 0.0)

    def backward(self, g, z, h):
        if g.dtype != z.dtype:
            return g * (z > 0)
        np.multiply(g, z > 0, out=g)
        return g


class Tanh(Act):
    name = "Tanh"

    forward = staticmethod(np.tanh)   # forward(z) = np.tanh(z), the ufunc itself (no Python frame)

    def backward(self, g, z, h):
        if g.dtype != z.dtype:
            return g * (1.0 - h * h)
        g *= 1.0 - h * h
        return g


class Sigmoid(Act):
    name = "Sigmoid"

    def forward(self, z):
        return 1.0 / (1.0 + np.exp(-z))

    def backward(self, g, z, h):
        if g.dtype != z.dtype:
            return g * h * (1.0 - h)
        g *= h
        g *= 1.0 - h
        return g


class LeakyReLU(Act):
    def __init__(self, slope: float):
        self.slope = float(slope)
        self.name = f"LeakyReLU({self.slope:g})"

    def forward(self, z):
        return np.where(z > 0, z, z * np.asarray(self.slope, dtype=z.dtype))

    def backward(self, g, z, h):
        d = np.where(z > 0, 1.0, self.slope).astype(g.dtype)
        if g.dtype != z.dtype:
            return g * d
        g *= d
        return g


class ELU(Act):
    def __init__(self, alpha: float):
        self.alpha = float(alpha)
        self.name = f"ELU({self.alpha:g})"

    def forward(self, z):
        # max(z, 0) + alpha * expm1(min(z, 0)): z where z > 0 (the second term is exactly 0), with
        # fewer passes over the batch than np.where and a cast
        e = np.minimum(z, 0.0)
        np.expm1(e, out=e)
        e *= self.alpha
        e += np.maximum(z, 0.0)
        return e

    def backward(self, g, z, h):
        pos = z > 0                       # 1 there, h + alpha (= alpha * exp(z)) elsewhere; masks
        d = h + self.alpha                # are cheaper than np.where with a Python float
        d *= ~pos
        d += pos
        if g.dtype != z.dtype:
            return g * d
        g *= d
        return g


def _leaky(m):
    return LeakyReLU(m.negative_slope)


def _elu(m):
    return None if m.inplace else ELU(m.alpha)


ACTIVATIONS = {
    nn.ReLU: lambda m: ReLU(),
    nn.Tanh: lambda m: Tanh(),
    nn.Sigmoid: lambda m: Sigmoid(),
    nn.Identity: lambda m: Act(),
    nn.LeakyReLU: _leaky,
    nn.ELU: _elu,
}
"""torch activation class -> factory(module instance) -> op (None: this instance has no numpy form)."""


def activation(m: nn.Module):
    """The numpy op of the activation module `m` (its parameters read from it), or None."""
    make = ACTIVATIONS.get(type(m))
    return make(m) if make is not None else None


# --- layers -----------------------------------------------------------------------------------

class Linear:
    """y = x W^T + b, on numpy views of the parameters (and, for training, of their gradients)."""

    trainable = True

    def __init__(self, W: np.ndarray, b: np.ndarray | None, mask: np.ndarray | None = None):
        self.W, self.b, self.mask = W, b, mask     # W (out, in), b (out,) or None, mask (out, in)
        self.WT = W.T
        self.gW = self.gb = None                   # gradient views, set by the backend
        self.name = f"Linear({W.shape[1]}->{W.shape[0]})"

    def rebind(self, W, b, gW, gb):
        """Read the parameters from (and write the gradients to) other arrays of the same shapes."""
        self.W, self.b, self.WT, self.gW, self.gb = W, b, W.T, gW, gb

    def forward(self, h):                          # (B, in) or (in,) -> (B, out) or (out,)
        z = mm(h, self.WT)
        if self.b is not None:
            z += self.b
        return z

    def backward(self, g, h, need_input_grad: bool):
        """Write dW, db (the batch sums) into the gradient views; return dL/dh or None."""
        if self.gW is not None and g.dtype == h.dtype == np.float32:
            np.matmul(g.T, h, out=self.gW)
            if self.mask is not None:
                self.gW *= self.mask
            np.add.reduce(g, 0, out=self.gb)
        else:                                      # another dtype: computed, then stored
            gW = g.T @ h
            self.gW[...] = gW * self.mask if self.mask is not None else gW
            self.gb[...] = g.sum(axis=0)
        return mm(g, self.W) if need_input_grad else None


class MemberMean:
    """The members' mean of output-major outputs (..., O * K) -> (..., O) (prediction only: in
    training the loss reads every member's outputs)."""

    trainable = True

    def __init__(self, members: int):
        self.members = members
        self.name = f"MemberMean({members})"

    def forward(self, h):   # np.mean's operations without its Python wrapper
        r = np.add.reduce(h.reshape(h.shape[:-1] + (-1, self.members)), -1)
        return np.true_divide(r, np.intp(self.members), out=r, casting="unsafe")


class Norm:
    """`StreamingNorm` in eval mode (prediction only: its training update has no numpy form)."""

    trainable = False
    name = "StreamingNorm"

    def __init__(self, m):
        self.m = m

    def forward(self, h):
        m = self.m
        mean = m.running_mean.numpy()
        inv = 1.0 / np.sqrt(m.running_var.numpy() + m.eps)
        h = (h - mean) * inv
        if m.weight is not None:
            h = h * m.weight.detach().numpy() + m.bias.detach().numpy()
        return h
