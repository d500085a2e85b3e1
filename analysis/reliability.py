#!/usr/bin/env python
"""An adversarial reliability pass over the ``pyro-vae`` command line.

What it does
------------
It plays a new user who points the tool at their own project folder and breaks it in
every way they plausibly could: bad flags for every command, bad recipes of every kind,
bad ``.npz`` and IDX data files, ``--data-dir`` mistakes, run folders that are missing
files or hold corrupt, foreign, bit-flipped or code-carrying checkpoints, ``--out`` and
``--overwrite`` pointed at folders full of the user's own files (the current folder, the
home folder, a symbolic link...), read-only folders, paths with spaces and unicode, a
full disk, Ctrl-C and SIGKILL at awkward moments, and two processes on one run.

Each case runs in its own fresh temporary folder (the "project"; the process chdirs into
it and back), with ``HOME`` and ``XDG_CACHE_HOME`` pointed at temporary folders and
``PYRO_VAE_DATA`` unset. Almost every case runs ``pyro_vae.cli.main(argv)`` in this
process (stdout and stderr captured, Pyro's param store cleared, a watchdog alarm); a
few (two concurrent trainings, SIGKILL and SIGINT during training, absurd sizes that
could exhaust memory) run ``python -m pyro_vae`` as a subprocess with a time limit and,
where needed, an address-space limit. A handful of small runs are trained once per
session and *copied* into the cases that need an existing run.

A "kill" simulated in-process raises an exception that nothing in pyro_vae catches
(``BaseException``) at the chosen moment; where a real SIGKILL would leave a temporary
file behind, the case keeps the tool's clean-up from removing it, so the folder looks as
a killed process would leave it. A full disk is simulated by making ``torch.save`` raise
``RuntimeError("PytorchStreamWriter failed writing file")`` (what torch raises) or a
writer raise ``OSError(ENOSPC)``; Ctrl-C by raising ``KeyboardInterrupt`` from a function
the command calls. Read-only folders are tested with the effective user switched to
``nobody`` when this runs as root (root ignores permission bits).

Every verdict is decided by code, never by eye:

``ok``
    behaved as a trustworthy tool should, including refusing with a clear message;
``DATA LOSS``
    a file the user owned (anything the case created that pyro_vae did not write; checked
    with SHA-256 snapshots before and after) was deleted or changed, or a run folder was
    destroyed or overwritten when it should not have been;
``TRACEBACK``
    an exception escaped ``cli.main`` (or a subprocess crashed), or stderr holds
    "Traceback";
``SILENTLY WRONG``
    exit 0 (or an answer that never came) although the result is wrong, or something was
    assumed without saying so;
``UNCLEAR ERROR``
    a non-zero exit whose message does not name what was wrong (the flag, key, path or
    value) or what to do, e.g. a raw numpy/torch/json message, or an internal parameter
    name such as ``num_particles`` where the user typed ``--k``.

"Clear error" means: a non-zero exit and a message on stderr that names the offending
thing. A ``HARNESS ERROR`` marks a case whose own machinery failed (fix the case).

Rerun
-----
::

    python analysis/reliability.py --out analysis/RELIABILITY.md
    python analysis/reliability.py --only npz          # cases whose id/category/text match
    python analysis/reliability.py --list              # list the cases, run nothing

It takes a few minutes on 2 CPU cores and always exits 0 (it is a report); the summary
counts are printed to stdout and the Markdown table is written to ``--out``.
"""

import argparse
import contextlib
import copy
import datetime
import errno
import gzip
import hashlib
import io
import json
import math
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

OK = "ok"
LOSS = "DATA LOSS"
TB = "TRACEBACK"
WRONG = "SILENTLY WRONG"
UNCLEAR = "UNCLEAR ERROR"
HARNESS = "HARNESS ERROR"
VERDICTS = (OK, LOSS, TB, WRONG, UNCLEAR, HARNESS)

#: the umask every case runs under (unless it sets its own)
UMASK = 0o022

#: small settings shared by most trainings (fast on 2 CPU cores)
SMALL = ["--batch-size", "200", "--latent-dim", "4", "--set", "model.hidden=[16]",
         "--set", "eval.k=5", "--device", "cpu", "--quiet"]

#: the same settings as a recipe (for cases that write their own recipe file)
SMALL_RECIPE = {
    "name": "my_recipe",
    "model": {"prior": "standard_normal", "guide": "diagonal_normal",
              "likelihood": "bernoulli", "latent_dim": 4, "hidden": [16]},
    "data": {"name": "digits", "binarization": "dynamic"},
    "train": {"epochs": 1, "batch_size": 200, "lr": 1e-3, "seed": 0},
    "eval": {"k": 5},
}

DELETE = object()  # a recipe value that removes the key

SESSION = None      # Path of this session's temporary folder (set in main)
BASE_RUNS = {}      # name -> Path of a trained run, filled lazily
NPZ_BYTES = {}      # name -> bytes of data files used by the base runs

# imported in main() once the environment is set
torch = pyro = np = cli = None


class SimulatedKill(BaseException):
    """Raised inside pyro_vae to stand for SIGKILL at that moment."""


class CaseTimeout(BaseException):
    """Raised by the watchdog alarm when an in-process command runs too long."""


class HarnessError(Exception):
    """The harness itself failed (not the tool)."""


# --------------------------------------------------------------------------------------
# outcomes of one command


@dataclass
class Outcome:
    argv: list
    rc: object = None            # exit status (None: no status: timed out / exception)
    out: str = ""
    err: str = ""
    exc: str = ""                # "Type: message" of an exception that escaped main
    tb: str = ""
    seconds: float = 0.0
    timed_out: bool = False
    timeout: float = 0.0
    killed: bool = False         # a SimulatedKill (or a kill sent by the case) ended it
    crashed_signal: int = 0      # a subprocess ended by a signal the case did not send
    warnings: list = field(default_factory=list)
    subprocess: bool = False

    @property
    def traceback(self):
        return bool(self.exc) or "Traceback (most recent call last)" in self.err \
            or bool(self.crashed_signal)

    @property
    def text(self):
        """Everything the user saw (stdout, stderr, warnings)."""
        return "\n".join([self.out, self.err] + list(self.warnings))

    @property
    def message(self):
        """The first line of the error message (or of the output)."""
        lines = [l.strip() for l in self.err.splitlines() if l.strip()]
        for l in lines:
            if "error" in l.lower() and not l.startswith("usage:"):
                return l
        for l in lines:
            if not l.startswith("usage:") and not l.startswith("  "):
                return l
        out = [l.strip() for l in self.out.splitlines() if l.strip()]
        return out[0] if out else ""

    def summary(self):
        if self.exc:
            return f"{self.exc} (escaped cli.main)"
        if self.crashed_signal:
            last = [l for l in self.err.splitlines() if l.strip()]
            return f"crashed with signal {self.crashed_signal}: {last[-1] if last else ''}"
        if "Traceback (most recent call last)" in self.err:
            last = [l for l in self.err.splitlines() if l.strip() and not l.startswith(" ")]
            return f"exit {self.rc}, traceback on stderr: {last[-1] if last else ''}"
        if self.timed_out:
            return f"no answer after {self.timeout:.0f} s (stopped by the harness)"
        if self.killed:
            return "killed (simulated) as planned"
        m = self.message
        return f"exit {self.rc}" + (f": {m}" if m else "")


def mentions(text, names):
    low = text.lower()
    return any(n.lower() in low for n in names)


def _alarm(signum, frame):
    raise CaseTimeout()


# --------------------------------------------------------------------------------------
# patches (simulated Ctrl-C, full disk, kills)


class Patch:
    """Replace ``obj.attr`` for the duration of a command; ``action(patch, orig, *a, **k)``
    decides what each call does. ``hits`` counts the calls where it acted."""

    def __init__(self, obj, attr, action, label, required=True):
        self.obj, self.attr, self.action, self.label = obj, attr, action, label
        self.required = required
        self.hits = 0
        self.calls = 0
        self.state = {}

    def __enter__(self):
        self.orig = getattr(self.obj, self.attr)
        patch, orig = self, self.orig

        def replacement(*a, **k):
            patch.calls += 1
            return patch.action(patch, orig, *a, **k)

        setattr(self.obj, self.attr, replacement)
        return self

    def __exit__(self, *exc):
        setattr(self.obj, self.attr, self.orig)
        return False


def fire_at(obj, attr, do, nth=1, when=None, label=None, required=True):
    """A patch whose ``nth`` call matching ``when(*a, **k)`` runs ``do(orig, *a, **k)``
    (e.g. raising); other calls go through."""

    def action(p, orig, *a, **k):
        if when is None or when(*a, **k):
            p.state["n"] = p.state.get("n", 0) + 1
            if p.state["n"] == nth:
                p.hits += 1
                return do(orig, *a, **k)
        return orig(*a, **k)

    return Patch(obj, attr, action, label or f"{getattr(obj, '__name__', obj)}.{attr}", required)


def raiser(exc_factory):
    def do(orig, *a, **k):
        raise exc_factory()
    return do


def enospc():
    return OSError(errno.ENOSPC, "No space left on device")


def torch_disk_full():
    return RuntimeError("[enforce fail at inline_container.cc:595] . PytorchStreamWriter "
                        "failed writing file data/3: file write failed")


# --------------------------------------------------------------------------------------
# one case's sandbox


def sha(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def files_under(root):
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in filenames:
            p = Path(dirpath) / name
            if p.is_file() and not p.is_symlink():
                out.append(p)
    return out


@contextlib.contextmanager
def as_nobody():
    """The effective user ``nobody`` (as root); otherwise nothing changes."""
    if os.geteuid() != 0:
        yield
        return
    import pwd
    pw = pwd.getpwnam("nobody")
    os.setegid(pw.pw_gid)
    os.seteuid(pw.pw_uid)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


class Ctx:
    """A case's sandbox: ``root/proj`` (the current folder), ``root/home``, ``root/cache``."""

    def __init__(self, case):
        self.case = case
        self.root = Path(tempfile.mkdtemp(prefix=f"{case.id}-", dir=SESSION / "cases"))
        os.chmod(self.root, 0o755)
        self.proj = self.root / "proj"
        self.home = self.root / "home"
        self.cache = self.root / "cache"
        for d in (self.proj, self.home, self.cache):
            d.mkdir()
        os.chmod(self.home, 0o777)
        os.chmod(self.cache, 0o777)
        self.outcomes = []
        self.tool_dirs = []        # run folders copied from base runs (not the user's)
        self.snapshot = None       # path -> sha of the user's files, at the first command
        self.protected = {}        # path -> sha that must survive (explicit)
        self.allowed = set()       # user files the case allows the tool to change
        self.env = {}
        self.patches = []
        self.procs = []

    # ---- setup helpers
    def p(self, rel):
        return self.proj / rel

    def rel(self, path):
        try:
            return str(Path(path).relative_to(self.root))
        except ValueError:
            return str(path)

    def write(self, rel, data):
        path = self.p(rel) if not Path(rel).is_absolute() else Path(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, str):
            path.write_text(data, encoding="utf-8")
        else:
            path.write_bytes(data)
        if self.snapshot is not None:
            self.snapshot[path] = sha(path)
        return path

    def npz(self, rel, **arrays):
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return self.write(rel, buf.getvalue())

    def recipe(self, rel="my.toml", raw=None, **tables):
        return self.write(rel, raw if raw is not None else recipe_text(**tables))

    def copy_run(self, name, rel="run"):
        src = base_run(name)
        dest = self.p(rel) if not Path(rel).is_absolute() else Path(rel)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(src, dest, symlinks=True)
        self.tool_dirs.append(dest)
        return dest

    def protect(self, path):
        """Every file now under ``path`` (a run folder, say) must survive unchanged."""
        path = Path(path)
        for f in ([path] if path.is_file() else files_under(path)):
            self.protected[f] = sha(f)

    def allow(self, path):
        self.allowed.add(Path(path))

    def _take_snapshot(self):
        if self.snapshot is not None:
            return
        self.snapshot = {}
        tool = [d.resolve() for d in self.tool_dirs]
        for f in files_under(self.root):
            if f.is_relative_to(self.cache):
                continue
            if any(f.resolve().is_relative_to(d) for d in tool):
                continue
            self.snapshot[f] = sha(f)

    def data_loss(self):
        """Descriptions of user files deleted or changed."""
        problems = []
        watched = dict(self.snapshot or {})
        watched.update(self.protected)
        for f, digest in sorted(watched.items()):
            if f in self.allowed:
                continue
            if not f.exists():
                problems.append(f"deleted {self.rel(f)}")
            elif f.is_file() and sha(f) != digest:
                problems.append(f"changed {self.rel(f)}")
        return problems

    # ---- running the tool
    def _environ(self):
        env = dict(os.environ)
        env.pop("PYRO_VAE_DATA", None)
        env.update(HOME=str(self.home), XDG_CACHE_HOME=str(self.cache),
                   MPLCONFIGDIR=str(SESSION / "mpl"), PYTHONUNBUFFERED="1")
        env.update(self.env)
        return env

    def cli(self, *argv, patches=(), timeout=120, cwd=None, user=None, umask=None):
        """``cli.main(argv)`` in this process, in the sandbox."""
        argv = [str(a) for a in argv]
        self._take_snapshot()
        o = Outcome(argv=argv, timeout=timeout)
        out, err = io.StringIO(), io.StringIO()
        saved_env, saved_cwd = dict(os.environ), os.getcwd()
        old_umask = os.umask(UMASK if umask is None else umask)
        old_handler = signal.signal(signal.SIGALRM, _alarm)
        pyro.clear_param_store()
        t0 = time.perf_counter()
        try:
            os.environ.clear()
            os.environ.update(self._environ())
            os.chdir(self.proj / cwd if cwd else self.proj)
            with contextlib.ExitStack() as stack:
                for p in patches:
                    stack.enter_context(p)
                    self.patches.append(p)
                w = stack.enter_context(warnings.catch_warnings(record=True))
                warnings.simplefilter("always")
                stack.enter_context(contextlib.redirect_stdout(out))
                stack.enter_context(contextlib.redirect_stderr(err))
                if user == "nobody":
                    stack.enter_context(as_nobody())
                signal.setitimer(signal.ITIMER_REAL, timeout)
                try:
                    o.rc = cli.main(argv)
                except SystemExit as e:
                    o.rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
                finally:
                    signal.setitimer(signal.ITIMER_REAL, 0)
                o.warnings = [f"{x.category.__name__}: {x.message}" for x in w]
        except CaseTimeout:
            o.timed_out = True
        except SimulatedKill:
            o.killed = True
        except BaseException as e:  # noqa: BLE001 - anything escaping main is the finding
            o.exc = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
            o.tb = traceback.format_exc()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old_handler)
            os.umask(old_umask)
            os.chdir(saved_cwd)
            os.environ.clear()
            os.environ.update(saved_env)
            o.seconds = time.perf_counter() - t0
            o.out, o.err = out.getvalue(), err.getvalue()
            try:
                import matplotlib.pyplot as plt
                plt.close("all")
            except Exception:  # noqa: BLE001
                pass
        self.outcomes.append(o)
        return o

    def spawn(self, *argv, mem_gb=None):
        """Start ``python -m pyro_vae argv`` in the background (own process group)."""
        self._take_snapshot()
        cmd = [sys.executable, "-m", "pyro_vae", *[str(a) for a in argv]]
        proc = subprocess.Popen(cmd, cwd=self.proj, env=self._environ(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
        if mem_gb:
            import resource
            limit = int(mem_gb * 2 ** 30)
            try:
                resource.prlimit(proc.pid, resource.RLIMIT_AS, (limit, limit))
            except (OSError, ValueError):
                pass
        proc.argv = [str(a) for a in argv]
        proc.t0 = time.perf_counter()
        proc.sent = None
        self.procs.append(proc)
        return proc

    def finish(self, proc, timeout=60):
        """Wait for a spawned process; returns its Outcome."""
        o = Outcome(argv=proc.argv, timeout=timeout, subprocess=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            o.timed_out = True
        o.out, o.err = out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
        o.rc = None if o.timed_out else proc.returncode
        if o.rc is not None and o.rc < 0:
            if proc.sent == -o.rc:
                o.killed = True
            else:
                o.crashed_signal = -o.rc
        o.seconds = time.perf_counter() - proc.t0
        self.outcomes.append(o)
        return o

    def sub(self, *argv, timeout=60, mem_gb=None):
        return self.finish(self.spawn(*argv, mem_gb=mem_gb), timeout=timeout)

    def kill(self, proc, sig):
        proc.sent = sig
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass

    def cleanup(self):
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.communicate()


def wait_for(pred, timeout, step=0.05):
    end = time.time() + timeout
    while time.time() < end:
        try:
            if pred():
                return True
        except Exception:  # noqa: BLE001 - files appear and vanish while a run writes
            pass
        time.sleep(step)
    return False


# --------------------------------------------------------------------------------------
# verdict helpers: each returns (verdict, note)


def expect_error(o, names, forbid=(), hint=(), what=""):
    """A clear refusal: non-zero exit, a message naming one of ``names``, none of
    ``forbid`` (internal names, misleading advice) and, if given, one of ``hint``."""
    if o.timed_out:
        return WRONG, f"accepted{(' ' + what) if what else ''} and kept running"
    if o.killed:
        return OK, ""
    if o.rc == 0:
        return WRONG, f"exit 0: accepted{(' ' + what) if what else ''} without a word"
    msg = o.err if o.err.strip() else o.out
    if not msg.strip():
        return UNCLEAR, f"exit {o.rc} with no message at all"
    if names and not mentions(msg, names):
        return UNCLEAR, f"message does not name {names[0]!r}"
    bad = [f for f in forbid if f.lower() in msg.lower()]
    if bad:
        return UNCLEAR, f"message says {bad[0]!r}"
    if hint and not mentions(msg, hint):
        return UNCLEAR, f"message says nothing like {hint[0]!r}"
    return OK, ""


def expect_success(o, check=None):
    """Exit 0, and ``check()`` (if given) returns no problem."""
    if o.timed_out:
        return WRONG, "never finished"
    if o.rc != 0:
        return UNCLEAR, "refused valid input"
    if check is not None:
        problem = check()
        if problem:
            return WRONG, problem
    return OK, ""


def expect_ok_or_error(o, names, check=None, forbid=()):
    """Either works (exit 0, ``check`` passes) or refuses clearly."""
    if o.rc == 0 and not o.timed_out:
        return expect_success(o, check)
    return expect_error(o, names, forbid=forbid)


def expect_refuse_or_state(o, names, forbid=(), what=""):
    """Refuses clearly, or goes on and says so (one of ``names`` in its output)."""
    if o.rc == 0 and not o.timed_out:
        if mentions(o.text, names):
            return OK, "accepted and stated it"
        return WRONG, f"exit 0: {what or 'accepted'} without saying so"
    return expect_error(o, names, forbid=forbid, what=what)


def expect_interrupted(o, names=("interrupt", "ctrl-c")):
    if o.rc == 0:
        return WRONG, "exit 0 after Ctrl-C"
    if o.timed_out:
        return WRONG, "kept running after Ctrl-C"
    if not mentions(o.err, names):
        return UNCLEAR, "no message about the interruption"
    return OK, ""


# --------------------------------------------------------------------------------------
# data and recipe builders


def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(v)


def recipe_text(**tables):
    """The small recipe with ``tables`` merged in (``name="..."``, ``model={...}``,
    ``train={...}``; a value :data:`DELETE` removes the key)."""
    d = copy.deepcopy(SMALL_RECIPE)
    for key, value in tables.items():
        if isinstance(value, dict) and isinstance(d.get(key), dict):
            for k, v in value.items():
                if v is DELETE:
                    d[key].pop(k, None)
                else:
                    d[key][k] = v
        elif value is DELETE:
            d.pop(key, None)
        else:
            d[key] = value
    lines = [f"{k} = {toml_value(v)}" for k, v in d.items() if not isinstance(v, dict)]
    for k, v in d.items():
        if isinstance(v, dict):
            lines += ["", f"[{k}]"] + [f"{kk} = {toml_value(vv)}" for kk, vv in v.items()]
    return "\n".join(lines) + "\n"


_DIGITS = None


def digits_uint8():
    """scikit-learn's digits as uint8 images (1797, 8, 8) in 0..255, and labels."""
    global _DIGITS
    if _DIGITS is None:
        from sklearn.datasets import load_digits
        b = load_digits()
        _DIGITS = (np.round(b.images * (255 / 16)).astype(np.uint8), b.target.astype(np.int64))
    return _DIGITS


def npz_arrays(layout="NHW", n_train=300, n_test=100, dtype="uint8"):
    """Train/test arrays of digit images in a given layout and dtype."""
    x, _ = digits_uint8()
    train, test = x[:n_train], x[n_train:n_train + n_test]

    def shape(a):
        if layout == "NHW":
            return a
        if layout == "ND":
            return a.reshape(a.shape[0], -1)
        if layout == "NCHW":
            return a[:, None]
        if layout == "NHWC":
            return a[..., None]
        if layout == "NHWC3":
            return np.repeat(a[..., None], 3, axis=-1)
        raise ValueError(layout)

    train, test = shape(train), shape(test)
    if dtype == "float":
        train, test = train.astype(np.float32) / 255, test.astype(np.float32) / 255
    return {"train": train, "test": test}


def idx_images(n, h=28, w=28, seed=0, magic=0x803):
    rng = np.random.default_rng(seed)
    return struct.pack(">IIII", magic, n, h, w) + rng.integers(0, 256, n * h * w,
                                                                dtype=np.uint8).tobytes()


def idx_labels(values):
    values = np.asarray(values, dtype=np.uint8)
    return struct.pack(">II", 0x801, len(values)) + values.tobytes()


def make_idx(ctx, folder, n_train=10050, n_test=60, labels=False, train_labels=None,
             gz=False, test_hw=(28, 28)):
    """A small fake MNIST-format data set (random images) in ``proj/folder``."""
    files = {"train-images-idx3-ubyte": idx_images(n_train, seed=1),
             "t10k-images-idx3-ubyte": idx_images(n_test, *test_hw, seed=2)}
    if labels:
        files["train-labels-idx1-ubyte"] = idx_labels(
            train_labels if train_labels is not None else np.arange(n_train) % 10)
        files["t10k-labels-idx1-ubyte"] = idx_labels(np.arange(n_test) % 10)
    for name, data in files.items():
        if gz:
            ctx.write(f"{folder}/{name}.gz", gzip.compress(data, compresslevel=1))
        else:
            ctx.write(f"{folder}/{name}", data)
    return ctx.p(folder)


class Evil:
    """A pickle payload that would delete a user file if it were ever unpickled."""

    def __init__(self, victim):
        self.victim = str(victim)

    def __reduce__(self):
        return (os.remove, (self.victim,))


# --------------------------------------------------------------------------------------
# base runs, trained once per session and copied into cases


def _train_base(name):
    specs = {
        "vae": ["train", "--epochs", "2", *SMALL],
        "vae_b": ["train", "--epochs", "2", "--seed", "1", *SMALL],
        "ae": ["train", "ae", "--epochs", "1", *SMALL],
        "hier": ["train", "--epochs", "1", "--batch-size", "200", "--set",
                 "model.latent_dim=[4,2]", "--set", "model.hidden=[16]", "--set", "eval.k=5",
                 "--device", "cpu", "--quiet"],
        "cvae": ["train", "cvae", "--epochs", "1", *SMALL],
        "npz": ["train", "--data", "data.npz", "--epochs", "1", *SMALL],
    }
    where = SESSION / "base" / name
    where.mkdir(parents=True)
    dummy = type("C", (), {"id": f"base-{name}"})()
    ctx = Ctx(dummy)
    ctx.proj = where
    if name == "npz":
        rng = np.random.default_rng(5)
        buf = io.BytesIO()
        np.savez(buf, train=rng.integers(0, 256, (300, 5, 5), dtype=np.uint8),
                 test=rng.integers(0, 256, (60, 5, 5), dtype=np.uint8))
        NPZ_BYTES["npz"] = buf.getvalue()
        (where / "data.npz").write_bytes(NPZ_BYTES["npz"])
    o = ctx.cli(*specs[name], "--out", "R", timeout=300)
    run = where / "R"
    if o.rc != 0 or not (run / "checkpoint.pt").is_file():
        raise HarnessError(f"base run {name!r} could not be trained: {o.summary()}")
    for f in files_under(run):   # a run handed around as a colleague's copy: readable
        os.chmod(f, 0o644)
    return run


def base_run(name):
    if name not in BASE_RUNS:
        BASE_RUNS[name] = _train_base(name)
    return BASE_RUNS[name]


def load_ckpt(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def rewrite_ckpt(path, change):
    """Load a checkpoint (plain torch file), apply ``change(state)``, save it back with
    torch.save (as a user or another tool would)."""
    state = load_ckpt(path)
    state = change(state) or state
    torch.save(state, path)


def metrics_epochs(run):
    path = Path(run) / "metrics.jsonl"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                out.append(json.loads(line)["epoch"])
            except (ValueError, KeyError, TypeError):
                out.append("?")
    return out


def leftovers(run):
    return sorted(p.name for p in Path(run).iterdir()
                  if p.name.endswith(".tmp") or ".tmp." in p.name or p.name.endswith(".pyro_vae.tmp"))


def run_consistency(run, expect_epochs=None):
    """Problems of a run folder after a resume: leftovers, duplicated metrics, best.pt
    disagreeing with the checkpoint."""
    run = Path(run)
    problems = []
    left = leftovers(run)
    if left:
        problems.append(f"temporary files left: {', '.join(left)}")
    epochs = metrics_epochs(run)
    if len(epochs) != len(set(epochs)) or epochs != sorted(epochs):
        problems.append(f"metrics.jsonl epochs {epochs}")
    if expect_epochs is not None and epochs != list(range(1, expect_epochs + 1)):
        problems.append(f"metrics.jsonl epochs {epochs}, expected 1..{expect_epochs}")
    try:
        c = load_ckpt(run / "checkpoint.pt")
        if (run / "best.pt").is_file():
            b = load_ckpt(run / "best.pt")
            cb = (c.get("best") or {}).get("epoch")
            if cb != b.get("epoch"):
                problems.append(f"checkpoint.pt says best epoch {cb}, best.pt holds epoch "
                                f"{b.get('epoch')}")
    except Exception as e:  # noqa: BLE001
        problems.append(f"checkpoint unreadable after resume ({type(e).__name__})")
    return "; ".join(problems)


def modes(paths):
    return {Path(p).name: oct(os.stat(p).st_mode & 0o777) for p in paths}


def wrong_modes(paths, umask):
    want = 0o666 & ~umask
    bad = {Path(p).name: oct(os.stat(p).st_mode & 0o777) for p in paths
           if Path(p).is_file() and (os.stat(p).st_mode & 0o777) != want}
    if not bad:
        return ""
    items = ", ".join(f"{k} {v}" for k, v in sorted(bad.items())[:4])
    return f"modes {items}{' ...' if len(bad) > 4 else ''} (umask {oct(umask)} wants {oct(want)})"
