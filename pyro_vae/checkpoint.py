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
intact. It is read with ``torch.load(weights_only=True)``: a pickle that would run code is
refused, never executed.
"""

import os
import pickle
import tempfile
from pathlib import Path

import torch

from .errors import CheckpointError

#: Value of the ``"format"`` key that marks a pyro_vae checkpoint.
FORMAT = "pyro_vae.checkpoint"
#: Current checkpoint version.
VERSION = 1
#: Keys every checkpoint must have.
REQUIRED_KEYS = ("format", "version", "config", "event_shape", "model", "epoch", "step")


def atomic_save(obj, path):
    """``torch.save(obj)`` to ``path`` atomically: a temporary file in the same folder,
    flushed to disk, then moved over ``path`` with :func:`os.replace`.

    :raises CheckpointError: if the folder is not writable or the disk is full; the
        previous file at ``path``, if any, is left as it was.
    """
    path = Path(path)
    fd, tmp = None, None
    try:
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            fd = None
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise CheckpointError(f"could not write {path} ({e}); "
                              "the previous checkpoint, if any, is unchanged") from None
    finally:
        if fd is not None:
            os.close(fd)
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


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
                              f"and plain data, which could run code ({_first_line(e)})") from None
    except Exception as e:  # noqa: BLE001 - a corrupt file can fail the unpickler in any way
        # (RuntimeError, EOFError, BadZipFile, KeyError, ...); weights_only=True has already
        # guaranteed that no code from the file ran
        raise CheckpointError(f"{path}: not a readable checkpoint; it is truncated or corrupt "
                              f"({type(e).__name__}: {_first_line(e)})") from None


def _first_line(e):
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def save_checkpoint(state, path):
    """Write ``state`` to ``path`` atomically (see :func:`atomic_save`).

    :param dict state: tensors and plain data only (``format``/``version`` are added).
    :param path: destination file; its folder must exist.
    :raises CheckpointError: if the file cannot be written; the previous one is kept.
    """
    atomic_save({"format": FORMAT, "version": VERSION, **state}, path)


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
    return state
