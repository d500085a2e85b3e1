"""The advisory lock of a run folder: one process at a time trains, resumes, replaces or
evaluates a run.

Taken with ``flock`` on :data:`LOCK` inside the folder (atomic; released by the kernel
when the holder exits, however it exits); the holder writes its pid, host, start time and
command into the file, so a second process is refused with the holder named, and a lock
file left by a killed process is recognised as stale and taken over.
"""

import json
import os
import socket
import sys
import time
from pathlib import Path

from .errors import RunFolderError

#: The lock file of a run folder (present while a process holds the run, or left stale).
LOCK = ".pyro_vae-run.lock"


def in_use_message(folder, h):
    """The refusal naming the process ``h`` (a lock record) that holds ``folder``."""
    return (f"run folder {folder} is in use: process {h.get('pid', '?')} on host "
            f"{h.get('host', '?')} has held it since {h.get('since', '?')} "
            f"({h.get('command', 'a pyro_vae command')}). Wait for it to finish or stop it; two "
            "processes never write one run")


def lock_holder(folder):
    """The record of the process holding ``folder``'s lock, or ``None`` when no live process
    holds it; probes the lock without taking it or changing any file."""
    import fcntl

    path = Path(folder) / LOCK
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            try:
                return json.loads(path.read_text(encoding="utf-8") or "{}")
            except (OSError, ValueError):
                return {}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


class RunLock:
    """The advisory lock of one run folder, held by one process at a time.

    Taken with ``flock`` (atomic; released by the kernel when the holder exits, however it
    exits) on :data:`LOCK` inside the folder, into which the holder writes its pid, host,
    start time and command. Use it as a context manager, or :meth:`acquire` /
    :meth:`release`.

    :param folder: the run folder (it must exist).
    :param str command: what the holder does (shown to a process that is refused).
    :ivar dict stale: the record of a previous holder that died without releasing the lock
        (``None`` if there was none).
    :raises RunFolderError: from :meth:`acquire`, when another process holds the lock
        (naming its pid, host, start time and command) or the folder is not writable.
    """

    def __init__(self, folder, command="train"):
        self.folder = Path(folder)
        self.path = self.folder / LOCK
        self.command = command
        self.fd = None
        self.stale = None

    def _holder(self):
        try:
            return json.loads(self.path.read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError):
            return {}

    def acquire(self):
        """Take the lock or raise :class:`~pyro_vae.errors.RunFolderError`; returns self."""
        import fcntl

        if self.fd is not None:
            return self
        for _ in range(100):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as e:
                raise RunFolderError(f"cannot lock run folder {self.folder} ({e.strerror}); "
                                     "check that it exists and is writable") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise RunFolderError(in_use_message(self.folder, self._holder())) from None
            try:  # the previous holder may have removed the file between open and flock
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            previous = self._holder()
            self.stale = previous if previous.get("pid") else None
            record = {"pid": os.getpid(), "host": socket.gethostname(),
                      "since": time.strftime("%Y-%m-%d %H:%M:%S"), "command": self.command}
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
            self.fd = fd
            return self
        raise RunFolderError(f"could not lock run folder {self.folder}: its lock file kept "
                             "changing; is another process starting on it?")

    def release(self):
        """Give the lock back and remove the lock file (nothing if not held)."""
        if self.fd is None:
            return
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        os.close(self.fd)
        self.fd = None

    @property
    def held(self):
        """Whether this object holds the lock."""
        return self.fd is not None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def note_stale(lock, stream=None):
    """Print a one-line note when ``lock`` took over a stale lock."""
    if lock.stale:
        s = lock.stale
        print(f"pyro-vae: note: took over the lock of {lock.folder} left by process "
              f"{s.get('pid', '?')} on {s.get('host', '?')} ({s.get('command', '?')}, since "
              f"{s.get('since', '?')}), which no longer holds it", file=stream or sys.stderr)
