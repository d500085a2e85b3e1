"""Writing files so that nothing is ever half-written: one atomic-write helper.

Every file pyro_vae writes (checkpoints, JSON, figures, CSV and netCDF outputs) goes
through :func:`atomic_write`: the content is written to a temporary file in the target's
folder, flushed to disk, given the permissions an ordinary ``open()`` would give it under
the process's umask, and only then moved over the target with :func:`os.replace`. A crash,
a kill or a full disk at any moment leaves either the old file or the new one, never a
mixture; the temporary file of a killed process is named so that it can be recognised
(:data:`TEMP_MARK`) and removed later by :func:`remove_temporary_files`.
"""

import hashlib
import os
import re
import tempfile
from pathlib import Path

from .errors import PyroVAEError

#: Every temporary file of :func:`atomic_write` has a name ``.<target>.<random>`` + this.
TEMP_MARK = ".pyro_vae.tmp"


def current_umask():
    """The process's file-creation mask (read without changing it for long)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path, write, binary=True, error=PyroVAEError):
    """Write ``path`` atomically with ``write(f)`` (or ``write(filename)``).

    :param path: the target file; its folder must exist.
    :param write: a function called with an open file object (``binary`` selects ``"wb"``
        or ``"w"``), or, when ``binary is None``, with the temporary file's name (for
        writers that open files themselves, such as matplotlib or netCDF).
    :param error: the :class:`~pyro_vae.errors.PyroVAEError` subclass raised on failure.
    :returns: the path, as a :class:`~pathlib.Path`.
    :raises error: if the folder is missing or not writable, the disk is full, or the
        writer fails (for example torch's zip writer, which raises ``RuntimeError`` on a
        full disk); the previous file at ``path``, if any, is left as it was and the
        temporary file is removed.

    The new file gets mode ``0o666 & ~umask``, as ``open()`` would create it (a plain
    :func:`tempfile.mkstemp` file would stay ``0o600`` whatever the umask).
    """
    path = Path(path)
    fd, tmp = None, None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_MARK, dir=path.parent)
        os.fchmod(fd, 0o666 & ~current_umask())
        if binary is None:
            os.close(fd)
            fd = None
            write(tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        else:
            with os.fdopen(fd, "wb" if binary else "w", **({} if binary else
                                                           {"encoding": "utf-8"})) as f:
                fd = None
                write(f)
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except (OSError, RuntimeError, ValueError) as e:
        # OSError: permissions, missing folder, full disk; RuntimeError: torch's writer
        # ("PytorchStreamWriter failed writing file"); ValueError: a writer's own check
        raise error(f"could not write {path} ({type(e).__name__}: {first_line(e)}); the "
                    "previous file there, if any, is unchanged. Check that the folder exists, "
                    "is writable and that the disk has space") from None
    finally:
        if fd is not None:
            os.close(fd)
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_text(path, text, error=PyroVAEError):
    """:func:`atomic_write` of a UTF-8 string; returns the path.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = write_text(Path(folder) / "notes.txt", "one line")
    ...     print(path.read_text(), [p.name for p in Path(folder).iterdir()])
    one line ['notes.txt']
    """
    return atomic_write(path, lambda f: f.write(text), binary=False, error=error)


#: Temporary files of the writers of pyro_vae 0.1 (``checkpoint.pt.<random>.tmp``,
#: ``eval.json.tmp``, ``loglik-k100-seed0.pt.<random>.tmp``), removed like the current ones.
LEGACY_TEMP = re.compile(r"^((checkpoint|best)\.pt\.\w+|loglik-k\d+-seed\d+\.pt\.\w+|"
                         r"(config|eval)\.json)\.tmp$")


def is_temporary_name(name):
    """Whether a file name is one of :func:`atomic_write`'s temporary files (or of pyro_vae
    0.1's writers, :data:`LEGACY_TEMP`)."""
    return name.endswith(TEMP_MARK) or bool(LEGACY_TEMP.match(name))


def temporary_files(folder):
    """The temporary files that a killed :func:`atomic_write` (or pyro_vae 0.1's writers,
    :data:`LEGACY_TEMP`) left in ``folder``; other files are never listed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.is_symlink() and
                  is_temporary_name(p.name))


def remove_temporary_files(folder):
    """Remove what :func:`temporary_files` finds (call it only while no other process
    writes to ``folder``, e.g. holding its run lock); returns the removed paths."""
    removed = []
    for p in temporary_files(folder):
        try:
            p.unlink()
            removed.append(p)
        except FileNotFoundError:
            pass
    return removed


def sha256_of(path, chunk=1 << 20):
    """The SHA-256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def first_line(e):
    """The first line of an exception's message (its type's name when it has none)."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
