"""Checkpoints as data, not code: tensors in safetensors, everything else in JSON.

A checkpoint is a directory::

    checkpoint.json              manifest: format, config, metadata, optimizer structure, RNG
                                 states, and the names of the two tensor files below
    model-<id>.safetensors       the model's ``state_dict()``
    state-<id>.safetensors       optimizer state tensors and any tensors found in ``extra``

Loading never unpickles anything: ``safetensors`` holds raw arrays and JSON holds the rest.

Atomicity.  Every file is written to a temporary name in the same directory, fsynced and moved
into place with ``os.replace``.  The tensor files carry a fresh ``<id>`` per save and the manifest
is written LAST, so ``checkpoint.json`` always names a complete, consistent set of files: a
process killed at any instant (even SIGKILL in the middle of a save) leaves the previous
checkpoint readable, and the next save removes the orphaned files.  One writer per directory.

Nested values (``extra``, optimizer state) are encoded into JSON with small tagged objects:
``{"__tensor__": key}`` (the tensor lives in ``state-<id>.safetensors`` under ``key``),
``{"__tuple__": [...]}``, ``{"__items__": [[k, v], ...]}`` for dicts with non-string keys and
``{"__float__": "inf"}`` for non-finite floats, so that a round trip restores the exact Python
types (the optimizer's ``state`` is keyed by ints, Adam's ``betas`` is a tuple).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

__all__ = [
    "save_checkpoint",
    "load_checkpoint",
    "read_checkpoint",
    "load_weights",
    "atomic_write",
    "capture_rng_state",
    "restore_rng_state",
]

FORMAT = "flowscope-checkpoint"
VERSION = 1
MANIFEST = "checkpoint.json"
_TMP = ".tmp-"
_MAX_LISTED = 5


# ----------------------------------------------------------------------------- atomic files


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable (POSIX); directories cannot be opened for fsync on Windows."""
    if os.name == "nt":  # pragma: no cover
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Write ``path`` atomically: ``write(tmp)`` fills a temp file beside it, then fsync + rename.

    Readers see either the old file or the complete new one, never a partial write.  The temp
    file is removed if ``write`` raises.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}{_TMP}{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _write_safetensors(path: Path, tensors: dict[str, Tensor]) -> None:
    def write(tmp: Path) -> None:
        tmp.touch()  # created under the process umask...
        mode = tmp.stat().st_mode & 0o777
        save_file(tensors, str(tmp))
        os.chmod(tmp, mode)  # ...which safetensors' own 0600 file would not respect

    atomic_write(path, write)


# ----------------------------------------------------------------------------- JSON encoding


def _encode(obj: Any, tensors: dict[str, Tensor], key: str) -> Any:
    """``obj`` as JSON-able data; tensors are moved to ``tensors`` under a path-like key."""
    if isinstance(obj, Tensor):
        name, i = key, 1
        while name in tensors:  # two paths may flatten to the same key ("a/b" vs a -> b)
            name, i = f"{key}#{i}", i + 1
        tensors[name] = obj.detach()
        return {"__tensor__": name}
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else {"__float__": repr(obj)}
    if isinstance(obj, np.generic):
        return _encode(obj.item(), tensors, key)
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": obj.tolist(), "dtype": str(obj.dtype)}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _encode(dataclasses.asdict(obj), tensors, key)
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors, f"{key}/{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, tensors, f"{key}/{i}") for i, v in enumerate(obj)]
    if isinstance(obj, Mapping):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _encode(v, tensors, f"{key}/{k}") for k, v in obj.items()}
        for k in obj:
            if not (k is None or isinstance(k, (bool, int, float, str))):
                raise ValueError(f"{key}: expected dict keys that are str/int/float, got {k!r}")
        return {"__items__": [[k, _encode(v, tensors, f"{key}/{k}")] for k, v in obj.items()]}
    raise ValueError(
        f"{key}: expected JSON-able data (numbers, strings, lists, dicts, tensors), "
        f"got {type(obj).__name__}"
    )


def _decode(obj: Any, tensors: Mapping[str, Tensor]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if "__float__" in obj:
        return float(obj["__float__"])
    if "__ndarray__" in obj:
        return np.asarray(obj["__ndarray__"], dtype=obj["dtype"])
    if "__tuple__" in obj:
        return tuple(_decode(v, tensors) for v in obj["__tuple__"])
    if "__items__" in obj:
        return {k: _decode(v, tensors) for k, v in obj["__items__"]}
    return {k: _decode(v, tensors) for k, v in obj.items()}


def _safetensors_dict(tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """CPU, contiguous tensors with no shared memory (safetensors refuses aliasing, e.g. tied
    weights): a tensor whose storage was already seen is cloned."""
    out, seen = {}, set()
    for k, t in tensors.items():
        t = t.detach().cpu()
        ptr = t.untyped_storage().data_ptr() if t.numel() else None
        if not t.is_contiguous() or (ptr is not None and ptr in seen):
            t = t.contiguous().clone()
            ptr = t.untyped_storage().data_ptr()
        if ptr is not None:
            seen.add(ptr)
        out[k] = t
    return out


# ----------------------------------------------------------------------------- RNG states


def capture_rng_state() -> dict[str, Any]:
    """Every global RNG a training step may draw from: torch CPU (and CUDA when initialized),
    Python's ``random`` and numpy's legacy global generator.  Pass to ``save_checkpoint(extra=)``.
    """
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002 - the global one
    # The Mersenne-Twister words go to safetensors as int64 (uint32 is not portable there).
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": [version, torch.tensor(mt, dtype=torch.int64), gauss],
        "numpy": [
            kind,
            torch.from_numpy(keys.astype(np.int64)),
            int(pos),
            int(has_gauss),
            float(cached),
        ],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state` (accepts its JSON round trip)."""
    torch.set_rng_state(state["torch"].to(torch.uint8).cpu())
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(int(w) for w in mt), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    keys = np.asarray(keys.tolist() if isinstance(keys, Tensor) else keys, dtype=np.uint32)
    np.random.set_state((kind, keys, pos, has_gauss, cached))  # noqa: NPY002
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([t.to(torch.uint8).cpu() for t in state["cuda"]])


# ----------------------------------------------------------------------------- save / load


def save_checkpoint(
    path_dir: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    extra: Mapping[str, Any] | None = None,
    config: Any = None,
) -> Path:
    """Write a checkpoint directory atomically (see the module docstring for the layout).

    Args:
        path_dir: directory to create or update.
        model: its ``state_dict()`` goes to ``model-<id>.safetensors``.
        optimizer: its ``state_dict()`` is split: tensors to ``state-<id>.safetensors``, the
            structure (param groups, scalar hyperparameters) to the manifest.
        extra: metadata (step, best loss, schedule state, RNG states...); JSON-able values and
            tensors at any depth (tensors go to ``state-<id>.safetensors``).
        config: JSON-able description of the run (a dict or a dataclass), stored verbatim so
            that the model can be rebuilt before loading (see :func:`read_checkpoint`).

    Returns:
        ``Path(path_dir)``.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model: expected an nn.Module, got {type(model).__name__}")
    path = Path(path_dir)
    path.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex[:12]
    state_tensors: dict[str, Tensor] = {}
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
        "config": _encode(config, state_tensors, "config"),
        "extra": _encode(dict(extra or {}), state_tensors, "extra"),
        "optimizer": None,
        "files": {"model": f"model-{token}.safetensors", "state": f"state-{token}.safetensors"},
    }
    if optimizer is not None:
        manifest["optimizer"] = {
            "class": type(optimizer).__name__,
            "state_dict": _encode(optimizer.state_dict(), state_tensors, "optimizer"),
        }
    weights = _safetensors_dict(model.state_dict())
    states = _safetensors_dict(state_tensors)
    _write_safetensors(path / manifest["files"]["model"], weights)
    _write_safetensors(path / manifest["files"]["state"], states)
    # The commit point: until this rename the previous manifest (and its files) is current.
    _write_text(path / MANIFEST, json.dumps(manifest, indent=1, allow_nan=False))
    keep = set(manifest["files"].values()) | {MANIFEST}
    for f in path.iterdir():
        orphan = f.suffix == ".safetensors" and f.name.startswith(("model-", "state-"))
        if f.name not in keep and (orphan or _TMP in f.name):
            f.unlink(missing_ok=True)
    return path


def read_checkpoint(path_dir: str | Path) -> dict[str, Any]:
    """The manifest of a checkpoint (config, metadata), without loading any tensor.

    Tensors inside ``extra`` appear as ``{"__tensor__": key}`` placeholders; use
    :func:`load_checkpoint` to get them.
    """
    path = Path(path_dir)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise FileNotFoundError(
            f"path_dir: expected a flowscope checkpoint directory containing {MANIFEST}, "
            f"got {str(path)!r} ({'no such directory' if not path.is_dir() else 'no manifest'})"
        )
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"path_dir: {str(manifest_path)!r} is not a {FORMAT} manifest")
    if manifest.get("version", 0) > VERSION:
        raise ValueError(
            f"path_dir: checkpoint format version {manifest['version']} is newer than this "
            f"flowscope understands ({VERSION}); upgrade flowscope"
        )
    return manifest


def load_weights(path_dir: str | Path) -> dict[str, Tensor]:
    """The model ``state_dict`` stored in a checkpoint (CPU tensors)."""
    path = Path(path_dir)
    return load_file(str(path / read_checkpoint(path)["files"]["model"]))


def _listing(items: list[str]) -> str:
    more = f", ... and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else ""
    return ", ".join(items[:_MAX_LISTED]) + more


def _check_fits(path: Path, model: nn.Module, weights: Mapping[str, Tensor]) -> None:
    """Raise a ValueError listing the first mismatches between a checkpoint and ``model``."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    shapes = [
        f"{k}: checkpoint {tuple(weights[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in weights and weights[k].shape != expected[k].shape
    ]
    problems = [
        f"{label} ({len(items)}): {_listing(items)}"
        for label, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", shapes),
        )
        if items
    ]
    if problems:
        raise ValueError(
            f"path_dir: the checkpoint {str(path)!r} does not fit this "
            f"{type(model).__name__} (was it saved from a different architecture or "
            f"configuration?): " + "; ".join(problems)
        )


def load_checkpoint(
    path_dir: str | Path,
    model: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
) -> dict[str, Any]:
    """Load weights into ``model`` (and state into ``optimizer``) and return the metadata.

    Nothing is unpickled: tensors come from safetensors, the rest from JSON.

    Args:
        path_dir: a directory written by :func:`save_checkpoint`.
        model: receives the weights (strictly: every key, every shape); None skips them.
        optimizer: receives the optimizer state; it must hold the same parameter groups, in
            the same order, as the optimizer that was saved.

    Returns:
        ``{"config", "extra", "model_class", "saved_at", "torch"}`` with tensors restored.

    Raises:
        FileNotFoundError: no checkpoint at ``path_dir``.
        ValueError: the checkpoint does not fit ``model`` (missing/unexpected keys, shapes) or
            ``optimizer``, or ``optimizer`` was given but the checkpoint holds no optimizer state.
    """
    path = Path(path_dir)
    manifest = read_checkpoint(path)
    states = load_file(str(path / manifest["files"]["state"]))
    if model is not None:
        weights = load_file(str(path / manifest["files"]["model"]))
        _check_fits(path, model, weights)
        model.load_state_dict(weights)
    if optimizer is not None:
        if manifest["optimizer"] is None:
            raise ValueError(
                f"optimizer: the checkpoint {str(path)!r} holds no optimizer state (it was "
                "saved without one); pass optimizer=None"
            )
        _load_optimizer(path, optimizer, _decode(manifest["optimizer"]["state_dict"], states))
    meta = {k: manifest.get(k) for k in ("config", "model_class", "saved_at", "torch")}
    meta["config"] = _decode(meta["config"], states)
    meta["extra"] = _decode(manifest["extra"], states)
    return meta


def _load_optimizer(path: Path, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    saved = [len(g["params"]) for g in state["param_groups"]]
    current = [len(g["params"]) for g in optimizer.param_groups]
    if saved != current:
        raise ValueError(
            f"optimizer: the checkpoint {str(path)!r} has parameter groups of sizes {saved}, "
            f"this optimizer has {current}"
        )
    by_index = dict(enumerate(p for g in optimizer.param_groups for p in g["params"]))
    for i, s in state["state"].items():
        for name, t in s.items():
            if isinstance(t, Tensor) and t.dim() and t.shape != by_index[i].shape:
                raise ValueError(
                    f"optimizer: state {name!r} of parameter {i} has shape {tuple(t.shape)} in "
                    f"the checkpoint {str(path)!r}, the parameter has {tuple(by_index[i].shape)}"
                )
    optimizer.load_state_dict(state)
