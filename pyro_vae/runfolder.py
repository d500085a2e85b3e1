"""Run folders that never lose a user's files: the marker, the lock, safe replacement.

A folder is a run folder only when pyro_vae marked it so when it created it: the marker
file :data:`MARKER` (JSON naming the tool, the run's id, when and by whom it was made).
Folders that merely hold a ``config.json`` or a ``checkpoint.pt`` are never treated as
runs to be replaced. Replacing a run (``--overwrite``) removes only the files pyro_vae
writes into run folders (:data:`RUN_FILES`) and refuses, listing them, when the folder
holds anything else; no folder is ever removed, so the current folder, the home folder
and the folders above a run are safe by construction.

A process that trains, resumes or replaces a run holds its lock (:class:`RunLock`): an
advisory ``flock`` on :data:`LOCK`, taken atomically, which records the holder's pid,
host, start time and command. A second process is refused with the holder named. The
kernel releases the lock when its holder dies however it dies, so a lock file left by a
killed process is recognised as stale and taken over.
"""

import fnmatch
import json
import os
import socket
import time
import uuid
from pathlib import Path

from . import __version__
from .errors import RunFolderError
from .files import is_temporary_name, remove_temporary_files, write_text
from .lock import LOCK, RunLock, in_use_message, lock_holder

#: The file that marks a folder as a pyro_vae run folder (written when the run is created).
MARKER = ".pyro_vae-run.json"


#: Name patterns of the files pyro_vae writes into a run folder; ``--overwrite`` removes
#: these and nothing else.
RUN_FILES = ("config.json", "checkpoint.pt", "best.pt", "metrics.jsonl", "eval.json",
             "loglik-k*-seed*.pt", "samples.png", "reconstructions.png", "curves.png",
             "layers.png", "samples-*.png", "layers-*.png", "latents.nc",
             "events.out.tfevents.*", MARKER, LOCK)


#: The marker command of a packed (pretrained) folder (see :mod:`pyro_vae.pack`).
PACK_COMMAND = "pack"


def is_packed(path):
    """Whether ``path`` is a packed folder (:func:`pyro_vae.pack.pack_run`): the evaluated
    weights in ``best.pt``, no ``checkpoint.pt``."""
    marker = read_marker(path)
    return marker is not None and marker.get("command") == PACK_COMMAND


def is_run_folder(path):
    """Whether ``path`` is a folder that pyro_vae marked as a run folder."""
    return read_marker(path) is not None


def read_marker(path):
    """The marker record of the run folder ``path`` (a dict), or ``None`` if unmarked."""
    marker = Path(path) / MARKER
    try:
        record = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("tool") == "pyro_vae" else None


def write_marker(path, command="train"):
    """Mark ``path`` as a run folder of this process (atomically); returns the record."""
    record = {"tool": "pyro_vae", "version": __version__, "run_id": uuid.uuid4().hex,
              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": socket.gethostname(),
              "pid": os.getpid(), "command": command}
    write_text(Path(path) / MARKER, json.dumps(record, indent=2) + "\n", error=RunFolderError)
    return record


def is_project_file(path):
    """Whether a file inside a run folder is one pyro_vae writes there (:data:`RUN_FILES`,
    or a temporary file of its atomic writer)."""
    path = Path(path)
    if path.is_symlink() or not path.is_file():
        return False
    return is_temporary_name(path.name) or \
        any(fnmatch.fnmatchcase(path.name, pattern) for pattern in RUN_FILES)


def foreign_entries(folder):
    """The entries of ``folder`` that pyro_vae did not write (sub-folders, links and files
    outside :data:`RUN_FILES`), sorted."""
    return sorted(p for p in Path(folder).iterdir() if not is_project_file(p))


def _protected(folder):
    """Why ``folder`` may never be replaced, or ``None``: the current folder, the home
    folder, a folder above the current one, or the file-system root."""
    real = Path(os.path.realpath(folder))
    cwd = Path.cwd().resolve()
    if real == cwd:
        return "it is the current folder"
    if real == Path.home().resolve():
        return "it is your home folder"
    if real in cwd.parents:
        return "it holds the current folder"
    if real == Path(real.anchor):
        return "it is the root of the file system"
    return None


def _listing(paths, limit=8):
    names = [p.name + ("/" if p.is_dir() and not p.is_symlink() else "") for p in paths]
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit
                                       else "")


def check_run_folder(out, overwrite=False, locked=False):
    """See :func:`_check_run_folder`; an operating-system error (a name too long, a
    folder that cannot be read) becomes a :class:`~pyro_vae.errors.RunFolderError`.

    :param bool locked: this process holds the folder's lock already (no probe)."""
    try:
        return _check_run_folder(out, overwrite, locked)
    except OSError as e:
        raise RunFolderError(f"--out {str(out)[:200]}: {e.strerror or e}; choose another "
                             "--out") from None


def _check_run_folder(out, overwrite=False, locked=False):
    """Check that a new run may be written to ``out``, changing nothing on disk.

    :returns: True if ``out`` holds a run that ``overwrite`` will replace.
    :raises RunFolderError: if ``out`` is a file; a non-empty folder without
        ``overwrite``; with ``overwrite``, a folder that pyro_vae did not mark as a run
        (whatever it holds), a run folder that holds files pyro_vae did not write (they are
        listed), a symbolic link, or the current, home or root folder or one above the
        current folder when anything in it would be removed.
    """
    out = Path(out)
    if out.is_symlink() and overwrite:
        raise RunFolderError(f"--out {out} is a symbolic link (to {os.path.realpath(out)}); "
                             "--overwrite does not replace a run through a link. Give the "
                             "folder itself, or choose another --out")
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"{out} exists and is not a folder; choose another --out")
    if not out.is_dir():
        return False
    entries = [p for p in out.iterdir() if p.name != LOCK]
    if not entries:
        return False
    if not overwrite:
        raise RunFolderError(f"run folder {out} already exists and is not empty; pass "
                             f"--overwrite to replace a run there, --resume {out} to continue "
                             "it, or choose another --out")
    if not is_run_folder(out):
        legacy = any((out / name).is_file() for name in ("checkpoint.pt", "config.json"))
        raise RunFolderError(
            f"{out} is not a run folder made by pyro_vae (it has no {MARKER}, which pyro_vae "
            f"writes when it creates a run), so --overwrite deletes nothing in it "
            f"(it holds: {_listing(entries)}). "
            + ("If it is a run of pyro_vae 0.1, delete it yourself or resume it with --resume "
               "(which marks it). " if legacy else "") + "Choose another --out")
    holder = None if locked else lock_holder(out)
    if holder is not None:
        raise RunFolderError(in_use_message(out, holder))
    foreign = foreign_entries(out)
    if foreign:
        raise RunFolderError(f"{out} is a run folder, but it also holds files pyro_vae did not "
                             f"write: {_listing(foreign)}; --overwrite would leave them beside a "
                             "new run, so it changes nothing. Move them elsewhere, or choose "
                             "another --out")
    why = _protected(out)
    if why:
        raise RunFolderError(f"--out {out}: {why}; pyro_vae does not replace a run there. "
                             "Choose another --out")
    return True


def create_run_folder(out, overwrite=False, command="train"):
    """Create (or, with ``overwrite``, replace) the run folder ``out``, mark it and lock it.

    The checks of :func:`check_run_folder` are repeated under the lock, so two processes
    started on one new folder cannot both write it. Replacing removes only the files
    pyro_vae wrote (:data:`RUN_FILES`) and never a folder.

    :returns: the held :class:`RunLock` (release it when the run ends).
    :raises RunFolderError: see :func:`check_run_folder` and :class:`RunLock`.
    """
    out = Path(out)
    check_run_folder(out, overwrite)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunFolderError(f"cannot create run folder {str(out)[:200]} ({e.strerror}); choose "
                             "another --out") from None
    lock = RunLock(out, command).acquire()
    try:
        replace = check_run_folder(out, overwrite, locked=True)
        if replace:
            for p in sorted(out.iterdir()):
                if p.name != LOCK and is_project_file(p):
                    p.unlink()
        remove_temporary_files(out)
        write_marker(out, command)
    except BaseException:
        lock.release()
        raise
    return lock


def create_unique_run_folder(base, command="train"):
    """Create, mark and lock a new run folder named ``base``, or ``base-2``, ``base-3``, ...
    when that name is taken (two runs started in the same second with the same recipe
    each get their own folder; the folder is made with an exclusive ``mkdir``).

    :returns: ``(folder, lock)``.
    :raises RunFolderError: if no folder can be created there.
    """
    base = Path(base)
    for i in range(1, 1000):
        out = base if i == 1 else base.with_name(f"{base.name}-{i}")
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.mkdir()
        except FileExistsError:
            continue
        except OSError as e:
            raise RunFolderError(f"cannot create run folder {str(out)[:200]} ({e.strerror}); "
                                 "choose another --out") from None
        return out, create_run_folder(out, False, command)
    raise RunFolderError(f"{base}-2 ... {base}-999 all exist; choose --out")


def open_run_folder(run_dir, command="resume"):
    """Lock an existing run folder to continue it: refuses a folder that is not a run, marks
    a run of pyro_vae 0.1 (which had no marker), removes temporary files of killed writes.

    :returns: the held :class:`RunLock`.
    :raises RunFolderError: if ``run_dir`` is not a run folder, is a packed folder or is in
        use.
    """
    run_dir = Path(run_dir)
    check_resumable(run_dir)
    lock = RunLock(run_dir, command).acquire()
    try:
        if not is_run_folder(run_dir):
            write_marker(run_dir, command)
        remove_temporary_files(run_dir)
    except BaseException:
        lock.release()
        raise
    return lock


def check_resumable(run_dir):
    """Check that ``run_dir`` is a run folder that training can continue.

    :raises RunFolderError: as :func:`check_run_argument`, or for a packed folder (no
        optimizer or RNG states to continue from).
    """
    check_run_argument(run_dir, "--resume")
    if is_packed(run_dir):
        raise RunFolderError(f"{run_dir} is a packed (pretrained) folder: it holds the weights "
                             "its evaluation used, without the optimizer and RNG states "
                             "training continues from, so it cannot be resumed; train a new "
                             "run (--out) instead")


def check_run_argument(path, flag="RUN"):
    """Check that ``path`` names a run folder (holding ``checkpoint.pt``, or ``best.pt`` in a
    packed folder), before any work.

    :raises RunFolderError: for a checkpoint file given instead of its folder (the message
        names the folder to give), a missing path, a file, or a folder without a checkpoint.
    """
    path = Path(path)
    if path.is_file():
        if path.suffix == ".pt" and (path.parent / "checkpoint.pt").is_file():
            raise RunFolderError(f"{flag} {path} is a file; give its run folder instead: "
                                 f"{path.parent}")
        raise RunFolderError(f"{flag} {path} is a file, not a run folder; give the folder that "
                             "pyro-vae train wrote")
    if not path.is_dir():
        raise RunFolderError(f"{flag} {path}: no such run folder")
    checkpoint = path / "checkpoint.pt"
    if checkpoint.exists() and not checkpoint.is_file():
        raise RunFolderError(f"{flag} {path}: its checkpoint.pt is a folder, not a checkpoint file; "
                             "move it aside")
    if not checkpoint.is_file() and is_packed(path) and (path / "best.pt").is_file():
        return  # a packed folder: its weights are in best.pt
    if not checkpoint.is_file():
        if is_run_folder(path):
            raise RunFolderError(f"{flag} {path} was created by pyro-vae train, but no epoch "
                                 "completed there, so there is no checkpoint.pt; start it "
                                 f"again with  pyro-vae train --out {path} --overwrite")
        raise RunFolderError(f"{flag} {path} is not a run folder: it has no checkpoint.pt "
                             "(pyro-vae train writes one after the first epoch)")


def prepare_run_folder(out, overwrite=False):
    """Create (or replace) and mark the run folder ``out`` for a :class:`~pyro_vae.run.Run`
    built in a script; the lock is released on return (hold one with
    :func:`create_run_folder` while training, as ``pyro-vae train`` does).

    :returns: ``out`` as a :class:`~pathlib.Path`.
    :raises RunFolderError: see :func:`check_run_folder`.
    """
    create_run_folder(out, overwrite, "python").release()
    return Path(out)
