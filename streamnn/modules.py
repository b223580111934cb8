"""Plain `nn.Module`s used by the learners, and the growth of their input and output layers.

>>> import torch
>>> net = MLP(4, 3, hidden=(8,), activation="tanh", seed=0)
>>> net(torch.zeros(2, 4)).shape
torch.Size([2, 3])
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .normalization import StreamingNorm

__all__ = ["MLP", "ACTIVATIONS", "BlockLinear", "MemberMean", "grow_input", "grow_output", "first_linear",
           "last_linear", "members_of", "lr_scales_of"]

ACTIVATIONS = {
    "relu": nn.ReLU, "tanh": nn.Tanh, "selu": nn.SELU, "gelu": nn.GELU, "mish": nn.Mish,
    "sigmoid": nn.Sigmoid, "leaky_relu": nn.LeakyReLU, "elu": nn.ELU, "identity": nn.Identity,
}
INITS = ("default", "xavier", "glorot", "he", "kaiming")


def make_activation(name):
    if isinstance(name, str):
        try:
            return ACTIVATIONS[name.lower()]()
        except KeyError:
            raise ValueError(f"activation={name!r}: use one of {sorted(ACTIVATIONS)} or an nn.Module class") from None
    return name()


class BlockLinear(nn.Linear):
    """An `nn.Linear` whose weight is block-diagonal between `members` networks: output unit `r`
    belongs to member `r // (out_features // members)` ("member" layout) or `r % members`
    ("output" layout, which lets a new output be appended for every member at once); input `c` to
    member `c // (in_features // members)`. The weights outside the blocks are zero and stay zero
    (the forward multiplies by the mask, so their gradient is zero).
    """

    def __init__(self, in_features, out_features, members: int, layout: str = "member"):
        super().__init__(in_features, out_features)
        self.members, self.layout = members, layout
        with torch.no_grad():   # each member's block starts as a Linear of its own fan-in
            bound = 1.0 / np.sqrt(in_features // members)
            self.weight.uniform_(-bound, bound).mul_(self.mask())
            self.bias.uniform_(-bound, bound)

    def mask(self) -> torch.Tensor:
        """(out, in) 0/1 mask of the blocks, for the current shape."""
        out, inp, k = self.weight.shape[0], self.weight.shape[1], self.members
        rows = torch.arange(out)
        row_member = rows % k if self.layout == "output" else rows // (out // k)
        col_member = torch.arange(inp) // (inp // k)
        return (row_member[:, None] == col_member[None, :]).to(self.weight.dtype)

    def forward(self, x):
        cached = getattr(self, "_mask_cache", None)
        if cached is None or cached.shape != self.weight.shape or cached.device != self.weight.device:
            cached = self._mask_cache = self.mask().to(self.weight.device)
        return nn.functional.linear(x, self.weight * cached, self.bias)


class MemberMean(nn.Module):
    """The outputs of `members` networks, laid out output-major (B, O * members): their mean
    (B, O) in eval mode, every member's outputs (B, O, members) in training (each member is
    trained on its own loss)."""

    def __init__(self, members: int):
        super().__init__()
        self.members = members

    def forward(self, x):
        z = x.reshape(x.shape[0], -1, self.members)   # (B, O, K)
        return z if self.training else z.mean(dim=2)


def members_of(module: nn.Module) -> int:
    """The number of member networks in `module` (1 for an ordinary network)."""
    return getattr(module, "members", 1) if isinstance(module, MLP) else 1


class MLP(nn.Module):
    """A multilayer perceptron: [Linear -> norm -> activation -> dropout] * len(hidden) -> Linear.

    Parameters
    ----------
    n_features, n_outputs
        Input and output widths.
    hidden
        Sizes of the hidden layers; `()` gives a linear model.
    activation
        "relu", "tanh", "selu", "gelu", "mish", ... or an `nn.Module` class.
    dropout
        Inverted dropout after each hidden activation (off in `eval()` mode).
    norm
        None, "layer" (`nn.LayerNorm`) or "stream" (`StreamingNorm`, works at batch size 1).
    init
        "default" (torch's), "xavier"/"glorot" or "he"/"kaiming".
    seed
        When given, the initial weights depend only on it (the global RNG is left untouched).
    members
        Train this many networks of this shape as one (an ensemble): one wide first layer, then
        block-diagonal `BlockLinear` layers, one forward and one backward for all of them; each
        member is trained on its own loss (training mode returns (B, O, members)) and predictions
        are the mean of the members' outputs. With `norm="layer"` the normalization spans all
        members' units (they are then not independent); "stream" normalizes each unit alone.
    member_lr
        With `members`: one learning-rate multiplier per member (None: all 1), applied by both
        backends as a scale of each member's parameter update (`lr_scales`); e.g. `(3, 1, 1)`
        trains member 0 three times as fast as the others.

    Examples
    --------
    >>> net = MLP(3, 2, hidden=(4,), members=3, seed=0)
    >>> net.train()(torch.zeros(5, 3)).shape, net.eval()(torch.zeros(5, 3)).shape
    (torch.Size([5, 2, 3]), torch.Size([5, 2]))
    """

    def __init__(self, n_features: int, n_outputs: int, hidden=(32,), activation="relu",
                 dropout: float = 0.0, norm=None, init: str = "default", seed=None, members: int = 1,
                 member_lr=None):
        super().__init__()
        if int(members) != members or members < 1:
            raise ValueError(f"members={members!r}: use a positive integer (1 = one network)")
        self.members = members = int(members)
        if member_lr is not None and (len(member_lr) != members or not all(v > 0 for v in member_lr)):
            raise ValueError(f"member_lr={member_lr!r}: give one positive multiplier per member ({members}), or None")
        self.member_lr = None if member_lr is None else tuple(float(v) for v in member_lr)
        if norm not in (None, "layer", "stream"):
            raise ValueError(f"norm={norm!r}: use None, 'layer' or 'stream'")
        if init not in INITS:
            raise ValueError(f"init={init!r}: use one of {INITS}")
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            layers, width, k = [], n_features, members
            for i, h in enumerate(hidden):
                layers.append(nn.Linear(width, h * k) if i == 0 or k == 1 else BlockLinear(width, h * k, k))
                if norm == "layer":
                    layers.append(nn.LayerNorm(h * k))
                elif norm == "stream":
                    layers.append(StreamingNorm(h * k))
                layers.append(make_activation(activation))
                if dropout > 0:
                    layers.append(nn.Dropout(dropout))
                width = h * k
            if k == 1:
                layers.append(nn.Linear(width, n_outputs))
            elif not hidden:   # K linear models: one dense layer, output-major
                layers += [nn.Linear(width, n_outputs * k), MemberMean(k)]
            else:
                layers += [BlockLinear(width, n_outputs * k, k, layout="output"), MemberMean(k)]
            self.net = nn.Sequential(*layers)
            if init != "default":
                for m in self.net:
                    if isinstance(m, nn.Linear):
                        if init in ("xavier", "glorot"):
                            nn.init.xavier_uniform_(m.weight)
                        else:
                            nn.init.kaiming_uniform_(m.weight, nonlinearity="relu")
                        nn.init.zeros_(m.bias)
                        if isinstance(m, BlockLinear):
                            with torch.no_grad():
                                m.weight.mul_(m.mask())

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, F) -> (B, O)
        return self.net(x)

    def lr_scales(self) -> dict | None:
        """{id(parameter): float32 array of its shape}, the update scale of each element (its
        member's `member_lr`), for the layers' current shapes; None without `member_lr`."""
        if self.member_lr is None:
            return None
        mult, k = np.asarray(self.member_lr, dtype=np.float32), self.members
        linears = [m for m in self.net if isinstance(m, nn.Linear)]
        out = {}
        for i, lin in enumerate(linears):   # hidden layers are member-major, the last output-major
            rows = np.arange(lin.out_features)
            member = rows % k if i == len(linears) - 1 else rows // (lin.out_features // k)
            out[id(lin.weight)] = np.repeat(mult[member][:, None], lin.in_features, axis=1)
            out[id(lin.bias)] = mult[member]
        return out


def lr_scales_of(module: nn.Module) -> dict | None:
    """The update scale of each parameter element of `module` (`MLP.lr_scales`), or None."""
    return module.lr_scales() if isinstance(module, MLP) else None


def first_linear(module: nn.Module, n_in: int | None = None) -> tuple[nn.Module, str]:
    """The first `nn.Linear` (optionally with `in_features == n_in`) and its qualified name."""
    for name, m in module.named_modules():
        if isinstance(m, nn.Linear) and (n_in is None or m.in_features == n_in):
            return m, name
    raise ValueError(
        "the module has no nn.Linear input layer to grow; keep the feature set fixed, or build the "
        "network with an nn.Linear that reads the features first")


def last_linear(module: nn.Module, n_out: int | None = None) -> tuple[nn.Module, str]:
    found = None
    for name, m in module.named_modules():
        if isinstance(m, nn.Linear) and (n_out is None or m.out_features == n_out):
            found = (m, name)
    if found is None:
        raise ValueError(
            "the module has no nn.Linear output layer to grow for a new class; end the network "
            "with an nn.Linear, or declare the classes up front")
    return found


def _swap_param(optimizer, old: nn.Parameter, new: nn.Parameter, pad):
    """Replace `old` by `new` in the optimizer, padding its state tensors with `pad(tensor)`."""
    if optimizer is None:
        return
    for group in optimizer.param_groups:
        group["params"] = [new if p is old else p for p in group["params"]]
    state = optimizer.state.pop(old, None)
    if state is not None:
        optimizer.state[new] = {k: pad(v) if torch.is_tensor(v) and v.shape == old.shape else v
                                for k, v in state.items()}


def grow_input(linear: nn.Linear, n_in: int, optimizer=None):
    """Append input columns to `linear`; new weights start at 0, old ones (and their optimizer
    state) are untouched, so predictions do not change until the new features are learned."""
    extra = n_in - linear.in_features
    if extra <= 0:
        return
    old = linear.weight
    with torch.no_grad():
        w = torch.cat([old, old.new_zeros(old.shape[0], extra)], dim=1)
    linear.weight = nn.Parameter(w)
    linear.in_features = n_in
    _swap_param(optimizer, old, linear.weight, lambda t: torch.cat([t, t.new_zeros(t.shape[0], extra)], 1))


def grow_output(linear: nn.Linear, n_out: int, optimizer=None):
    """Append output units to `linear` (a new class); new rows start at 0 with the lowest bias."""
    extra = n_out - linear.out_features
    if extra <= 0:
        return
    old_w, old_b = linear.weight, linear.bias
    with torch.no_grad():
        linear.weight = nn.Parameter(torch.cat([old_w, old_w.new_zeros(extra, old_w.shape[1])], 0))
        _swap_param(optimizer, old_w, linear.weight, lambda t: torch.cat([t, t.new_zeros(extra, t.shape[1])], 0))
        if old_b is not None:
            fill = old_b.min() if old_b.numel() else old_b.new_zeros(())
            linear.bias = nn.Parameter(torch.cat([old_b, fill.expand(extra).clone()]))
            _swap_param(optimizer, old_b, linear.bias, lambda t: torch.cat([t, t.new_zeros(extra)]))
    linear.out_features = n_out
