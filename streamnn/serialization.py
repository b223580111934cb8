"""Save and load of learners: a checkpoint of plain parameters and state, no pickled objects.

`save(learner, path)` writes {"learner": qualified class name, "params": plain constructor
parameters, "state": learner.state_dict()} atomically (`streamnn.checkpoint`); `load(path)`
rebuilds only streamnn's own learner classes. The plain-parameter codec (`_to_plain`,
`_from_plain`, `_plain_params`) is shared with the runtime's checkpoints.
"""

from __future__ import annotations

import importlib
import numbers

import torch

from . import checkpoint
from .lr import PlateauLR, StreamLR

__all__ = ["save", "load"]


def save(learner, path):
    """Write `learner` (parameters and state) to `path` atomically; see `load`."""
    checkpoint.save_checkpoint({"learner": _qualified(type(learner)), "params": _plain_params(learner),
                                "state": learner.state_dict()}, path)


def load(path, **params):
    """Rebuild a learner saved with `learner.save(path)`, without unpickling any object.

    Only streamnn's own learner classes are rebuilt; parameters that are classes or callables
    (a custom `module`, a loss function) are not stored as code and must be passed again.
    A file that is not a learner checkpoint raises `streamnn.checkpoint.CheckpointError`.
    """
    return _load(path, params)


def _load(path, params: dict, expect=None):
    ck = checkpoint.load_checkpoint(path)
    name = ck.get("learner")
    if not isinstance(name, str) or not isinstance(ck.get("params"), dict) or "state" not in ck:
        raise checkpoint.CheckpointError(f"{path}: a streamnn checkpoint without a learner in it (keys "
                                         f"{sorted(map(str, ck))[:8]}); load it with streamnn.load_checkpoint")
    modname, _, qualname = name.rpartition(".")
    cls = None
    if modname.startswith("streamnn."):
        try:
            cls = getattr(importlib.import_module(modname), qualname)
        except (ImportError, AttributeError):
            cls = None
    if not isinstance(cls, type) or not callable(getattr(cls, "load_state_dict", None)):
        raise checkpoint.CheckpointError(f"{path}: holds a {name}, which is not a streamnn learner of this "
                                         "version; load it with the streamnn version that wrote it")
    if expect is not None and not issubclass(cls, expect):
        raise checkpoint.CheckpointError(f"{path}: holds a {cls.__name__} ({name}), not a {expect.__name__}; "
                                         f"load it with {cls.__name__}.load(path) or streamnn.load(path)")
    kwargs = {}
    for k, v in ck["params"].items():
        if isinstance(v, dict) and "__callable__" in v:
            if k not in params:
                raise ValueError(f"{path} was saved with {k}={v['__callable__']}; pass {k}=... to load it")
        else:
            kwargs[k] = _from_plain(v)
    kwargs.update(params)
    learner = cls(**kwargs)
    load_state(learner, ck["state"], path, "pass the parameters it was saved with")
    return learner


def load_state(learner, state: dict, path, fix: str) -> None:
    """`learner.load_state_dict(state)`; a state that does not fit the learner (another version,
    other parameters, a hand-made file) is a one-line `CheckpointError` naming `path` and `fix`."""
    try:
        learner.load_state_dict(state)
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as e:
        name = type(learner).__name__
        raise checkpoint.CheckpointError(f"{path}: its {name} state does not fit a {name} built with these "
                                         f"parameters ({type(e).__name__}: "
                                         f"{str(e).splitlines()[0][:160] if str(e) else ''}); {fix}") from None


def _qualified(obj) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


def _plain_params(learner) -> dict:
    out = {}
    for k, v in learner._get_params().items():
        out[k] = _to_plain(v)
    return out


def _to_plain(v):
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, (tuple, list)):
        return {"__tuple__": [_to_plain(i) for i in v]} if isinstance(v, tuple) else [_to_plain(i) for i in v]
    if isinstance(v, dict):
        return {"__dict__": [[_to_plain(k), _to_plain(i)] for k, i in v.items()]}
    if isinstance(v, PlateauLR):
        return {"__plateau__": v.params()}
    if isinstance(v, StreamLR):
        return {"__streamlr__": v.params()}
    if isinstance(v, numbers.Real):
        return float(v)
    return {"__callable__": _qualified(v) if hasattr(v, "__qualname__") else repr(v)}


def _from_plain(v):
    if isinstance(v, list):
        return [_from_plain(i) for i in v]
    if isinstance(v, dict):
        if "__tuple__" in v:
            return tuple(_from_plain(i) for i in v["__tuple__"])
        if "__dict__" in v:
            return {_from_plain(k): _from_plain(i) for k, i in v["__dict__"]}
        if "__plateau__" in v:
            return PlateauLR(**v["__plateau__"])
        if "__streamlr__" in v:
            return StreamLR(**v["__streamlr__"])
    return v


def _to_cpu(obj):
    if torch.is_tensor(obj):
        return obj.detach().to("cpu", copy=True)   # a copy: a state must not alias live tensors
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_cpu(v) for v in obj]
    return obj
