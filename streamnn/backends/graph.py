"""torch module -> numpy op list, the same list for prediction and for training.

`eval_ops(module)` gives the ops of a network in eval mode (prediction), or None with the reason;
`train_layers(module)` pairs each `nn.Linear` with the activation after it (None: none) for the
numpy training step. Both read each layer through the same constructors (`streamnn.backends.ops`),
so an activation's parameters are read once, from the module instance.
"""

from __future__ import annotations

import torch
from torch import nn

from ..modules import MLP, BlockLinear, MemberMean
from ..normalization import StreamingNorm
from . import ops

__all__ = ["sequence_of", "eval_ops", "train_layers"]


def sequence_of(module: nn.Module):
    """The layers of `module` in order, or None where it is not a plain chain of layers."""
    if isinstance(module, MLP):
        return list(module.net)
    if isinstance(module, nn.Sequential):
        return list(module)
    if type(module).__name__ == "AutoEncoder" and getattr(module, "kind", None) == "dense":
        return [*module.encoder, *module.decoder]
    return None


def _linear(m: nn.Linear, need_bias: bool):
    if m.weight.device.type != "cpu":
        return None, f"parameters on {m.weight.device.type}"
    if m.weight.dtype != torch.float32:
        return None, f"parameters of dtype {m.weight.dtype}"
    if need_bias and m.bias is None:
        return None, "a Linear without bias"
    mask = m.mask().numpy() if isinstance(m, BlockLinear) else None
    b = m.bias.detach().numpy() if m.bias is not None else None
    return ops.Linear(m.weight.detach().numpy(), b, mask), None


def eval_ops(module: nn.Module):
    """(ops, None) for `module` in eval mode, or (None, reason)."""
    seq = sequence_of(module)
    if seq is None:
        return None, f"module {type(module).__name__} is not a chain of layers"
    out = []
    for m in seq:
        if isinstance(m, nn.Linear):
            op, why = _linear(m, need_bias=False)
            if op is None:
                return None, why
            out.append(op)
        elif isinstance(m, StreamingNorm):
            out.append(ops.Norm(m))
        elif isinstance(m, MemberMean):
            out.append(ops.MemberMean(m.members))
        elif isinstance(m, (nn.Dropout, nn.Identity)):
            continue                                   # identities in eval mode
        else:
            act = ops.activation(m)
            if act is None:
                return None, f"module has {type(m).__name__}"
            out.append(act)
    return out, None


def run(op_list, h):
    """Apply eval ops to `h` (F,) or (B, F) float32."""
    for op in op_list:
        h = op.forward(h)
    return h


def train_layers(module: nn.Module):
    """([(Linear op, activation op or None)], members, params in order, None) or (None, .., reason)."""
    seq = sequence_of(module)
    if seq is None:
        return None, 1, None, f"module {type(module).__name__} is not a chain of layers"
    layers, members, params = [], 1, []
    for m in seq:
        if members > 1:
            return None, 1, None, "layers after MemberMean"
        if isinstance(m, nn.Linear):
            op, why = _linear(m, need_bias=True)
            if op is None:
                return None, 1, None, why
            layers.append([op, None])
            params += [m.weight, m.bias]
        elif not layers:
            return None, 1, None, f"{type(m).__name__} before the first Linear"
        elif isinstance(m, MemberMean):
            members = m.members
        elif isinstance(m, nn.Dropout) and m.p == 0:
            continue
        else:
            act = ops.activation(m)
            if act is None:
                return None, 1, None, f"module has {type(m).__name__}"
            if layers[-1][1] is not None:
                return None, 1, None, "two activations in a row"
            layers[-1][1] = act
    if not layers:
        return None, 1, None, "no Linear layer"
    return [tuple(p) for p in layers], members, params, None
