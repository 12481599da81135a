"""Checkpoints and final models as `.npz`: course keys `W1, b1, ..., WL, bL` in the course shapes,
`gamma{l}, beta{l}` and `running_mean{l}, running_var{l}` with batch norm, optimizer state under
`opt/`, input-normalization statistics under `norm/`, early-stopping bests under `best/` and the
rest (epoch, step, history, MLflow run id, model spec) as JSON under `meta/json`.

Written by rank 0 only, atomically: a temporary file in the same directory, fsync, then rename,
so a job killed mid-write leaves the previous checkpoint intact.
"""
from __future__ import annotations

import hashlib
import json
import re
import zipfile
from pathlib import Path

import numpy as np

from ddl.atomic import write_atomic
from ddl.params import Flat

CKPT_RE = re.compile(r"^ckpt-e(\d+)-s(\d+)\.npz$")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model."""


def bn_to_numpy(bn_state, to_host) -> dict:
    if not bn_state:
        return {}
    return {f"running_{k}": to_host(v) for k, v in bn_state.items()}


def state_to_numpy(state: dict, to_host) -> dict[str, np.ndarray]:
    """Host copies keyed "opt/<name>" (`to_host` = Backend.to_numpy); the step count t becomes
    a 0-d int64 array, so the dict can go straight into an .npz checkpoint."""
    out = {}
    for key, value in state.items():
        if isinstance(value, int):
            out[f"opt/{key}"] = np.asarray(value, dtype=np.int64)
        else:
            out[f"opt/{key}"] = np.array(to_host(value), copy=True)
    return out


def state_from_numpy(d: dict, backend, dtype: str) -> dict:
    """Inverse of `state_to_numpy`: reads the "opt/" keys of `d` (other keys are ignored), integer
    arrays back to Python ints, float arrays to backend arrays of `dtype` ('float32'/'float64')."""
    state = {}
    for key, value in d.items():
        if not key.startswith("opt/"):
            continue
        arr = np.asarray(value)
        if np.issubdtype(arr.dtype, np.integer):
            state[key[4:]] = int(arr)
        else:
            state[key[4:]] = backend.asarray(np.array(arr, dtype=dtype, copy=True))
    return state


def state_arrays(state, backend, normalizer=None) -> dict:
    """Host arrays of a TrainState under the documented keys."""
    out = dict(state.params.to_numpy(backend.to_numpy))
    out.update(bn_to_numpy(state.bn_state, backend.to_numpy))
    out.update(state_to_numpy(state.opt_state, backend.to_numpy))
    if normalizer is not None:
        out.update(normalizer.to_dict())
    if state.best is not None:
        out.update({f"best/{k}": v for k, v in state.best["params"].to_numpy(backend.to_numpy).items()})
        out.update({f"best/{k}": v for k, v in bn_to_numpy(state.best["bn_state"], backend.to_numpy).items()})
    return out


def state_meta(state, extra: dict | None = None) -> dict:
    meta = {"epoch": state.epoch, "step": state.step, "history": state.history,
            "bad_epochs": state.bad_epochs, "skipped_steps": state.skipped_steps}
    if state.best is not None:
        meta["best"] = {"cost": state.best["cost"], "epoch": state.best["epoch"]}
    meta.update(extra or {})
    return meta


def save_npz(path, arrays: dict, meta: dict) -> Path:
    """Atomic write of arrays + JSON metadata (temp file in the same directory, fsync, rename)."""
    payload = dict(arrays)
    meta = {**meta, "checksum": checksum(arrays)}
    payload["meta/json"] = np.array(json.dumps(meta, default=_json_default))
    return write_atomic(path, lambda f: np.savez(f, **payload))


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    raise TypeError(f"cannot store {type(o).__name__} in checkpoint metadata")


def load_npz(path) -> tuple[dict, dict]:
    """(arrays, meta) of a checkpoint or final model; clear errors for missing/corrupt files."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise CheckpointError(f"checkpoint {path} is not a readable .npz file ({e})") from None
    try:
        meta = json.loads(str(arrays.pop("meta/json"))) if "meta/json" in arrays else {}
    except ValueError as e:
        raise CheckpointError(f"checkpoint {path} is damaged: its meta/json is not JSON ({e})") from None
    if "checksum" in meta and meta["checksum"] != checksum(arrays):   # files before it have none
        raise CheckpointError(f"checkpoint {path} is damaged: its arrays do not match the checksum "
                              "stored when it was written")
    return arrays, meta


def checksum(arrays: dict) -> str:
    """sha256 over every array's name, dtype, shape and bytes, in name order: what makes a
    checkpoint "intact" checkable (a file cut short already fails to unzip; this catches the rest)."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def params_from(arrays: dict, layout, backend, dtype: str, prefix: str = "", path="") -> Flat:
    """The parameters of `layout` out of a checkpoint's arrays, shapes checked."""
    try:
        return Flat.from_numpy(layout, {n: arrays[prefix + n] for n in layout.names}, backend, dtype)
    except KeyError as e:
        raise CheckpointError(f"checkpoint {path} has no array {e.args[0]!r}: it was saved for a "
                              f"different network (layers {layout.names})") from None
    except ValueError as e:
        raise CheckpointError(f"checkpoint {path} does not fit this network: {e}") from None


def bn_from(arrays: dict, bn_layout, backend, dtype: str, prefix: str = ""):
    if bn_layout is None or not bn_layout.names:
        return None
    return {n: backend.asarray(arrays[f"{prefix}running_{n}"], dtype) for n in bn_layout.names}


def restore(path, state_factory, layout, bn_layout, backend, dtype: str):
    """Rebuild a TrainState from a checkpoint (`state_factory(**fields)` makes the TrainState)."""
    arrays, meta = load_npz(path)
    params = params_from(arrays, layout, backend, dtype, path=path)
    opt = state_from_numpy({k: v for k, v in arrays.items() if k.startswith("opt/")}, backend, dtype)
    best = None
    if "best" in meta:
        best = {**meta["best"], "params": params_from(arrays, layout, backend, dtype, "best/", path),
                "bn_state": bn_from(arrays, bn_layout, backend, dtype, "best/")}
    state = state_factory(params=params, opt_state=opt, bn_state=bn_from(arrays, bn_layout, backend, dtype),
                          epoch=meta.get("epoch", 0), step=meta.get("step", 0),
                          history=meta.get("history", []), best=best,
                          bad_epochs=meta.get("bad_epochs", 0), skipped_steps=meta.get("skipped_steps", 0))
    return state, meta


def checkpoint_name(epoch: int, step: int) -> str:
    return f"ckpt-e{epoch:06d}-s{step:06d}.npz"


def newest_checkpoint(directory) -> Path | None:
    """The checkpoint with the largest (epoch, step) in a run directory, or None."""
    found = checkpoints_newest_first(directory)
    return found[0] if found else None


def checkpoints_newest_first(directory) -> list[Path]:
    """A run directory's checkpoints, largest (epoch, step) first."""
    d = Path(directory) / "checkpoints"
    found = [(tuple(map(int, CKPT_RE.match(p.name).groups())), p)
             for p in d.glob("ckpt-*.npz") if CKPT_RE.match(p.name)] if d.is_dir() else []
    return [p for _, p in sorted(found, reverse=True)]


def remove_stale_temporaries(directory) -> list[Path]:
    """The temporary files of checkpoint writes a killed job never finished (.ckpt-*.tmp), removed:
    no later write can be the one that renames them."""
    d = Path(directory) / "checkpoints"
    stale = sorted(d.glob(".ckpt-*.tmp")) if d.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def prune(directory, keep: int) -> None:
    """Keep the `keep` newest checkpoints of a run directory (and no temporary file of a write that
    a killed job left: rank 0 writes one checkpoint at a time)."""
    remove_stale_temporaries(directory)
    d = Path(directory) / "checkpoints"
    found = sorted((tuple(map(int, CKPT_RE.match(p.name).groups())), p)
                   for p in d.glob("ckpt-*.npz") if CKPT_RE.match(p.name))
    for _, p in found[:-keep] if keep > 0 else []:
        p.unlink(missing_ok=True)
