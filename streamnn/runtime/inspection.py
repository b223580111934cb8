"""`streamnn inspect`: what a checkpoint (or a `learner.save()` file) holds, in plain values.

A folder is read as its ``*.pt`` files, leaving out the ``.tmp-*.pt`` files a checkpoint write cut
short leaves behind. A file that is not a readable checkpoint gets one line on stderr saying so
(never a traceback or torch's advice to unpickle it) and the exit status is 1.

>>> import tempfile, os
>>> folder = tempfile.mkdtemp(); _ = open(os.path.join(folder, "x.pt"), "w").write("a,b\\n")
>>> inspect_command(os.path.join(folder, "x.pt"))
1
"""

from __future__ import annotations

import datetime
import json
import os
import sys

__all__ = ["inspect_command", "describe_checkpoint", "plain"]


def plain(v):
    """A checkpoint's stored parameter as a plain JSON value (the codec's tags decoded).

    >>> plain({"hidden": {"__tuple__": [32]}, "loss": {"__callable__": "torch.nn.MSELoss"}})
    {'hidden': [32], 'loss': 'torch.nn.MSELoss'}
    """
    if isinstance(v, (list, tuple)):
        return [plain(i) for i in v]
    if isinstance(v, dict):
        if "__tuple__" in v:
            return plain(v["__tuple__"])
        if "__dict__" in v:
            return {str(plain(k)): plain(i) for k, i in v["__dict__"]}
        if "__plateau__" in v:
            return {"PlateauLR": plain(v["__plateau__"])}
        if "__streamlr__" in v:
            return {"StreamLR": plain(v["__streamlr__"])}
        if "__callable__" in v:
            return v["__callable__"]
        return {str(k): plain(i) for k, i in v.items()}
    if hasattr(v, "tolist"):   # a tensor or numpy value
        return v.tolist() if getattr(v, "numel", lambda: 1)() <= 16 else f"tensor{list(v.shape)}"
    return v


def describe_checkpoint(path: str) -> dict:
    """The facts a person wants from a checkpoint file (or a `learner.save()` file), plain values."""
    from ..checkpoint import load_checkpoint

    ck = load_checkpoint(path)
    st = ck.get("state", {})
    kind = "runtime checkpoint" if "unit" in ck or "offsets" in ck else "learner file (learner.save)"
    info = {"file": path, "kind": kind, "bytes": os.path.getsize(path), "unit": ck.get("unit"),
            "task": ck.get("task"), "learner": ck.get("learner"), "params": plain(ck.get("params") or {}),
            "offsets": ck.get("offsets"), "positions": plain(ck.get("positions")),
            "counters": plain(ck.get("counters"))}
    stamp = ck.get("saved_at") or os.path.getmtime(path)
    info["saved_at"] = datetime.datetime.fromtimestamp(stamp, datetime.timezone.utc).isoformat(timespec="seconds")
    c = st.get("counters", {})
    info["learner_state"] = {"built": st.get("built"), "n_seen": c.get("n_seen", st.get("n_seen")),   # (forecasters: top level)
                             "n_updates": c.get("n_updates"),
                             "features": plain((st.get("features") or {}).get("names")),
                             "classes": plain((st.get("extra") or {}).get("classes")),
                             "targets": plain((st.get("extra") or {}).get("targets"))}   # multi-output learners
    lr = st.get("optimizer", {}).get("param_groups", [{}])[0].get("lr") if st.get("optimizer") else None
    info["learner_state"]["lr"] = lr
    rt = ck.get("runtime", {})
    info["runtime"] = {"delayed_labels_waiting": len(rt.get("delayed", {}).get("items", [])),
                       "delayed_labels_expired": rt.get("delayed", {}).get("expired"),
                       "threshold": plain(rt.get("threshold")), "lag_keys": len(rt.get("lags", {}).get("windows", {}))}
    return info


def _is_checkpoint(name: str) -> bool:
    """A current checkpoint: ``*.pt``, not a ``.tmp-*`` file a write cut short left behind, not
    the ``*.prev.pt`` kept beside it."""
    from .. import checkpoint

    helper = getattr(checkpoint, "is_checkpoint_file", None)
    if callable(helper):
        return helper(name)
    base = os.path.basename(name)
    return base.endswith(".pt") and not base.startswith(".tmp-") and not base.endswith(".prev.pt")


def _refusal(path: str, e: Exception) -> str:
    """One line for a file that is not a readable checkpoint (never torch's weights_only advice)."""
    from .. import checkpoint

    if isinstance(e, getattr(checkpoint, "CheckpointError", ())):
        return str(e).strip().splitlines()[0]
    if isinstance(e, OSError):
        return f"{path}: cannot be read ({e.strerror or e})"
    return (f"{path}: not a streamnn checkpoint ({type(e).__name__}); expected a .pt file written "
            "by `streamnn run` or learner.save()")


def _print_info(info: dict) -> None:
    ls, pos = info["learner_state"], info["positions"] or {}
    print(f"{info['file']} ({info['bytes']:,} bytes, {info['kind']}, saved {info['saved_at']})")
    known = [f"{ls['n_seen']} samples learned" if ls["n_seen"] is not None else None,
             f"{ls['n_updates']} updates" if ls["n_updates"] is not None else None,
             f"lr {ls['lr']}" if ls["lr"] is not None else None]   # (a series forecaster keeps fewer)
    print(f"  learner   {info['learner']}" + (f" ({info['task']})" if info["task"] else "")
          + (": " + ", ".join(k for k in known if k) if any(known) else ""))
    for stream, off in (info["offsets"] or {}).items():
        print(f"  stream    {stream}: next offset {off}, last position {json.dumps(pos.get(stream))}")
    if ls["features"] is not None:
        print(f"  features  {ls['features']}")
    if ls.get("targets") is not None:   # a multi-output learner: its targets (and classes per target, if any)
        print(f"  targets   {ls['targets']}")
        if any(ls.get("classes") or ()):
            print(f"  classes   {dict(zip(ls['targets'], ls['classes']))}")
    elif ls.get("classes") is not None:
        print(f"  classes   {ls['classes']}")
    if info["counters"] is not None:
        print(f"  counters  {json.dumps(info['counters'])}")
        print(f"  runtime   {json.dumps(info['runtime'])}")
    print("  params    " + ", ".join(f"{k}={json.dumps(v)}" for k, v in info["params"].items()))


def _checkpoint_folder(folder: str) -> str:
    """`folder`, or, for a run folder without checkpoints of its own, where its run kept them (its
    `checkpoints/`, or the folder its metrics.json names)."""
    if any(_is_checkpoint(f) for f in os.listdir(folder)):
        return folder
    named = None
    try:
        with open(os.path.join(folder, "metrics.json")) as f:
            named = json.load(f).get("checkpoints")
    except (OSError, ValueError, AttributeError):
        pass
    for cand in (os.path.join(folder, "checkpoints"), named):
        if isinstance(cand, str) and os.path.isdir(cand):
            return cand
    return folder


def inspect_command(target: str, as_json: bool = False) -> int:
    """`streamnn inspect TARGET`: print each checkpoint; 1 when a file was refused (one line each)."""
    paths = [target]
    if not os.path.exists(target):
        raise SystemExit(f"streamnn inspect: {target} does not exist; give a checkpoint "
                         "file or folder (e.g. runs/<name>/checkpoints)")
    if os.path.isdir(target):
        target = _checkpoint_folder(target)
        paths = sorted(os.path.join(target, f) for f in os.listdir(target)
                       if _is_checkpoint(f))
        if not paths:
            raise SystemExit(f"streamnn inspect: no checkpoint (*.pt) in {target}")
    infos, failed = [], 0
    for p in paths:
        try:
            infos.append(describe_checkpoint(p))
        except Exception as e:   # noqa: BLE001 - one line per refused file, then go on
            print(f"streamnn inspect: {_refusal(p, e)}", file=sys.stderr)
            failed += 1
    if as_json and infos:
        print(json.dumps(infos if len(infos) > 1 else infos[0], indent=1, default=str))
    elif infos:
        for info in infos:
            _print_info(info)
    return 1 if failed else 0
