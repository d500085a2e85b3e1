"""Checkpoints: one dict of tensors and plain data, written atomically, loaded safely.

A checkpoint holds everything needed to rebuild and resume a run (nanoGPT's habit)::

    {"format": "pyro_vae.checkpoint", "version": 1,
     "config": {...},            # the resolved recipe (Config.to_dict())
     "event_shape": [784], "image_shape": [1, 28, 28],
     "model": state_dict, "optimizer": state_dict,
     "epoch": int, "step": int,  # completed epochs, optimizer steps
     "rng": {"torch": ByteTensor, "cuda": [ByteTensor...], "numpy": {...},
             "python": [...], "data": ByteTensor}}

It is written to a temporary file in the same folder, flushed to disk, then moved over
the old one with :func:`os.replace`, so a crash mid-write leaves the previous checkpoint
intact. It carries the SHA-256 digest of its content (``"digest"``), checked on load with
the finiteness of every weight and optimizer moment. It is read with ``torch.load(weights_only=True)``: a pickle that would run code is
refused, never executed.
"""

import hashlib
import pickle
from pathlib import Path

import torch

from .errors import CheckpointError
from .files import atomic_write, first_line

#: Value of the ``"format"`` key that marks a pyro_vae checkpoint.
FORMAT = "pyro_vae.checkpoint"
#: Current checkpoint version.
VERSION = 1
#: Keys every checkpoint must have.
REQUIRED_KEYS = ("format", "version", "config", "event_shape", "model", "epoch", "step")


def atomic_save(obj, path):
    """``torch.save(obj)`` to ``path`` atomically (see :func:`pyro_vae.files.atomic_write`).

    :raises CheckpointError: if the folder is not writable or the disk is full; the
        previous file at ``path``, if any, is left as it was.
    """
    return atomic_write(path, lambda f: torch.save(obj, f), error=CheckpointError)


def state_digest(state):
    """SHA-256 hex digest of a checkpoint's content: every tensor's dtype, shape and bytes
    and every plain value, walked in a fixed order (the ``"digest"`` key itself left out).

    A checkpoint stores the digest of its content when written and :func:`load_checkpoint`
    recomputes it, so a flipped bit anywhere (weights, optimizer moments, RNG states) is
    found at load time instead of surfacing later as a diverging run.
    """
    h = hashlib.sha256()

    def walk(obj):
        if isinstance(obj, torch.Tensor):
            t = obj.detach().to("cpu").contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(obj, dict):
            h.update(b"{")
            for key in sorted(obj, key=repr):
                if key == "digest":
                    continue
                h.update(repr(key).encode())
                walk(obj[key])
            h.update(b"}")
        elif isinstance(obj, (list, tuple)):
            h.update(b"[")
            for item in obj:
                walk(item)
            h.update(b"]")
        else:
            h.update(repr(obj).encode())

    walk(state)
    return h.hexdigest()


def _non_finite(tree, prefix=""):
    """Names of the floating-point tensors in ``tree`` that hold a NaN or an infinity."""
    if isinstance(tree, torch.Tensor):
        return [prefix] if tree.is_floating_point() and not bool(torch.isfinite(tree).all()) \
            else []
    if isinstance(tree, dict):
        return [n for key, value in tree.items() for n in _non_finite(value, f"{prefix}/{key}")]
    if isinstance(tree, (list, tuple)):
        return [n for i, value in enumerate(tree) for n in _non_finite(value, f"{prefix}/{i}")]
    return []


def safe_load(path, map_location="cpu"):
    """``torch.load(path, weights_only=True)`` with clear errors.

    :raises CheckpointError: if the file is missing, truncated or corrupt, or holds pickled
        objects other than tensors and plain data (refused without running them).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{path}: refused to load: it holds objects other than tensors "
                              f"and plain data, which could run code ({first_line(e)})") from None
    except Exception as e:  # noqa: BLE001 - a corrupt file can fail the unpickler in any way
        # (RuntimeError, EOFError, BadZipFile, KeyError, ...); weights_only=True has already
        # guaranteed that no code from the file ran
        raise CheckpointError(f"{path}: not a readable checkpoint; it is truncated or corrupt "
                              f"({type(e).__name__}: {first_line(e)})") from None


def save_checkpoint(state, path):
    """Write ``state`` to ``path`` atomically (see :func:`atomic_save`).

    :param dict state: tensors and plain data only (``format``/``version`` are added).
    :param path: destination file; its folder must exist.
    :raises CheckpointError: if the file cannot be written; the previous one is kept.
    """
    state = {"format": FORMAT, "version": VERSION, **state}
    state["digest"] = state_digest(state)
    atomic_save(state, path)


def load_checkpoint(path, map_location="cpu"):
    """Read a checkpoint written by :func:`save_checkpoint`.

    :param path: the checkpoint file, or a run folder holding ``checkpoint.pt``.
    :param map_location: passed to :func:`torch.load`.
    :returns: the checkpoint dict.
    :raises CheckpointError: if the file is missing, truncated or corrupt, holds pickled
        objects other than tensors and plain data (refused without running them), or is
        not a pyro_vae checkpoint.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    state = safe_load(path, map_location)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a pyro_vae checkpoint (no format={FORMAT!r} key); "
                              "it was written by another program")
    if state.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {state.get('version')!r}, "
                              f"this pyro_vae reads version {VERSION}")
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {missing}; it is incomplete")
    kinds = {"epoch": int, "step": int, "config": dict, "event_shape": list, "model": dict}
    wrong = [f"{key} is {type(state[key]).__name__}" for key, kind in kinds.items()
             if not isinstance(state[key], kind) or isinstance(state[key], bool)]
    if not wrong and (state["epoch"] < 0 or state["step"] < 0):
        wrong = [f"epoch {state['epoch']} / step {state['step']} is negative"]
    if wrong:
        raise CheckpointError(f"{path}: not a well-formed pyro_vae checkpoint ({'; '.join(wrong)}); "
                              "it was edited or written by another program")
    if "digest" in state and state_digest(state) != state["digest"]:
        raise CheckpointError(f"{path}: the checkpoint's content does not match the checksum "
                              "written with it: the file was corrupted after it was saved (a "
                              "flipped bit on disk or in a copy). Use another copy, or best.pt")
    bad = _non_finite({key: state.get(key) for key in ("model", "optimizer")})
    if bad:
        raise CheckpointError(f"{path}: {len(bad)} tensor(s) hold NaN or infinite values "
                              f"({', '.join(b.lstrip('/') for b in bad[:3])}"
                              f"{' ...' if len(bad) > 3 else ''}); the checkpoint cannot be "
                              "trained or evaluated. Use another copy, or best.pt")
    return state


def to_device(state, device):
    """``state`` (nested dicts and lists of tensors and plain data) with every tensor on
    ``device``, RNG states (uint8 tensors) left on the CPU."""
    if isinstance(state, torch.Tensor):
        return state if state.dtype == torch.uint8 else state.to(device)
    if isinstance(state, dict):
        return {key: to_device(value, device) for key, value in state.items()}
    if isinstance(state, list):
        return [to_device(value, device) for value in state]
    return state
