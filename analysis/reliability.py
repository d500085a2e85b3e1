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
the command calls. Read-only folders are made immutable with ``chattr +i`` when this runs
as root (root ignores permission bits), else with ``chmod a-w``.

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
        """The first line of the tool's message: on success the first line of stdout;
        otherwise its ``pyro-vae...`` line on stderr, else an ``error:`` line, else the
        first line of stderr that is not a Python warning."""
        out = [l.strip() for l in self.out.splitlines() if l.strip()]
        lines = [l.strip() for l in self.err.splitlines() if l.strip()]
        if self.rc == 0 and out:
            return out[0]
        for test in (lambda l: l.startswith("pyro-vae") and "error" in l,
                     lambda l: l.startswith("pyro-vae"),
                     lambda l: "error:" in l.lower() and not l.startswith("usage:"),
                     lambda l: not l.startswith("usage:") and "Warning:" not in l):
            for l in lines:
                if test(l):
                    return l
        return out[0] if out else (lines[0] if lines else "")

    def summary(self):
        if self.exc:
            return f"{self.exc} (escaped cli.main)"
        if self.crashed_signal:
            last = [l for l in self.err.splitlines() if l.strip()]
            return f"crashed with signal {self.crashed_signal}: {last[-1] if last else ''}"
        if "Traceback (most recent call last)" in self.err:
            import re
            tail = self.err.split("Traceback (most recent call last)")[-1].splitlines()
            exc = [l for l in tail if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b", l)]
            last = [l for l in tail if l.strip() and not l.startswith(" ")]
            shown = exc[-1] if exc else (last[-1] if last else "")
            return f"exit {self.rc}, traceback on stderr: {shown}"
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


def make_read_only(ctx, path):
    """Make ``path`` (a folder) read-only: immutable (``chattr +i``, which binds root too)
    when running as root, else ``chmod a-w``."""
    path = Path(path)
    if os.geteuid() == 0 and shutil.which("chattr"):
        r = subprocess.run(["chattr", "-R", "+i", str(path)], capture_output=True, text=True)
        if r.returncode != 0:
            raise HarnessError(f"chattr +i failed: {r.stderr.strip()}")
        ctx.immutable.append(path)
        return
    for f in files_under(path):
        os.chmod(f, 0o444)
    for dirpath, dirnames, filenames in os.walk(path):
        os.chmod(dirpath, 0o555)


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
        self.immutable = []
        self.shown = None          # the outcome to report (default: the last one)

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

    def cli(self, *argv, patches=(), timeout=120, cwd=None, umask=None):
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
        for path in self.immutable:
            subprocess.run(["chattr", "-R", "-i", str(path)], capture_output=True)
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
        return WRONG, f"accepted{(' ' + what) if what else ''} without a word"
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
        return WRONG, f"{what or 'accepted'} without saying so"
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
        "ae": ["train", "ae", "--epochs", "1", *SMALL, "--set", "name=autoenc"],
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


def rewrite_ckpt(path, change, reseal=True):
    """Load a checkpoint, apply ``change(state)`` and save it back with ``torch.save``.

    With ``reseal`` the checkpoint's own content digest (if it has one) is recomputed with
    pyro_vae's function, so that the case tests the change itself (NaN weights, a config
    that does not match the weights, ...) and not the digest; without a digest function the
    key is dropped (a checkpoint of an older pyro_vae)."""
    state = load_ckpt(path)
    state = change(state) or state
    if reseal and "digest" in state:
        try:
            from pyro_vae.checkpoint import state_digest
            state["digest"] = state_digest(state)
        except ImportError:
            state.pop("digest")
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
    if expect_epochs is not None and epochs != list(range(1, expect_epochs + 1)):
        problems.append(f"metrics.jsonl epochs {epochs}, expected 1..{expect_epochs}")
    elif len(epochs) != len(set(epochs)) or epochs != sorted(epochs):
        problems.append(f"metrics.jsonl epochs {epochs}")
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


def wrong_modes(paths, umask):
    want = 0o666 & ~umask
    bad = {Path(p).name: oct(os.stat(p).st_mode & 0o777) for p in paths
           if Path(p).is_file() and (os.stat(p).st_mode & 0o777) != want}
    if not bad:
        return ""
    items = ", ".join(f"{k} {v}" for k, v in sorted(bad.items())[:4])
    return f"modes {items}{' ...' if len(bad) > 4 else ''} (umask {oct(umask)} wants {oct(want)})"


# --------------------------------------------------------------------------------------
# the case registry


@dataclass
class Case:
    id: str
    category: str
    what: str
    expected: str
    fn: object


CASES = []
_COUNTS = {}


def add(prefix, category, what, expected, fn):
    _COUNTS[prefix] = _COUNTS.get(prefix, 0) + 1
    CASES.append(Case(f"{prefix}-{_COUNTS[prefix]:02d}", category, what, expected, fn))


class E:
    """Judge: a clear refusal naming one of ``names``."""

    def __init__(self, *names, forbid=(), hint=()):
        self.names, self.forbid, self.hint = names, forbid, hint
        self.expected = f"refused, naming {names[0]}" + (
            f" (not {forbid[0]!r})" if forbid else "")

    def __call__(self, ctx, o):
        return expect_error(o, self.names, self.forbid, self.hint)


class S:
    """Judge: works (and ``check(ctx, o)`` returns no problem)."""

    def __init__(self, check=None, expected="works"):
        self.check, self.expected = check, expected

    def __call__(self, ctx, o):
        return expect_success(o, None if self.check is None else lambda: self.check(ctx, o))


class OE:
    """Judge: works, or a clear refusal naming one of ``names``."""

    def __init__(self, *names, check=None, forbid=()):
        self.names, self.check, self.forbid = names, check, forbid
        self.expected = f"works, or refused naming {names[0]}"

    def __call__(self, ctx, o):
        return expect_ok_or_error(o, self.names, None if self.check is None else
                                  lambda: self.check(ctx, o), self.forbid)


class RS:
    """Judge: refused naming one of ``names``, or accepted and stated (a name in the output)."""

    def __init__(self, *names, what="", forbid=()):
        self.names, self.what, self.forbid = names, what, forbid
        self.expected = f"refused or loudly stated ({names[0]})"

    def __call__(self, ctx, o):
        return expect_refuse_or_state(o, self.names, self.forbid, self.what)


def simple(prefix, category, what, argv, judge, setup=None, timeout=120, expected=None):
    """A case that runs one in-process command. ``argv`` is a list or ``f(ctx)``."""

    def fn(ctx):
        if setup is not None:
            setup(ctx)
        args = argv(ctx) if callable(argv) else argv
        o = ctx.cli(*args, timeout=timeout)
        return judge(ctx, o)

    add(prefix, category, what, expected or judge.expected, fn)


def sub_case(prefix, category, what, argv, judge, setup=None, timeout=45, mem_gb=6,
             expected=None):
    """A case that runs ``python -m pyro_vae`` with a time and memory limit."""

    def fn(ctx):
        if setup is not None:
            setup(ctx)
        args = argv(ctx) if callable(argv) else argv
        o = ctx.sub(*args, timeout=timeout, mem_gb=mem_gb)
        return judge(ctx, o)

    add(prefix, category, what, expected or judge.expected, fn)


def T(*extra, epochs="1"):
    """``train`` with the small settings into ``run``."""
    return ["train", "--epochs", epochs, *SMALL, *extra, "--out", "run"]


def has_run(rel="run"):
    def check(ctx, o):
        if not (ctx.p(rel) / "checkpoint.pt").is_file():
            return f"exit 0 but no {rel}/checkpoint.pt"
        return None
    return check


def no_cuda():
    return not torch.cuda.is_available()


# ---- command-line flags of train -----------------------------------------------------

def register_train_flags():
    cat = "cli: train flags"
    rows = [
        ("--epochs -1", ["--epochs", "-1"], E("epochs")),
        ("--epochs abc", ["--epochs", "abc"], E("--epochs")),
        ("--epochs 0", ["--epochs", "0"], OE("epochs")),
        ("--batch-size 0", ["--batch-size", "0"], E("batch")),
        ("--batch-size -5", ["--batch-size", "-5"], E("batch")),
        ("--batch-size 1000000 (more than the data)", ["--batch-size", "1000000"],
         OE("batch", check=has_run())),
        ("--lr 0", ["--lr", "0"], E("lr")),
        ("--lr -0.001", ["--lr", "-0.001"], E("lr")),
        ("--lr nan", ["--lr", "nan"], E("lr")),
        ("--lr inf", ["--lr", "inf"], E("lr")),
        ("--lr 1e-30 (tiny but valid)", ["--lr", "1e-30"], OE("lr")),
        ("--seed -1", ["--seed", "-1"], OE("seed")),
        ("--seed 4294967296 (2**32)", ["--seed", "4294967296"], OE("seed")),
        ("--seed 99999999999999999999", ["--seed", "99999999999999999999"], OE("seed")),
        ("--latent-dim 0", ["--latent-dim", "0"], E("latent")),
        ("--latent-dim -3", ["--latent-dim", "-3"], E("latent")),
        ("--latent-dim 2.5", ["--latent-dim", "2.5"], E("latent")),
        ("--labels 10 with the plain vae recipe", ["--labels", "10"], E("labels")),
        ("--device gpu", ["--device", "gpu"], E("gpu")),
        ("--device mps", ["--device", "mps"], E("mps")),
        ("--device '' (empty)", ["--device", ""], E("device")),
        ("--device cuda:abc", ["--device", "cuda:abc"], E("cuda:abc", "device")),
        ("--device cuda (none on this machine)", ["--device", "cuda"],
         E("cuda") if no_cuda() else OE("cuda")),
        ("--set train.epochs (no '=')", ["--set", "train.epochs"], E("train.epochs")),
        ("--set bogus.key=1", ["--set", "bogus.key=1"], E("bogus")),
        ("--set train.epoch=1 (typo)", ["--set", "train.epoch=1"], E("epoch")),
        ("--set model=1", ["--set", "model=1"], E("model")),
        ("--set =5 (no key)", ["--set", "=5"], E("=5", "TABLE.KEY", "key")),
        ("--set train.epochs=abc", ["--set", "train.epochs=abc"], E("epochs")),
        ("--set train.epochs=1.5", ["--set", "train.epochs=1.5"], E("epochs")),
        ("--set train.epochs=true", ["--set", "train.epochs=true"], E("epochs")),
        ("--set train.epochs= (empty value)", ["--set", "train.epochs="], E("epochs")),
        ("--set model.hidden=[] (no hidden layer)", ["--set", "model.hidden=[]"], OE("hidden")),
        ("--set model.hidden=[0]", ["--set", "model.hidden=[0]"], E("hidden")),
        ("--set model.hidden=[-16]", ["--set", "model.hidden=[-16]"], E("hidden")),
        ("--set model.hidden=[16.5]", ["--set", "model.hidden=[16.5]"], E("hidden")),
        ("--set model.hidden=16 (not a list)", ["--set", "model.hidden=16"], E("hidden")),
        ('--set model.hidden=["a"]', ["--set", 'model.hidden=["a"]'], E("hidden")),
        ("--set model.latent_dim=[]", ["--set", "model.latent_dim=[]"], E("latent_dim")),
        ("--set model.latent_dim=[4,0]", ["--set", "model.latent_dim=[4,0]"], E("latent_dim")),
        ("--set model.latent_dim=true", ["--set", "model.latent_dim=true"], E("latent_dim")),
        ("--set train.objective=elbow", ["--set", "train.objective=elbow"], E("elbow", "objective")),
        ("--set train.lr_schedule=linear", ["--set", "train.lr_schedule=linear"], E("lr_schedule")),
        ("--set train.lr_decay=0", ["--set", "train.lr_decay=0"], E("lr_decay")),
        ("--set train.lr_decay=2", ["--set", "train.lr_decay=2"], E("lr_decay")),
        ("--set train.lr_decay=nan", ["--set", "train.lr_decay=nan"], E("lr_decay")),
        ("--set train.beta=-1", ["--set", "train.beta=-1"], E("beta")),
        ("--set train.beta=nan", ["--set", "train.beta=nan"], E("beta")),
        ("--set train.beta=inf", ["--set", "train.beta=inf"], E("beta")),
        ("--set train.warmup_epochs=-1", ["--set", "train.warmup_epochs=-1"], E("warmup")),
        ("--set train.warmup_epochs=nan", ["--set", "train.warmup_epochs=nan"], E("warmup")),
        ("--set train.warmup_epochs=inf", ["--set", "train.warmup_epochs=inf"], E("warmup")),
        ("--set train.clip_norm=-1", ["--set", "train.clip_norm=-1"], E("clip_norm")),
        ("--set train.clip_norm=nan", ["--set", "train.clip_norm=nan"], E("clip_norm")),
        ("--set train.max_minutes=-1", ["--set", "train.max_minutes=-1"], E("max_minutes")),
        ("--set train.max_minutes=nan", ["--set", "train.max_minutes=nan"], E("max_minutes")),
        ("--set train.patience=-1", ["--set", "train.patience=-1"], E("patience")),
        ("--set train.num_particles=0", ["--set", "train.num_particles=0"], E("num_particles")),
        ("--set train.objective=free_bits without train.free_bits",
         ["--set", "train.objective=free_bits"], E("free_bits")),
        ("--set train.objective=free_bits, train.free_bits=nan",
         ["--set", "train.objective=free_bits", "--set", "train.free_bits=nan"], E("free_bits")),
        ("--set train.objective=iwae, num_particles=3 (valid)",
         ["--set", "train.objective=iwae", "--set", "train.num_particles=3"], S(has_run())),
        ("--set eval.k=0", ["--set", "eval.k=0"], E("eval.k", "--k")),
        ("--set eval.k=-5", ["--set", "eval.k=-5"], E("eval.k", "--k")),
        ("--set eval.batch_size=0", ["--set", "eval.batch_size=0"], E("eval.batch_size")),
        ("--set eval.particle_batch=0", ["--set", "eval.particle_batch=0"], E("particle_batch")),
        ("--set eval.seed=-1", ["--set", "eval.seed=-1"], OE("seed")),
        ("--set data.binarization=Dynamic", ["--set", "data.binarization=Dynamic"],
         E("Dynamic", "binarization")),
        ("--set data.binarization=none (Bernoulli on grey levels)",
         ["--set", "data.binarization=none"], E("binarization")),
        ("--set data.classes=[42]", ["--set", "data.classes=[42]"], E("42")),
        ('--set data.classes=["3"]', ["--set", 'data.classes=["3"]'], E("classes")),
        ("--set data.classes=[-1]", ["--set", "data.classes=[-1]"], E("-1", "classes")),
        ("--set data.classes=[3] (valid)", ["--set", "data.classes=[3]"], S(has_run())),
        ("--set name= (empty recipe name)", ["--set", "name="], OE("name")),
        ("--data Digits (capital D)", ["--data", "Digits"], E("Digits")),
        ("--data mnist with no files anywhere", ["--data", "mnist"],
         E("mnist", hint=("--download", "--data-dir"))),
        ("--data '' (empty)", ["--data", ""], E("data")),
        ("recipe name that does not exist", ["nosuchrecipe"], E("nosuchrecipe")),
        ("recipe 'models/vae' (no .toml, not in this folder)", ["models/vae"], OE("models/vae")),
        ("--set train.max_minutes=0.0001 (stops after one epoch)",
         ["--epochs", "3", "--set", "train.max_minutes=0.0001"], S(has_run())),
        ("--set train.patience=1 --epochs 3", ["--epochs", "3", "--set", "train.patience=1"],
         S(has_run())),
    ]
    for what, extra, judge in rows:
        simple("train", cat, f"train {what}", T(*extra), judge)

    # --lr 1000: divergence must be loud
    def lr1000(ctx):
        o = ctx.cli(*T("--lr", "1000", epochs="2"))
        words = ("diverg", "nan", "non-finite", "unstable", "warning")
        if o.rc != 0:
            return expect_error(o, words + ("lr",))
        if mentions(o.err + "\n".join(o.warnings), words):
            return OK, "exit 0 with a loud warning"
        return WRONG, "exit 0, no warning about the divergence"
    add("train", cat, "train --lr 1000", "loud divergence warning or non-zero exit", lr1000)

    # two runs with the default folder name in the same second
    def same_second(ctx):
        args = ["train", "--epochs", "1", *SMALL]
        o1 = ctx.cli(*args)
        o2 = ctx.cli(*args)
        runs = sorted(p.name for p in (ctx.p("runs")).iterdir()) if ctx.p("runs").is_dir() else []
        if o1.rc == 0 and o2.rc == 0:
            return (OK, "") if len(runs) == 2 else (LOSS, f"two runs, folders {runs}")
        if o1.rc == 0 and o2.rc != 0:
            v, n = expect_error(o2, ["runs/", "exists"])
            if v == OK:
                return UNCLEAR, ("the second run is refused because the folder name pyro_vae "
                                 "chose itself is taken" + (" (it suggests --overwrite, which "
                                 "would replace the first run)" if "--overwrite" in o2.err else ""))
            return v, n
        return expect_success(o1)
    add("train", cat, "two `train` runs with the default --out started in the same second",
        "two run folders, or a clear refusal", same_second)

    # labels models
    cat = "cli: models of labels"
    lab = ["--set", "model.classifier_hidden=[16]"]
    rows = [
        ("train m2 --labels 5 (fewer than the 10 classes)", ["m2", *lab, "--labels", "5"], E("labels")),
        ("train m2 --labels -1", ["m2", *lab, "--labels", "-1"], E("labels")),
        ("train m2 --labels 100000", ["m2", *lab, "--labels", "100000"], E("labels")),
        ("train m2 --set train.objective=iwae", ["m2", *lab, "--set", "train.objective=iwae"],
         E("objective")),
        ("train m2 --set train.classifier_weight=-1",
         ["m2", *lab, "--set", "train.classifier_weight=-1"], E("classifier_weight")),
        ("train m2 --labels 100 (valid)", ["m2", *lab, "--labels", "100"], S(has_run())),
        ("train cvae --set model.num_classes=1", ["cvae", "--set", "model.num_classes=1"],
         E("num_classes")),
        ("train cvae --set model.num_classes=3 (digits has 10)",
         ["cvae", "--set", "model.num_classes=3"], E("num_classes")),
        ("train cvae --set model.prior=vamp", ["cvae", "--set", "model.prior=vamp"], E("vamp")),
        ("train cvae --set model.semi_supervised=true",
         ["cvae", "--set", "model.semi_supervised=true"], E("semi_supervised")),
        ("train cvae --set model.network=conv", ["cvae", "--set", "model.network=conv"],
         E("network", "conv")),
        ("train cvae --set model.latent_dim=[4,2] (hierarchy)",
         ["cvae", "--set", "model.latent_dim=[4,2]"], E("latent_dim", "conditional")),
    ]
    for what, extra, judge in rows:
        simple("labels", cat, what, T(*extra), judge)


# ---- components and their options ---------------------------------------------------

def register_components():
    cat = "recipe: components"
    grey = ["--set", "data.binarization=none"]

    def opt(table, value):
        return ["--set", f"model.{table}_options={value}"]

    rows = [
        ("prior mog, num_components=0", ["--set", "model.prior=mog", *opt("prior", "{num_components=0}")], E("num_components")),
        ("prior mog, num_components=-1", ["--set", "model.prior=mog", *opt("prior", "{num_components=-1}")], E("num_components")),
        ("prior mog, num_components=1.5", ["--set", "model.prior=mog", *opt("prior", "{num_components=1.5}")], E("num_components")),
        ('prior mog, num_components="ten"', ["--set", "model.prior=mog", *opt("prior", '{num_components="ten"}')], E("num_components")),
        ("prior mog, num_components=2 (valid)", ["--set", "model.prior=mog", *opt("prior", "{num_components=2}")], S(has_run())),
        ("prior vamp, num_pseudo=0", ["--set", "model.prior=vamp", *opt("prior", "{num_pseudo=0}")], E("num_pseudo")),
        ("prior vamp, num_pseudo=-3", ["--set", "model.prior=vamp", *opt("prior", "{num_pseudo=-3}")], E("num_pseudo")),
        ("prior flow, num_flows=-1", ["--set", "model.prior=flow", *opt("prior", "{num_flows=-1}")], E("num_flows")),
        ("prior flow, num_flows=0", ["--set", "model.prior=flow", *opt("prior", "{num_flows=0}")], OE("num_flows")),
        ("guide iaf, num_flows=-2", ["--set", "model.guide=iaf", *opt("guide", "{num_flows=-2}")], E("num_flows")),
        ("guide iaf, num_flows=0", ["--set", "model.guide=iaf", *opt("guide", "{num_flows=0}")], OE("num_flows")),
        ("guide iaf, flow_hidden=[0]", ["--set", "model.guide=iaf", *opt("guide", "{flow_hidden=[0]}")], E("flow_hidden")),
        ("guide planar, num_flows=0", ["--set", "model.guide=planar", *opt("guide", "{num_flows=0}")], OE("num_flows")),
        ("guide spline, count_bins=0", ["--set", "model.guide=spline", *opt("guide", "{count_bins=0}")], E("count_bins")),
        ("guide delta, noise=1.5", ["--set", "model.guide=delta", *opt("guide", "{noise=1.5}")], E("noise")),
        ("guide delta, noise=-0.1", ["--set", "model.guide=delta", *opt("guide", "{noise=-0.1}")], E("noise")),
        ("guide delta, eval_scale=0", ["--set", "model.guide=delta", *opt("guide", "{eval_scale=0}")], E("eval_scale")),
        ("guide delta, eval_scale=-1", ["--set", "model.guide=delta", *opt("guide", "{eval_scale=-1}")], E("eval_scale")),
        ("likelihood gaussian, scale=0", ["--set", "model.likelihood=gaussian", *grey, *opt("likelihood", "{scale=0}")], E("scale")),
        ("likelihood gaussian, scale=-1", ["--set", "model.likelihood=gaussian", *grey, *opt("likelihood", "{scale=-1}")], E("scale")),
        ('likelihood gaussian, scale="learnt" (typo)', ["--set", "model.likelihood=gaussian", *grey, *opt("likelihood", '{scale="learnt"}')], E("learnt", "scale")),
        ("likelihood gaussian, scale=nan", ["--set", "model.likelihood=gaussian", *grey, *opt("likelihood", "{scale=nan}")], E("scale")),
        ("likelihood discretized_logistic, num_bins=1", ["--set", "model.likelihood=discretized_logistic", *grey, *opt("likelihood", "{num_bins=1}")], E("num_bins")),
        ("likelihood discretized_logistic, num_mixtures=0", ["--set", "model.likelihood=discretized_logistic", *grey, *opt("likelihood", "{num_bins=17, num_mixtures=0}")], E("num_mixtures")),
        ("likelihood discretized_logistic with dynamic binarization", ["--set", "model.likelihood=discretized_logistic", *opt("likelihood", "{num_bins=17}")], E("binarization")),
        ("likelihood discretized_logistic, num_bins=256 on 17-level digits", ["--set", "model.likelihood=discretized_logistic", *grey], E("num_bins", "grid", "grey", "levels")),
        ("likelihood continuous_bernoulli, option foo=1", ["--set", "model.likelihood=continuous_bernoulli", *grey, *opt("likelihood", "{foo=1}")], E("foo")),
        ("prior standard_normal given {num_components=3}", opt("prior", "{num_components=3}"), E("num_components")),
        ("model.prior=gaussian (unknown)", ["--set", "model.prior=gaussian"], E("gaussian")),
        ("model.guide=diagonal (unknown)", ["--set", "model.guide=diagonal"], E("diagonal")),
        ("model.likelihood=bernouli (typo)", ["--set", "model.likelihood=bernouli"], E("bernouli")),
        ("model.activation=Softplus (capital S)", ["--set", "model.activation=Softplus"], E("Softplus")),
        ("model.network=cnn", ["--set", "model.network=cnn"], E("cnn")),
        ("model.inference=ladder on a flat VAE", ["--set", "model.inference=ladder"], E("inference")),
        ('model.guide=["iaf","diagonal_normal"] on a flat VAE', ["--set", 'model.guide=["iaf","diagonal_normal"]'], E("guide")),
        ("hierarchy [4,2] with three guides", ["--set", "model.latent_dim=[4,2]", "--set", 'model.guide=["iaf","iaf","iaf"]'], E("guide")),
        ("hierarchy [4,2] with hidden=[[16]]", ["--set", "model.latent_dim=[4,2]", "--set", "model.hidden=[[16]]"], E("hidden")),
        ("VampPrior with a planar guide", ["--set", "model.prior=vamp", "--set", "model.guide=planar"], E("planar", "vamp")),
        ('model.conditional="yes"', ["--set", 'model.conditional="yes"'], E("conditional")),
        ("model.network=conv on 8x8 digits (valid)", ["--set", "model.network=conv"], S(has_run())),
        ("objective mean_field with a bottom-up hierarchy", ["--set", "model.latent_dim=[4,2]", "--set", "train.objective=mean_field"], E("mean_field")),
    ]
    for what, extra, judge in rows:
        simple("comp", cat, f"train --set {what}", T(*extra), judge)


# ---- recipe files -------------------------------------------------------------------

def register_recipes():
    cat = "recipe: files"
    run = ["--device", "cpu", "--quiet", "--out", "run"]

    def rc(what, judge, raw=None, extra=(), rel="my.toml", **tables):
        def setup(ctx):
            if raw is not None:
                ctx.write(rel, raw)
            else:
                ctx.recipe(rel, **tables)
        simple("recipe", cat, what, ["train", rel, *extra, *run], judge, setup=setup)

    good = recipe_text()
    rc("empty recipe file (with small flags)", OE("my.toml"), raw="",
       extra=["--epochs", "1", *SMALL[:6], "--set", "eval.k=5"])
    rc("invalid TOML syntax", E("my.toml"), raw="[model\nlatent_dim = 4\n")
    rc("file not UTF-8 (Latin-1 'é' in a comment)", E("my.toml", hint=("utf", "encoding")),
       raw=("# recette de Zoé\n".encode("latin-1") + good.encode()))
    rc("UTF-8 with a byte-order mark (Windows editor)", OE("bom", "byte order", "byte-order"),
       raw=b"\xef\xbb\xbf" + good.encode())
    rc("duplicate key latent_dim", E("latent_dim", "my.toml"),
       raw=good.replace("latent_dim = 4", "latent_dim = 4\nlatent_dim = 8"))
    rc("top-level 'epochs = 1' (outside [train])", E("epochs"), epochs=1)
    rc("unknown table [training]", E("training"), training={"epochs": 1})
    rc("unknown key model.latent_dims", E("latent_dims"), model={"latent_dims": 4})
    rc("name = 5 (not a string)", E("name"), name=5)
    rc("model = 5 (not a table)", E("model"), raw='name = "x"\nmodel = 5\n')
    rc('latent_dim = "4" (a string)', E("latent_dim"), model={"latent_dim": "4"})
    rc('lr = "1e-3" (a string)', E("lr"), train={"lr": "1e-3"})
    rc("batch_size = true", E("batch_size"), train={"batch_size": True})
    rc("epochs = 1.0 (a float)", OE("epochs"), train={"epochs": 1.0})
    rc("epochs = -1", E("epochs"), train={"epochs": -1})
    rc("batch_size = 0", E("batch_size"), train={"batch_size": 0})
    rc("lr = nan", E("lr"), train={"lr": float("nan")})
    rc("lr = -inf", E("lr"), train={"lr": float("-inf")})
    rc("lr = inf", E("lr"), train={"lr": float("inf")})
    rc("eval.k = 0", E("eval.k", "k must"), eval={"k": 0})
    rc("eval.batch_size = -1", E("batch_size"), eval={"batch_size": -1})
    rc("beta = nan", E("beta"), train={"beta": float("nan")})
    rc("warmup_epochs = inf", E("warmup"), train={"warmup_epochs": float("inf")})
    rc("lr_decay = nan", E("lr_decay"), train={"lr_decay": float("nan")})
    rc("clip_norm = -1", E("clip_norm"), train={"clip_norm": -1.0})
    rc("clip_norm = nan", E("clip_norm"), train={"clip_norm": float("nan")})
    rc("max_minutes = -inf", E("max_minutes"), train={"max_minutes": float("-inf")})
    rc("patience = -1", E("patience"), train={"patience": -1})
    rc("num_particles = 0", E("num_particles"), train={"num_particles": 0})
    rc("latent_dim = 0", E("latent_dim"), model={"latent_dim": 0})
    rc("latent_dim = -4", E("latent_dim"), model={"latent_dim": -4})
    rc("latent_dim = []", E("latent_dim"), model={"latent_dim": []})
    rc("latent_dim = [4, -1]", E("latent_dim"), model={"latent_dim": [4, -1]})
    rc("hidden = [] (no hidden layer)", OE("hidden"), model={"hidden": []})
    rc("hidden = [0]", E("hidden"), model={"hidden": [0]})
    rc("hidden = 16 (not a list)", E("hidden"), model={"hidden": 16})
    rc("hidden = [[16], [8]] on a flat VAE", E("hidden"), model={"hidden": [[16], [8]]})
    rc("seed = -1", OE("seed"), train={"seed": -1})
    rc("seed = 9223372036854775807", OE("seed"), train={"seed": 2 ** 63 - 1})
    rc('binarization = "Dynamic"', E("Dynamic"), data={"binarization": "Dynamic"})
    rc('data name = "Digits"', E("Digits"), data={"name": "Digits"})
    rc("classes = [10] (digits are 0..9)", E("10"), data={"classes": [10]})
    rc("classes = [true]", E("classes"), data={"classes": [True]})
    rc("labels = -5 on a plain VAE", E("labels"), data={"labels": -5})
    rc("[model.prior_options] for standard_normal", E("standard_normal", "prior_options"),
       model={"prior_options": {"num_components": 3}})
    rc("CRLF line endings", S(has_run()), raw=good.replace("\n", "\r\n"))
    rc("tab-indented keys", S(has_run()), raw=good.replace("\nlatent_dim", "\n\tlatent_dim"))
    rc("file named MY.TOML (upper-case extension)", OE("MY.TOML", check=has_run()), raw=good,
       rel="MY.TOML")
    rc("recipe in a folder with spaces and unicode", S(has_run()), raw=good,
       rel="mes recettes/récipe é.toml")
    simple("recipe", cat, "recipe path that does not exist",
           ["train", "missing.toml", *run], E("missing.toml"))

    def folder_recipe(ctx):
        ctx.p("adir.toml").mkdir()
    simple("recipe", cat, "recipe path that is a folder (adir.toml/)",
           ["train", "adir.toml", *run], E("adir.toml", hint=("is a folder", "is a directory", "not a file")),
           setup=folder_recipe)

    def shadow(ctx):
        ctx.write("models/vae.toml", "[model\n")
    simple("recipe", cat, "a broken models/vae.toml in the project shadows the built-in `vae`",
           ["train", "vae", "--epochs", "1", *SMALL, "--out", "run"], E("models/vae.toml"),
           setup=shadow)

    # recipe names that are paths
    cat = "recipe: name as a path"

    def name_case(what, name_of, via_set=False):
        def fn(ctx):
            name = name_of(ctx)
            if via_set:
                args = ["train", "--epochs", "1", *SMALL, "--set", f"name={json.dumps(name)}"]
            else:
                ctx.recipe("my.toml", name=name)
                args = ["train", "my.toml", "--device", "cpu", "--quiet"]
            before = {p for p in files_under(ctx.root)}
            o = ctx.cli(*args)
            if o.rc != 0:
                return expect_error(o, ["name", name])
            made = sorted({p.parent for p in files_under(ctx.root)
                           if p not in before and p.name == "config.json"})
            if not made:
                return WRONG, "exit 0 but no run folder found"
            runs = (ctx.proj / "runs").resolve()
            bad = [m for m in made if m.resolve().parent != runs]
            if bad:
                return WRONG, f"run written to {ctx.rel(bad[0])}, outside runs/"
            return OK, f"made safe: {ctx.rel(made[0])}"
        add("name", cat, what, "refused, or the run kept directly inside runs/", fn)

    name_case('name = "../escape"', lambda ctx: "../escape")
    name_case('name = "../../escape"', lambda ctx: "../../escape")
    name_case('name = "a/b"', lambda ctx: "a/b")
    name_case("name = an absolute path", lambda ctx: str(ctx.root / "abs" / "evil"))
    name_case('name = ".." ', lambda ctx: "..")
    name_case('--set name="../escape"', lambda ctx: "../escape", via_set=True)
    name_case('name with a NUL character', lambda ctx: "bad\u0000name")


# ---- the user's .npz ----------------------------------------------------------------

def register_npz():
    cat = "data: .npz"

    def npz_case(what, make, judge, rel="data.npz", extra=(), recipe=None):
        def setup(ctx):
            arrays = make(ctx)
            if isinstance(arrays, dict):
                ctx.npz(rel, **arrays)
        args = ["train", *([recipe] if recipe else []), "--data", rel, "--epochs", "1", *SMALL,
                *extra, "--out", "run"]
        simple("npz", cat, what, args, judge, setup=setup)

    def arr(layout="NHW", dtype="uint8", **kw):
        return lambda ctx: npz_arrays(layout, dtype=dtype, **kw)

    def custom(fn):
        return lambda ctx: fn()

    ok = S(has_run())
    npz_case("uint8 (N, 8, 8) images (baseline)", arr(), ok)
    npz_case("float32 (N, 64) in [0, 1]", arr("ND", "float"), ok)
    npz_case("uint8 (N, 1, 8, 8)", arr("NCHW"), ok)
    npz_case("channels-last (N, 8, 8, 1)", arr("NHWC"), RS("channel", what="read (8, 8, 1) as C, H, W"))
    npz_case("channels-last RGB (N, 8, 8, 3)", arr("NHWC3"), RS("channel", what="read (8, 8, 3) as C, H, W"))
    npz_case("1-D arrays (N,)", custom(lambda: {"train": np.zeros(300, np.uint8),
                                                 "test": np.zeros(50, np.uint8)}),
             E("data.npz", hint=("shape", "(N, H, W)")))
    npz_case("5-D arrays", custom(lambda: {"train": np.zeros((30, 1, 1, 8, 8), np.uint8),
                                           "test": np.zeros((10, 1, 1, 8, 8), np.uint8)}),
             E("data.npz", hint=("shape",)))
    npz_case("empty 'train' (0 images)", custom(lambda: {"train": np.zeros((0, 8, 8), np.uint8),
                                                        "test": npz_arrays()["test"]}), E("train"))
    npz_case("empty 'test' (0 images)", custom(lambda: {"train": npz_arrays()["train"],
                                                       "test": np.zeros((0, 8, 8), np.uint8)}), E("test"))
    npz_case("train 8x8 but test 7x7", custom(lambda: {"train": npz_arrays()["train"],
                                                      "test": npz_arrays()["test"][:, :7, :7]}), E("test"))
    npz_case("float64 in 0..255 (not scaled)",
             custom(lambda: {k: v.astype(np.float64) for k, v in npz_arrays().items()}),
             E("[0, 1]", "255", "scale"))
    npz_case("int64 in 0..255 (not uint8)",
             custom(lambda: {k: v.astype(np.int64) for k, v in npz_arrays().items()}),
             OE("int64", "uint8", "[0, 1]", "255"))
    npz_case("int64 0/1 images", custom(lambda: {k: (v > 127).astype(np.int64)
                                                for k, v in npz_arrays().items()}), ok)
    npz_case("bool images", custom(lambda: {k: v > 127 for k, v in npz_arrays().items()}), ok)
    npz_case("uint16 in 0..65535", custom(lambda: {k: v.astype(np.uint16) * 257
                                                  for k, v in npz_arrays().items()}),
             E("uint16", "[0, 1]", "65535"))
    npz_case("int8 with negative values", custom(lambda: {k: (v.astype(np.int16) - 128).astype(np.int8)
                                                         for k, v in npz_arrays().items()}),
             E("[0, 1]", "negative", "int8", "-128"))
    def with_value(value):
        def make():
            a = npz_arrays(dtype="float")
            a["train"][3, 2, 2] = value
            return a
        return custom(make)
    npz_case("float images with one NaN", with_value(float("nan")), E("nan"))
    npz_case("float images with one inf", with_value(float("inf")), E("inf"))
    npz_case("float16 images", custom(lambda: {k: v.astype(np.float16)
                                               for k, v in npz_arrays(dtype="float").items()}), ok)
    npz_case("complex128 images", custom(lambda: {k: v.astype(np.complex128)
                                                 for k, v in npz_arrays(dtype="float").items()}),
             E("complex"))
    npz_case("string arrays", custom(lambda: {"train": np.array([["a"] * 64] * 20),
                                              "test": np.array([["b"] * 64] * 5)}),
             E("dtype", "<U", "str"))
    npz_case("structured (record) dtype",
             custom(lambda: {"train": np.zeros((20, 8, 8), dtype=[("a", "u1"), ("b", "f4")]),
                             "test": np.zeros((5, 8, 8), dtype=[("a", "u1"), ("b", "f4")])}),
             E("dtype", "data.npz"))

    def pickled(ctx):
        victim = ctx.write("precious.txt", "my notes\n")
        obj = np.empty((3, 8, 8), dtype=object)
        obj[0, 0, 0] = Evil(victim)
        buf = io.BytesIO()
        np.savez(buf, train=obj, test=npz_arrays()["test"])
        ctx.write("data.npz", buf.getvalue())
    npz_case("object array holding a pickle that deletes a user file", pickled,
             E("data.npz", "pickle", "object"))
    npz_case("no 'test' array", custom(lambda: {"train": npz_arrays()["train"]}), E("test"))
    npz_case("Keras-style keys x_train / x_test",
             custom(lambda: {"x_train": npz_arrays()["train"], "x_test": npz_arrays()["test"]}),
             E("x_train", "train"))
    npz_case("a misspelt 'vaildation' array beside train and test",
             custom(lambda: {**npz_arrays(), "vaildation": npz_arrays()["test"]}),
             RS("vaildation", what="ignored the 'vaildation' array"))
    npz_case("'validation' 7x7 while 'train' is 8x8",
             custom(lambda: {**npz_arrays(), "validation": npz_arrays()["test"][:, :7, :7]}),
             E("validation"))
    npz_case("a single training image, no validation",
             custom(lambda: {"train": npz_arrays()["train"][:1], "test": npz_arrays()["test"]}),
             E("train", "validation"))
    npz_case("a single test image", custom(lambda: {"train": npz_arrays()["train"],
                                                   "test": npz_arrays()["test"][:1]}),
             OE("test"))
    npz_case("uint8 images holding only 0 and 1 (binary stored as uint8)",
             custom(lambda: {k: (v > 127).astype(np.uint8) for k, v in npz_arrays().items()}),
             RS("0 and 1", "0/1", "{0, 1}", "only 0", "max 1", "maximum 1", "divided by 255",
                what="divided 0/1 images by 255 (all nearly black)"))
    npz_case("grey levels, binarization none, Bernoulli likelihood", arr(dtype="float"),
             E("binarization"), extra=["--set", "data.binarization=none"])
    npz_case("(N, 64) train with (N, 8, 8) test", custom(lambda: {
        "train": npz_arrays("ND")["train"], "test": npz_arrays()["test"]}), OE("test"))
    npz_case("non-square D = 10 with model.network = conv",
             custom(lambda: {"train": np.full((50, 10), 128, np.uint8),
                             "test": np.full((10, 10), 128, np.uint8)}),
             OE("conv", "network"), extra=["--set", "model.network=conv"])

    def labelled(ctx):
        x, y = digits_uint8()
        ctx.npz("data.npz", train=x[:300], test=x[300:400], train_labels=y[:300],
                test_labels=y[300:400])
    def cvae_judge(ctx, o):
        if o.rc == 0:
            return OK, "used the labels"
        return expect_error(o, ["train_labels"])
    cvae_judge.expected = "labels used, or the message says the npz labels are not read"
    npz_case("cvae on an npz with train_labels / test_labels arrays", labelled, cvae_judge,
             recipe="cvae")

    # file-level problems
    def raw(data):
        return lambda ctx: ctx.write("data.npz", data)
    npz_case("not a zip (a text file named .npz)", raw("train,test\n1,2\n"),
             E("data.npz", forbid=("pickled data",), hint=("zip", "savez", "not an npz", "not a .npz")))
    def truncated(ctx):
        buf = io.BytesIO()
        np.savez(buf, **npz_arrays())
        ctx.write("data.npz", buf.getvalue()[:len(buf.getvalue()) // 2])
    npz_case("truncated .npz (half the file)", truncated, E("data.npz"))
    def npy(ctx):
        buf = io.BytesIO()
        np.save(buf, npz_arrays()["train"])
        ctx.write("data.npz", buf.getvalue())
    npz_case(".npy content in a file named .npz", npy,
             E("data.npz", hint=("npy", "savez")))

    def upper(ctx):
        ctx.npz("DATA.NPZ", **npz_arrays())
    def upper_judge(ctx, o):
        if o.rc == 0:
            return OK, "accepted"
        return expect_error(o, ["DATA.NPZ"], hint=("extension", "lower", "suffix", "case"))
    upper_judge.expected = "accepted, or told the extension must be .npz"
    simple("npz", cat, "file named DATA.NPZ (upper-case extension)",
           ["train", "--data", "DATA.NPZ", "--epochs", "1", *SMALL, "--out", "run"],
           upper_judge, setup=upper)
    npz_case("path with spaces and unicode", lambda ctx: npz_arrays(), ok,
             rel="mes données/jeu d'essai é.npz")
    npz_case("relative path ./data.npz", lambda ctx: npz_arrays(), ok, rel="./data.npz")

    def folder(ctx):
        ctx.p("data.npz").mkdir()
        ctx.write("data.npz/readme.txt", "a folder, not a file\n")
    npz_case("a folder named data.npz", folder,
             E("data.npz", hint=("is a folder", "is a directory", "not a file")))
    simple("npz", cat, "a path that does not exist (missing.npz)",
           ["train", "--data", "missing.npz", "--epochs", "1", *SMALL, "--out", "run"],
           E("missing.npz"))


# ---- IDX files and --data-dir -------------------------------------------------------

def register_data_dir():
    cat = "data: --data-dir / IDX"
    fm = ["--data", "fashion-mnist", "--set", "data.classes=[0]"]

    def fallback(what, setup, args, names):
        simple("ddir", cat, what, ["train", "--epochs", "1", *SMALL, *args, "--out", "run"],
               E(*names), setup=setup, timeout=180)

    fallback("fashion-mnist, --data-dir is a missing folder", None,
             [*fm, "--data-dir", "nodata"], ["nodata"])

    def empty(ctx):
        ctx.p("emptydir").mkdir()
    fallback("fashion-mnist, --data-dir is an empty folder", empty,
             [*fm, "--data-dir", "emptydir"], ["emptydir"])

    def afile(ctx):
        ctx.write("notes.txt", "not a folder\n")
    fallback("fashion-mnist, --data-dir is a file", afile,
             [*fm, "--data-dir", "notes.txt"], ["notes.txt"])

    def dir_as_file(ctx):
        ctx.p("fm/train-images-idx3-ubyte").mkdir(parents=True)
        ctx.write("fm/train-images-idx3-ubyte/x", "x")
        ctx.write("fm/t10k-images-idx3-ubyte", idx_images(60, seed=2))
    fallback("fashion-mnist, train-images-idx3-ubyte is a folder", dir_as_file,
             [*fm, "--data-dir", "fm"], ["train-images-idx3-ubyte"])

    def only_test(ctx):
        ctx.write("fm/t10k-images-idx3-ubyte", idx_images(60, seed=2))
    fallback("fashion-mnist, only the t10k file in --data-dir", only_test,
             [*fm, "--data-dir", "fm"], ["train-images", "fm"])
    fallback("fashion-mnist, --set data.data_dir=nodata (missing)", None,
             [*fm, "--set", "data.data_dir=nodata"], ["nodata"])

    def env_data(ctx):
        make_idx(ctx, "elsewhere")
        ctx.env["PYRO_VAE_DATA"] = str(ctx.p("elsewhere"))
    fallback("mnist, --data-dir missing while $PYRO_VAE_DATA holds MNIST files", env_data,
             ["--data", "mnist", "--data-dir", "nodata"], ["nodata"])

    def valid(gz=False, layout=""):
        return lambda ctx: make_idx(ctx, f"mn/{layout}".rstrip("/"), gz=gz)
    simple("ddir", cat, "mnist, valid (fake) IDX files in --data-dir",
           T("--data", "mnist", "--data-dir", "mn"), S(has_run()), setup=valid())
    simple("ddir", cat, "mnist, valid gzipped IDX files",
           T("--data", "mnist", "--data-dir", "mn"), S(has_run()), setup=valid(gz=True))
    simple("ddir", cat, "mnist, torchvision layout MNIST/raw inside --data-dir",
           T("--data", "mnist", "--data-dir", "mn"), S(has_run()), setup=valid(layout="MNIST/raw"))

    def truncated(ctx):
        make_idx(ctx, "mn")
        p = ctx.p("mn/train-images-idx3-ubyte")
        ctx.write(p, p.read_bytes()[:100000])
    simple("ddir", cat, "mnist, truncated training images file",
           T("--data", "mnist", "--data-dir", "mn"), E("train-images-idx3-ubyte"), setup=truncated)

    def magic(ctx):
        make_idx(ctx, "mn")
        ctx.write("mn/train-images-idx3-ubyte", idx_images(10050, seed=1, magic=0x801))
    simple("ddir", cat, "mnist, wrong magic number (a label file named as images)",
           T("--data", "mnist", "--data-dir", "mn"), E("magic", "train-images"), setup=magic)
    simple("ddir", cat, "mnist, training images 28x28 but test 27x27",
           T("--data", "mnist", "--data-dir", "mn"), E("27"),
           setup=lambda ctx: make_idx(ctx, "mn", test_hw=(27, 27)))
    simple("ddir", cat, "mnist, exactly 10000 training images",
           T("--data", "mnist", "--data-dir", "mn"), E("10,000", "10000"),
           setup=lambda ctx: make_idx(ctx, "mn", n_train=10000))

    def short_labels(ctx):
        make_idx(ctx, "mn", labels=True)
        ctx.write("mn/train-labels-idx1-ubyte", idx_labels(np.arange(500) % 10))
    simple("ddir", cat, "cvae on mnist whose label file is shorter than the images",
           T("cvae", "--data", "mnist", "--data-dir", "mn"), E("label"), setup=short_labels)

    def far_labels(ctx):
        labels = np.arange(10050) % 10
        labels[::97] = 200
        make_idx(ctx, "mn", labels=True, train_labels=labels)
    simple("ddir", cat, "cvae on mnist with labels of 200 (expected 0..9)",
           T("cvae", "--data", "mnist", "--data-dir", "mn"),
           RS("200", "201", what="built a 201-class model"), setup=far_labels)
    simple("ddir", cat, "mnist, --data-dir an empty folder (nothing else anywhere)",
           T("--data", "mnist", "--data-dir", "emptydir"), E("emptydir"), setup=empty)
    simple("ddir", cat, "digits with --data-dir a missing folder",
           T("--data-dir", "nodata"), OE("nodata", "data-dir"))

    def corrupt_cache(ctx):
        folder = ctx.cache / "pyro_vae" / "fashion-mnist"
        folder.mkdir(parents=True)
        (folder / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03garbage")
        (folder / "t10k-images-idx3-ubyte").write_bytes(idx_images(60, seed=2))
    simple("ddir", cat, "fashion-mnist with corrupt files in the cache",
           T(*fm), E("train-images-idx3-ubyte", "cache"), setup=corrupt_cache)

    def score_missing(ctx):
        ctx.copy_run("vae")
    simple("ddir", cat, "score a digits run --data fashion-mnist --data-dir missing",
           ["score", "run", "--data", "fashion-mnist", "--data-dir", "nodata", "-o", "s.csv",
            "--k", "5", "--quiet", "--device", "cpu"], E("nodata"), setup=score_missing,
           timeout=180)


# ---- --out and --overwrite ----------------------------------------------------------

def register_run_folders():
    cat = "run folder: --out / --overwrite"

    def user_project(ctx, where):
        """A user's project folder: their own config.json, checkpoint.pt, notes."""
        ctx.write(f"{where}/config.json", '{"my": "app settings"}\n')
        ctx.write(f"{where}/checkpoint.pt", b"my own PyTorch checkpoint")
        ctx.write(f"{where}/notes.txt", "three months of notes\n")
        ctx.write(f"{where}/src/model.py", "print('hello')\n")

    def refuse(*names):
        def judge(ctx, o):
            return expect_error(o, names)
        judge.expected = "refused (nothing of the user's removed)"
        return judge

    def case(what, setup, args, judge, cwd=None):
        def fn(ctx):
            setup(ctx)
            o = ctx.cli(*args(ctx) if callable(args) else args, cwd=cwd)
            return judge(ctx, o)
        add("out", cat, what, judge.expected, fn)

    tr = ["train", "--epochs", "1", *SMALL]
    case("--overwrite a folder of the user's holding config.json and checkpoint.pt",
         lambda ctx: user_project(ctx, "mine"), tr + ["--out", "mine", "--overwrite"],
         refuse("mine"))
    case("--overwrite a user folder holding only a metrics.jsonl",
         lambda ctx: ctx.write("mine/metrics.jsonl", '{"epoch": 1, "loss": 3}\n'),
         tr + ["--out", "mine", "--overwrite"], refuse("mine"))

    def run_plus_notes(ctx):
        ctx.copy_run("vae", "run")
        ctx.write("run/notes.txt", "my notes about this run\n")
    case("--overwrite a run folder to which the user added notes.txt", run_plus_notes,
         tr + ["--out", "run", "--overwrite"], refuse("notes.txt"))

    def run_plus_dir(ctx):
        ctx.copy_run("vae", "run")
        ctx.write("run/analysis/plot.py", "import matplotlib\n")
    case("--overwrite a run folder holding a user sub-folder analysis/", run_plus_dir,
         tr + ["--out", "run", "--overwrite"], refuse("analysis"))

    def pure_run(ctx):
        ctx.copy_run("vae", "run")
    case("--overwrite a genuine run folder", pure_run, tr + ["--out", "run", "--overwrite"],
         S(has_run(), expected="replaced"))
    case("--out an existing run without --overwrite", lambda ctx: (pure_run(ctx), ctx.protect(ctx.p("run"))),
         tr + ["--out", "run"], refuse("run", "--overwrite"))
    case("--out . --overwrite in a project holding config.json",
         lambda ctx: user_project(ctx, "."), tr + ["--out", ".", "--overwrite"], refuse("."))
    case("--out '' --overwrite (empty string) in a project holding config.json",
         lambda ctx: user_project(ctx, "."), tr + ["--out", "", "--overwrite"],
         OE("out", check=lambda ctx, o: None if "run folder" in o.out else
            "does not say where the run went"))
    case("--out ./ without --overwrite in a non-empty project",
         lambda ctx: user_project(ctx, "."), tr + ["--out", "./"], refuse("."))

    def parent(ctx):
        user_project(ctx, ".")
        ctx.p("sub").mkdir()
    case("--out .. --overwrite from a sub-folder (the project holds config.json)", parent,
         tr + ["--out", "..", "--overwrite"], refuse(".."), cwd="sub")
    case("--out runs/.. --overwrite (resolves to the project)",
         lambda ctx: (user_project(ctx, "."), ctx.p("runs").mkdir()),
         tr + ["--out", "runs/..", "--overwrite"], refuse(".."))

    def home(ctx):
        ctx.write(ctx.home / "config.json", '{"editor": "vim"}\n')
        ctx.write(ctx.home / "thesis.tex", "\\chapter{One}\n")
    case("--out $HOME --overwrite (home holds config.json)", home,
         lambda ctx: tr + ["--out", str(ctx.home), "--overwrite"], refuse("home", str("HOME")))

    def link_to_run(ctx):
        ctx.copy_run("vae", "real_run")
        ctx.protect(ctx.p("real_run"))
        os.symlink("real_run", ctx.p("link"))
    case("--out a symlink to a run, with --overwrite", link_to_run,
         tr + ["--out", "link", "--overwrite"], refuse("link", "symbolic"))

    def link_to_user(ctx):
        user_project(ctx, "mine")
        os.symlink("mine", ctx.p("link"))
    case("--out a symlink to a user folder, with --overwrite", link_to_user,
         tr + ["--out", "link", "--overwrite"], refuse("link", "symbolic"))

    def dangling(ctx):
        os.symlink("nowhere/at/all", ctx.p("link"))
    case("--out a dangling symlink", dangling, tr + ["--out", "link"],
         OE("link", check=lambda ctx, o: None))
    case("--out an existing file", lambda ctx: ctx.write("results.csv", "a,b\n1,2\n"),
         tr + ["--out", "results.csv"], refuse("results.csv"))
    case("--out inside a file (results.csv/run)", lambda ctx: ctx.write("results.csv", "a,b\n"),
         tr + ["--out", "results.csv/run"], refuse("results.csv"))
    case("--out an existing empty folder", lambda ctx: ctx.p("run").mkdir(),
         tr + ["--out", "run"], S(has_run()))
    case("--out a new nested path a/b/c", lambda ctx: None, tr + ["--out", "a/b/c"],
         S(has_run("a/b/c")))
    case("--out runs/new/ (trailing slash)", lambda ctx: None, tr + ["--out", "runs/new/"],
         S(has_run("runs/new")))
    case("--out a 300-character folder name", lambda ctx: None, tr + ["--out", "r" * 300],
         refuse("long", "name", "--out"))

    def overwrite_bad_data(ctx):
        ctx.copy_run("vae", "run")
        ctx.protect(ctx.p("run"))
    case("--overwrite a run, but the new --data is missing (run must survive)",
         overwrite_bad_data, tr + ["--data", "missing.npz", "--out", "run", "--overwrite"],
         refuse("missing.npz"))

    def overwrite_ctrl_c(ctx):
        ctx.copy_run("vae", "run")
        ctx.protect(ctx.p("run"))
        import sklearn.datasets
        o = ctx.cli(*tr, "--out", "run", "--overwrite",
                    patches=[fire_at(sklearn.datasets, "load_digits",
                                     raiser(KeyboardInterrupt), label="load_digits")])
        return expect_interrupted(o)
    add("out", cat, "--overwrite a run, Ctrl-C while loading data (run must survive)",
        "interrupted, the old run intact", overwrite_ctrl_c)


# ---- resume, kills, interrupts during training --------------------------------------

def replace_of(*names):
    return lambda src, dst, *a, **k: Path(dst).name in names


def register_resume():
    cat = "resume / kill"
    tr2 = ["train", "--epochs", "2", *SMALL, "--out", "run"]
    resume = ["train", "--resume", "run", "--device", "cpu", "--quiet"]

    def sim_kill(what, patch_of, expect_epochs=2, extra_check=None):
        def fn(ctx):
            o1 = ctx.cli(*tr2, patches=[patch_of(ctx)])
            if not o1.killed:
                return HARNESS, f"the simulated kill did not happen: {o1.summary()}"
            o2 = ctx.cli(*resume)
            if o2.rc != 0:
                v, n = expect_error(o2, ["run"])
                return (UNCLEAR if v == OK else v), f"resume after the kill failed: {o2.message}"
            problem = run_consistency(ctx.p("run"), expect_epochs)
            if not problem and extra_check is not None:
                problem = extra_check(ctx)
            return (WRONG, problem) if problem else (OK, "")
        add("resume", cat, what, "resume works; checkpoint and best.pt agree, no leftovers, "
            "each epoch once in metrics.jsonl", fn)

    kill = raiser(SimulatedKill)
    ckpts = replace_of("checkpoint.pt", "best.pt")
    sim_kill("killed between writing checkpoint.pt and best.pt of epoch 2, then --resume",
             lambda ctx: fire_at(os, "replace", kill, nth=4, when=ckpts, label="os.replace"))
    sim_kill("killed after epoch 2's metrics line, before its checkpoint, then --resume",
             lambda ctx: fire_at(os, "replace", kill, nth=3, when=ckpts, label="os.replace"))

    def mid_write(ctx):
        state = {"killed": False}

        def do(orig, obj, f, *a, **k):
            data = b"PK\x03\x04 half a checkpoint"
            if hasattr(f, "write"):
                f.write(data)
                f.flush()
            else:
                Path(f).write_bytes(data)
            state["killed"] = True
            raise SimulatedKill()

        save = fire_at(torch, "save", do, nth=3, label="torch.save")

        def keep_tmp(p, orig, path, *a, **k):   # SIGKILL runs no clean-up
            if state["killed"] and "tmp" in str(path):
                p.hits += 1
                return None
            return orig(path, *a, **k)
        return [save, Patch(os, "unlink", keep_tmp, "os.unlink (no clean-up after kill)",
                            required=False)]

    def sim_kill_multi(what, patches_of):
        def fn(ctx):
            o1 = ctx.cli(*tr2, patches=patches_of(ctx))
            if not o1.killed:
                return HARNESS, f"the simulated kill did not happen: {o1.summary()}"
            left = leftovers(ctx.p("run"))
            o2 = ctx.cli(*resume)
            if o2.rc != 0:
                return UNCLEAR, f"resume after the kill failed: {o2.message}"
            problem = run_consistency(ctx.p("run"), 2)
            if problem:
                return WRONG, problem + (f" (left by the kill: {left})" if left else "")
            return OK, f"cleaned {left}" if left else ""
        add("resume", cat, what, "resume works and removes the half-written temporary file", fn)

    sim_kill_multi("killed in the middle of writing epoch 2's checkpoint (temp file left), "
                   "then --resume", mid_write)

    def kill_eval(ctx):
        import pyro_vae.infer as ev
        return fire_at(ev, "log_likelihood", kill, label="evaluate.log_likelihood")

    def eval_done(ctx):
        e = ctx.p("run/eval.json")
        if not e.is_file():
            return "no eval.json after the resume"
        return None
    sim_kill("killed during the final test evaluation, then --resume", kill_eval,
             extra_check=eval_done)

    def first_epoch(ctx):
        o1 = ctx.cli(*tr2, patches=[fire_at(torch, "save", kill, nth=1, label="torch.save")])
        if not o1.killed:
            return HARNESS, f"the simulated kill did not happen: {o1.summary()}"
        o2 = ctx.cli(*resume)
        if o2.rc == 0:
            return WRONG, "resume of a run without any checkpoint exited 0"
        v, n = expect_error(o2, ["checkpoint", "no epoch"], hint=("--overwrite", "again", "start"))
        if v != OK:
            return v, n
        o3 = ctx.cli(*tr2, "--overwrite")
        if o3.rc != 0:
            return UNCLEAR, f"could not start the killed run again with --overwrite: {o3.message}"
        return OK, ""
    add("resume", cat, "killed in epoch 1 before any checkpoint; --resume, then --overwrite",
        "--resume says there is nothing to resume (and what to do); --overwrite restarts it",
        first_epoch)

    def sigint_inprocess(ctx):
        def do(orig, *a, **k):
            r = orig(*a, **k)
            os.kill(os.getpid(), signal.SIGINT)
            return r
        import torch.optim
        o1 = ctx.cli(*tr2, patches=[fire_at(torch.optim.Adam, "step", do, nth=3,
                                            label="Adam.step")])
        if o1.rc != 130 or "--resume" not in o1.err:
            if o1.rc == 0:
                return WRONG, "exit 0 after Ctrl-C"
            return UNCLEAR, f"after Ctrl-C: {o1.summary()} (expected 130 and the --resume command)"
        o2 = ctx.cli(*resume)
        if o2.rc != 0:
            return UNCLEAR, f"resume failed: {o2.message}"
        problem = run_consistency(ctx.p("run"), 2)
        if problem:
            return WRONG, problem
        a = load_ckpt(ctx.p("run/checkpoint.pt"))["model"]
        b = load_ckpt(base_run("vae") / "checkpoint.pt")["model"]
        diff = [k for k in a if not torch.equal(a[k], b[k])]
        if diff:
            return WRONG, f"weights differ from an uninterrupted run ({diff[0]} ...)"
        return OK, "bit-identical to the uninterrupted run"
    add("resume", cat, "Ctrl-C (SIGINT) at step 3, then --resume (same weights as an "
        "uninterrupted run?)", "exit 130 naming --resume; the resumed run is bit-identical",
        sigint_inprocess)

    def reproducible(ctx):
        o1 = ctx.cli(*tr2)
        a = load_ckpt(ctx.p("run/checkpoint.pt"))["model"]
        b = load_ckpt(base_run("vae") / "checkpoint.pt")["model"]
        if o1.rc != 0:
            return expect_success(o1)
        diff = [k for k in a if not torch.equal(a[k], b[k])]
        return (WRONG, f"weights differ ({diff[0]})") if diff else (OK, "")
    add("resume", cat, "the same train command twice gives the same weights",
        "bit-identical weights", reproducible)

    # real signals (subprocesses)
    long = ["train", "--epochs", "400", *SMALL, "--out", "run"]

    def sigkill(ctx):
        a = ctx.spawn(*long)
        if not wait_for(lambda: len(metrics_epochs(ctx.p("run"))) >= 3, 120):
            ctx.kill(a, signal.SIGKILL)
            return HARNESS, f"the background run never got going: {ctx.finish(a).summary()}"
        ctx.kill(a, signal.SIGKILL)
        ctx.finish(a)
        e = int(load_ckpt(ctx.p("run/checkpoint.pt"))["epoch"])
        o = ctx.cli("train", "--resume", "run", "--epochs", str(e + 1), "--device", "cpu", "--quiet")
        if o.rc != 0:
            return UNCLEAR, f"resume after SIGKILL refused: {o.message}"
        problem = run_consistency(ctx.p("run"), e + 1)
        return (WRONG, problem) if problem else (OK, f"resumed from epoch {e}")
    add("resume", cat, "SIGKILL during training (real process), then --resume",
        "stale lock taken over; consistent run", sigkill)

    def sigkill_overwrite(ctx):
        a = ctx.spawn(*long)
        if not wait_for(lambda: ctx.p("run/checkpoint.pt").is_file(), 120):
            ctx.kill(a, signal.SIGKILL)
            return HARNESS, f"the background run never got going: {ctx.finish(a).summary()}"
        ctx.kill(a, signal.SIGKILL)
        ctx.finish(a)
        o = ctx.cli(*T(), "--overwrite")
        if o.rc != 0:
            return UNCLEAR, f"--overwrite after SIGKILL refused: {o.message}"
        return (OK, "") if ctx.p("run/eval.json").is_file() else (WRONG, "no eval.json")
    add("resume", cat, "SIGKILL during training, then --overwrite the dead run",
        "stale lock taken over; run replaced", sigkill_overwrite)

    def sigint_real(ctx):
        a = ctx.spawn(*long)
        if not wait_for(lambda: len(metrics_epochs(ctx.p("run"))) >= 2, 120):
            ctx.kill(a, signal.SIGKILL)
            return HARNESS, f"the background run never got going: {ctx.finish(a).summary()}"
        ctx.kill(a, signal.SIGINT)
        o = ctx.finish(a, timeout=60)
        if o.rc != 130 or "--resume" not in o.err:
            if o.rc == 0:
                return WRONG, "exit 0 after SIGINT"
            return UNCLEAR, f"after SIGINT: {o.summary()}"
        e = int(load_ckpt(ctx.p("run/checkpoint.pt"))["epoch"])
        o2 = ctx.cli("train", "--resume", "run", "--epochs", str(e + 1), "--device", "cpu", "--quiet")
        if o2.rc != 0:
            return UNCLEAR, f"resume after SIGINT failed: {o2.message}"
        problem = run_consistency(ctx.p("run"), e + 1)
        return (WRONG, problem) if problem else (OK, "")
    add("resume", cat, "SIGINT (Ctrl-C) to a real training process, then --resume",
        "exit 130 naming --resume; resume consistent", sigint_real)

    # resume with damaged or odd run folders
    def resume_case(what, setup, judge, args=None):
        def fn(ctx):
            ctx.copy_run("vae", "run")
            setup(ctx)
            o = ctx.cli(*(args or resume))
            return judge(ctx, o)
        add("resume", cat, what, judge.expected, fn)

    def tmp_files(ctx):
        ctx.write("run/checkpoint.pt.abc123.tmp", b"half")
        ctx.write("run/.checkpoint.pt.x1y2.pyro_vae.tmp", b"half")
        ctx.allow(ctx.p("run/checkpoint.pt.abc123.tmp"))
        ctx.allow(ctx.p("run/.checkpoint.pt.x1y2.pyro_vae.tmp"))
    resume_case("--resume a run holding temporary files of a killed write", tmp_files,
                S(lambda ctx, o: run_consistency(ctx.p("run"), 3), expected="leftovers removed"),
                args=[*resume, "--epochs", "3"])

    def dup_metrics(ctx):
        m = ctx.p("run/metrics.jsonl")
        lines = m.read_text().splitlines()
        m.write_text("\n".join([lines[0], lines[0], lines[1]]) + "\n")
    resume_case("--resume a run whose metrics.jsonl repeats epoch 1", dup_metrics,
                S(lambda ctx, o: run_consistency(ctx.p("run"), 3), expected="each epoch once"),
                args=[*resume, "--epochs", "3"])

    def corrupt_metrics(ctx):
        m = ctx.p("run/metrics.jsonl")
        lines = m.read_text().splitlines()
        m.write_text("\n".join([lines[0], '{"epoch": 2, "train_elb', lines[1]]) + "\n")
    resume_case("--resume a run with a corrupt line in the middle of metrics.jsonl",
                corrupt_metrics, OE("metrics.jsonl"), args=[*resume, "--epochs", "3"])

    def other_recipe(ctx):
        for f in ("checkpoint.pt", "best.pt"):
            shutil.copy(base_run("ae") / f, ctx.p(f"run/{f}"))
    def both(ctx, o):
        if o.rc == 0:
            return WRONG, "resumed another recipe's checkpoint in this run's folder"
        v, n = expect_error(o, ["autoenc"])
        if v == OK and not mentions(o.err, ["'vae'", '"vae"', " vae ", "vae)", "vae,", "vae;"]):
            return UNCLEAR, "names only one of the two recipes"
        return v, n
    both.expected = "refused, naming both recipes"
    resume_case("--resume where checkpoint.pt comes from another recipe", other_recipe, both,
                args=[*resume, "--epochs", "3"])

    def edited_config(ctx):
        c = ctx.p("run/config.json")
        d = json.loads(c.read_text())
        d["train"]["lr"] = 0.05
        c.write_text(json.dumps(d, indent=2))
    resume_case("--resume after the user edited config.json (lr 0.05)", edited_config,
                RS("config.json", what="ignored the edited config.json"),
                args=[*resume, "--epochs", "3"])
    resume_case("--resume --epochs 1 on a run that has 2 epochs", lambda ctx: None,
                OE("epochs", check=lambda ctx, o: None if "2" in o.out else "summary does not say 2 epochs"),
                args=[*resume, "--epochs", "1"])
    resume_case("--resume with --lr 0.01", lambda ctx: None, E("--lr", "only --epochs"),
                args=[*resume, "--lr", "0.01"])
    resume_case("--resume with --overwrite", lambda ctx: None, E("--overwrite", "only --epochs"),
                args=[*resume, "--overwrite"])
    resume_case("--resume a run without best.pt", lambda ctx: ctx.p("run/best.pt").unlink(),
                OE("best.pt"), args=[*resume, "--epochs", "3"])
    resume_case("--resume a run without config.json", lambda ctx: ctx.p("run/config.json").unlink(),
                OE("config.json"), args=[*resume, "--epochs", "3"])
    resume_case("--resume a run without checkpoint.pt", lambda ctx: ctx.p("run/checkpoint.pt").unlink(),
                E("checkpoint.pt"))

    def nan_ckpt(ctx):
        def change(s):
            k = next(k for k, v in s["model"].items() if v.is_floating_point())
            s["model"][k].view(-1)[0] = float("nan")
        rewrite_ckpt(ctx.p("run/checkpoint.pt"), change)
    resume_case("--resume a run whose checkpoint holds a NaN weight", nan_ckpt,
                E("nan", "non-finite", "finite"))
    simple("resume", cat, "--resume a folder that does not exist",
           ["train", "--resume", "nowhere", "--device", "cpu"], E("nowhere"))

    def user_folder(ctx):
        ctx.write("mine/config.json", '{"a": 1}\n')
        ctx.write("mine/notes.txt", "notes\n")
    simple("resume", cat, "--resume a user folder (not a run)",
           ["train", "--resume", "mine", "--device", "cpu"], E("mine"), setup=user_folder)

    def ckfile(ctx):
        ctx.copy_run("vae", "run")
    simple("resume", cat, "--resume RUN/checkpoint.pt (the file, not the folder)",
           ["train", "--resume", "run/checkpoint.pt", "--device", "cpu", "--quiet"],
           E("run/checkpoint.pt", forbid=("checkpoint.pt/checkpoint.pt",),
             hint=("folder", "directory")), setup=ckfile)


# ---- locks: two processes on one run -------------------------------------------------

def register_locks():
    cat = "run folder: lock"
    long = ["train", "--epochs", "400", *SMALL, "--out", "run"]

    def holder_named(o, pid):
        if o.rc == 0:
            return None
        if str(pid) not in o.err:
            return UNCLEAR, "refused without naming the process that holds the run (pid)"
        if socket.gethostname() not in o.err:
            return UNCLEAR, "names the pid but not the host"
        return OK, ""

    def while_training(what, argv, expected):
        def fn(ctx):
            a = ctx.spawn(*long)
            if not wait_for(lambda: ctx.p("run/checkpoint.pt").is_file(), 120):
                ctx.kill(a, signal.SIGKILL)
                return HARNESS, f"the background run never got going: {ctx.finish(a).summary()}"
            o = ctx.shown = ctx.cli(*argv)
            alive = a.poll() is None
            intact = ctx.p("run/checkpoint.pt").is_file()
            ctx.kill(a, signal.SIGKILL)
            oa = ctx.finish(a)
            if o.rc == 0 or o.timed_out:
                return LOSS, "took over a run that another process was training"
            if not alive and not oa.killed:
                return LOSS, "the training process died while the second command ran"
            if not intact:
                return LOSS, "the training run's checkpoint was removed"
            return holder_named(o, a.pid)
        add("lock", cat, what, expected, fn)

    while_training("train --overwrite the run another process is training",
                   ["train", "--epochs", "1", *SMALL, "--out", "run", "--overwrite"],
                   "refused, naming the holder (pid, host); the run untouched")
    while_training("train --resume the run another process is training",
                   ["train", "--resume", "run", "--epochs", "3", "--device", "cpu", "--quiet"],
                   "refused, naming the holder (pid, host)")

    def evaluate_while(ctx):
        a = ctx.spawn(*long)
        if not wait_for(lambda: ctx.p("run/checkpoint.pt").is_file(), 120):
            ctx.kill(a, signal.SIGKILL)
            return HARNESS, f"the background run never got going: {ctx.finish(a).summary()}"
        o = ctx.shown = ctx.cli("evaluate", "run", "--k", "7", "--device", "cpu", "--quiet")
        alive = a.poll() is None
        ctx.kill(a, signal.SIGKILL)
        oa = ctx.finish(a)
        if not alive and not oa.killed:
            return LOSS, "the training process died while evaluate ran"
        if o.rc == 0:
            return OK, "evaluated the last checkpoint while training went on"
        return holder_named(o, a.pid)
    add("lock", cat, "evaluate a run while another process trains it",
        "evaluates the last checkpoint, or refused naming the holder", evaluate_while)

    def simultaneous(ctx):
        args = ["train", "--epochs", "3", *SMALL, "--out", "run"]
        a, b = ctx.spawn(*args), ctx.spawn(*args)
        oa, ob = ctx.finish(a, 180), ctx.finish(b, 180)
        if oa.rc == 0 and ob.rc == 0:
            return WRONG, "both processes trained into the same folder and exited 0"
        if oa.rc != 0 and ob.rc != 0:
            return UNCLEAR, f"both failed: {oa.message} / {ob.message}"
        loser, winner = (ob, a) if oa.rc == 0 else (oa, b)
        if str(winner.pid) not in loser.err and "in use" not in loser.err and \
                "exists" not in loser.err:
            return UNCLEAR, f"the refused one says: {loser.message}"
        return OK, ""
    add("lock", cat, "two `train --out run` processes started at the same moment",
        "one trains, the other is refused", simultaneous)


# ---- checkpoints --------------------------------------------------------------------

def flip_bit_in_weights(path):
    """Flip one bit inside the largest tensor stored in a torch zip checkpoint."""
    with zipfile.ZipFile(path) as z:
        infos = [i for i in z.infolist() if "/data/" in i.filename]
        big = max(infos, key=lambda i: i.file_size)
    raw = bytearray(Path(path).read_bytes())
    off = big.header_offset
    n, m = struct.unpack("<HH", raw[off + 26:off + 30])
    start = off + 30 + n + m
    raw[start + big.file_size // 2] ^= 0x40
    Path(path).write_bytes(bytes(raw))


def register_checkpoints():
    cat = "checkpoint"
    ev = ["evaluate", "run", "--device", "cpu", "--quiet"]

    def ck(what, mutate, judge, args=ev, run="vae"):
        def fn(ctx):
            ctx.copy_run(run, "run")
            mutate(ctx, ctx.p("run/checkpoint.pt"))
            o = ctx.cli(*args)
            return judge(ctx, o)
        add("ckpt", cat, what, judge.expected, fn)

    def change(fn):
        return lambda ctx, path: rewrite_ckpt(path, fn)

    def first_float(s):
        return next(k for k, v in s["model"].items() if v.is_floating_point())

    def set_first(value):
        def fn(s):
            s["model"][first_float(s)].view(-1)[0] = value
        return fn

    named = ("checkpoint.pt",)
    ck("truncated to half its size", lambda ctx, p: p.write_bytes(p.read_bytes()[:p.stat().st_size // 2]),
       E(*named))
    ck("zero bytes", lambda ctx, p: p.write_bytes(b""), E(*named))
    ck("one bit flipped inside the weights", lambda ctx, p: flip_bit_in_weights(p),
       E(*named, hint=("corrupt", "digest", "checksum", "damaged", "changed")))
    ck("a NaN weight", change(set_first(float("nan"))), E("nan", "non-finite", "finite"))
    ck("an infinite weight", change(set_first(float("inf"))), E("inf", "non-finite", "finite"))

    def latent8(s):
        s["config"]["model"]["latent_dim"] = 8
    ck("config says latent_dim 8, weights are for 4", change(latent8),
       E("latent_dim", "match", "checkpoint.pt"), )

    def no_model(s):
        del s["model"]
    ck("the 'model' entry removed", change(no_model), E("model", "checkpoint.pt"))

    def v99(s):
        s["version"] = 99
    ck("version 99", change(v99), E("version"))
    ck("a plain PyTorch state_dict (another program's checkpoint)",
       lambda ctx, p: torch.save(torch.nn.Linear(3, 2).state_dict(), p), E(*named))

    def payload(ctx, p):
        victim = ctx.write("precious.txt", "my notes\n")
        torch.save({"format": "pyro_vae.checkpoint", "version": 1, "model": Evil(victim)}, p)
    ck("a pickle that would delete a user file", payload, E(*named, "pickle", "refused"))
    ck("JSON text named checkpoint.pt", lambda ctx, p: p.write_text('{"epoch": 1}'), E(*named))

    def as_dir(ctx, p):
        p.unlink()
        p.mkdir()
    ck("checkpoint.pt is a folder", as_dir, E(*named, hint=("is a folder", "is a directory", "not a file")))

    def shape65(s):
        s["event_shape"] = [65]
    ck("event_shape [65] while the weights take 64", change(shape65),
       E("event_shape", "65", "checkpoint.pt"))

    def bogus(s):
        s["config"]["model"]["bogus"] = 1
    ck("its recipe holds an unknown key", change(bogus), E("bogus"))

    def epoch_str(s):
        s["epoch"] = "abc"
    ck("epoch is the string 'abc'", change(epoch_str), E("epoch", "checkpoint.pt"))

    def extra_key(s):
        s["model"]["extra.weight"] = torch.zeros(2)
    ck("an extra tensor in the weights", change(extra_key), E("extra.weight", "checkpoint.pt", "match"))
    ck("sample from a checkpoint with a NaN weight", change(set_first(float("nan"))),
       E("nan", "non-finite", "finite"), args=["sample", "run", "-o", "s.png", "--device", "cpu"])

    def foreign_run(ctx, p):
        shutil.copy(base_run("ae") / "checkpoint.pt", p)
    ck("evaluate a run whose checkpoint.pt was copied from another run",
       foreign_run, RS("autoenc", what="evaluated another recipe's weights under this run"))

    def payload_loglik(ctx, p):
        victim = ctx.write("precious.txt", "my notes\n")
        for f in ctx.p("run").glob("loglik-*.pt"):
            torch.save({"format": "pyro_vae.loglik", "log_likelihood": Evil(victim)}, f)
    ck("a loglik-*.pt holding a pickle that deletes a user file (compare reuses it)",
       payload_loglik, OE("loglik"),
       args=["compare", "run", "run", "--device", "cpu", "--quiet"])


# ---- run folders missing files, damaged text files ---------------------------------

def register_run_files():
    cat = "run folder: missing / damaged files"
    ev = ["evaluate", "run", "--device", "cpu", "--quiet"]
    sample = ["sample", "run", "-o", "s.png", "--device", "cpu"]
    report = ["report", "run", "-o", "rep", "--device", "cpu"]
    export = ["export", "run", "-o", "l.nc", "--num-images", "10", "--num-samples", "10",
              "--k", "20", "--device", "cpu"]
    score = ["score", "run", "-o", "s.csv", "--k", "5", "--quiet", "--device", "cpu"]

    def rf(what, mutate, args, judge):
        def fn(ctx):
            ctx.copy_run("vae", "run")
            mutate(ctx)
            o = ctx.cli(*args)
            return judge(ctx, o)
        add("files", cat, what, judge.expected, fn)

    def rm(name):
        def fn(ctx):
            for p in ctx.p("run").glob(name):
                p.unlink()
        return fn

    rf("evaluate without config.json", rm("config.json"), ev, S())
    rf("evaluate without metrics.jsonl", rm("metrics.jsonl"), ev, S())
    rf("evaluate without eval.json", rm("eval.json"), ev, S(lambda ctx, o: None if ctx.p(
        "run/eval.json").is_file() else "no eval.json written"))
    rf("evaluate without best.pt", rm("best.pt"), ev, S())
    rf("evaluate without checkpoint.pt", rm("checkpoint.pt"), ev, E("checkpoint.pt"))
    rf("sample without config.json", rm("config.json"), sample, S())
    rf("sample without checkpoint.pt", rm("checkpoint.pt"), sample, E("checkpoint.pt"))
    rf("report without config.json", rm("config.json"), report, OE("config.json"))
    rf("report without metrics.jsonl", rm("metrics.jsonl"), report, S())
    rf("report without eval.json", rm("eval.json"), report, E("eval.json", hint=("evaluate",)))
    rf("report without the saved loglik-*.pt", rm("loglik-*.pt"), report,
       E("evaluate", hint=("evaluate",)))
    rf("report without checkpoint.pt", rm("checkpoint.pt"), report, E("checkpoint.pt"))
    rf("export without config.json", rm("config.json"), export, S())
    rf("score without checkpoint.pt", rm("checkpoint.pt"), score, E("checkpoint.pt"))
    rf("compare without the saved loglik-*.pt", rm("loglik-*.pt"),
       ["compare", "run", "run", "--device", "cpu", "--quiet"], S())

    def write(rel, text):
        def fn(ctx):
            ctx.p(rel).write_text(text)
        return fn

    rf("evaluate with a corrupt eval.json", write("run/eval.json", '{"k": 5, "test_log'), ev,
       OE("eval.json"))
    rf("evaluate with eval.json holding a JSON list", write("run/eval.json", "[1, 2, 3]\n"), ev,
       OE("eval.json"))
    rf("evaluate with a corrupt loglik-k5-seed0.pt", write("run/loglik-k5-seed0.pt", "garbage"),
       ev, S())
    rf("report with a corrupt eval.json", write("run/eval.json", '{"k": 5, "test_log'), report,
       E("eval.json"))
    rf("report with eval.json holding a JSON list", write("run/eval.json", "[1, 2, 3]\n"), report,
       E("eval.json"))

    def no_k(ctx):
        e = json.loads(ctx.p("run/eval.json").read_text())
        e.pop("k", None)
        ctx.p("run/eval.json").write_text(json.dumps(e))
    rf("report with eval.json lacking 'k'", no_k, report,
       OE("eval.json", "'k'", forbid=("--k 0", "k = 0")))
    rf("report with a corrupt config.json", write("run/config.json", "{not json"), report,
       E("config.json"))

    def bad_metrics_line(ctx):
        m = ctx.p("run/metrics.jsonl")
        lines = m.read_text().splitlines()
        m.write_text("\n".join([lines[0], "{oops", lines[1]]) + "\n")
    rf("report with a corrupt line in the middle of metrics.jsonl", bad_metrics_line, report,
       RS("metrics.jsonl", what="dropped a corrupt metrics line"))

    def metrics_number(ctx):
        ctx.p("run/metrics.jsonl").write_text("5\n7\n")
    rf("report with metrics.jsonl lines that are numbers, not records", metrics_number, report,
       RS("metrics.jsonl"))

    def truncated_last(ctx):
        m = ctx.p("run/metrics.jsonl")
        m.write_text(m.read_text() + '{"epoch": 3, "train_el')
    rf("report with the last metrics.jsonl line cut short", truncated_last, report, S())


# ---- evaluate, compare, sample, export, score, report, recipes ---------------------

def register_commands():
    dev = ["--device", "cpu"]

    # evaluate
    cat = "cli: evaluate"
    ev = ["evaluate", "run", *dev, "--quiet"]

    def with_run(name="vae", rel="run"):
        return lambda ctx: ctx.copy_run(name, rel)

    for what, extra, judge in [
        ("--k 0", ["--k", "0"], E("--k", "eval.k", forbid=("num_particles",))),
        ("--k -3", ["--k", "-3"], E("--k", "eval.k", forbid=("num_particles",))),
        ("--k abc", ["--k", "abc"], E("--k")),
        ("--k 2.5", ["--k", "2.5"], E("--k")),
        ("--k 1", ["--k", "1"], S()),
        ("--batch-size 0", ["--batch-size", "0"], E("--batch-size", "batch_size")),
        ("--batch-size -1", ["--batch-size", "-1"], E("--batch-size", "batch_size")),
        ("--particle-batch 0", ["--particle-batch", "0"], E("--particle-batch", "particle_batch")),
        ("--particle-batch 1000000000", ["--particle-batch", "1000000000"], OE("--particle-batch")),
        ("--seed -1", ["--seed", "-1"], OE("--seed", "seed")),
        ("--seed 99999999999999999999", ["--seed", "99999999999999999999"], OE("--seed", "seed")),
        ("--device tpu", ["--device", "tpu"], E("tpu")),
        ("--device ''", ["--device", ""], E("device")),
        ("--device cuda:abc", ["--device", "cuda:abc"], E("cuda:abc", "device")),
    ]:
        simple("eval", cat, f"evaluate {what}", [*ev, *extra], judge, setup=with_run())
    for what, target, setup, judge in [
        ("a folder that does not exist", "nowhere", None, E("nowhere")),
        ("a file", "notes.txt", lambda ctx: ctx.write("notes.txt", "x\n"), E("notes.txt")),
        ("an empty folder", "empty", lambda ctx: ctx.p("empty").mkdir(), E("empty")),
        ("a user folder with its own config.json", "mine",
         lambda ctx: (ctx.write("mine/config.json", "{}\n"), ctx.write("mine/a.txt", "a\n")), E("mine")),
        ("RUN/ with a trailing slash", "run/", with_run(), S()),
        ("a run folder with spaces and unicode", "mes runs/run é 1", with_run(rel="mes runs/run é 1"), S()),
    ]:
        simple("eval", cat, f"evaluate {what}", ["evaluate", target, *dev, "--quiet"], judge,
               setup=setup)

    def ckpt_file(ctx, o):
        if o.rc == 0:
            return OK, "accepted the file"
        return expect_error(o, ["run/checkpoint.pt", "run"], forbid=("checkpoint.pt/",),
                            hint=("folder", "directory"))
    ckpt_file.expected = "works, or asks for the folder (clear, early)"
    simple("eval", cat, "evaluate RUN/checkpoint.pt (the file, not the folder)",
           ["evaluate", "run/checkpoint.pt", *dev, "--quiet"], ckpt_file, setup=with_run())

    def npz_run(ctx, changed=False):
        ctx.copy_run("npz", "run")
        data = NPZ_BYTES["npz"]
        if changed:
            rng = np.random.default_rng(99)
            buf = io.BytesIO()
            np.savez(buf, train=rng.integers(0, 256, (300, 5, 5), dtype=np.uint8),
                     test=rng.integers(0, 256, (60, 5, 5), dtype=np.uint8))
            data = buf.getvalue()
        ctx.write("data.npz", data)
    simple("eval", cat, "evaluate an npz run with its data file beside it", ev, S(),
           setup=npz_run)
    simple("eval", cat, "evaluate an npz run after data.npz was regenerated (other images)", ev,
           RS("changed", "differ", "not the data", "fingerprint", "different",
              what="evaluated on other data than the run was trained on"),
           setup=lambda ctx: npz_run(ctx, changed=True))
    simple("eval", cat, "evaluate an npz run from a folder without its data file", ev,
           E("data.npz"), setup=lambda ctx: ctx.copy_run("npz", "run"))

    # compare
    cat = "cli: compare"
    cmpv = ["compare", "a", "b", *dev, "--quiet"]

    def two(a, b):
        return lambda ctx: (ctx.copy_run(a, "a"), ctx.copy_run(b, "b"))
    simple("cmp", cat, "compare two runs on the same data", cmpv, S(), setup=two("vae", "vae_b"))
    simple("cmp", cat, "compare a run with itself", ["compare", "a", "a", *dev, "--quiet"], S(),
           setup=two("vae", "vae_b"))
    simple("cmp", cat, "compare a digits run with an npz run", cmpv,
           E("data", "different"), setup=lambda ctx: (two("vae", "npz")(ctx),
                                                      ctx.write("data.npz", NPZ_BYTES["npz"])))
    simple("cmp", cat, "compare a VAE (log p(x)) with a conditional VAE (log p(x|y))", cmpv,
           RS("p(x|y)", "p(x | y)", "conditional", what="paired log p(x) with log p(x|y)"),
           setup=two("vae", "cvae"))
    simple("cmp", cat, "compare with a run that does not exist", ["compare", "a", "nowhere", *dev],
           E("nowhere"), setup=with_run(rel="a"))
    simple("cmp", cat, "compare --k 0", [*cmpv, "--k", "0"], E("--k", "eval.k", forbid=("num_particles",)),
           setup=two("vae", "vae_b"))
    simple("cmp", cat, "compare a flat VAE with a hierarchical one", cmpv, S(),
           setup=two("vae", "hier"))

    # sample
    cat = "cli: sample"
    smp = ["sample", "run", *dev]
    for what, extra, judge, run in [
        ("-n 0", ["-n", "0"], E("-n", "--num-samples"), "vae"),
        ("-n -5", ["-n", "-5"], E("-n", "--num-samples"), "vae"),
        ("-n abc", ["-n", "abc"], E("-n", "--num-samples"), "vae"),
        ("-n 1", ["-n", "1", "-o", "one.png"], S(), "vae"),
        ("-o out.txt (not an image format)", ["-o", "out.txt"], E("out.txt", "txt", "format"), "vae"),
        ("-o out (no extension)", ["-o", "out"], OE("out", "extension"), "vae"),
        ("-o missing/x.png", ["-o", "missing/x.png"], E("missing"), "vae"),
        ("--label 3 on a model without labels", ["--label", "3", "-o", "s.png"], E("--label"), "vae"),
        ("--label 10 on a 10-class cvae", ["--label", "10", "-o", "s.png"], E("--label", "10"), "cvae"),
        ("--label -1 on a cvae", ["--label", "-1", "-o", "s.png"], E("--label", "-1"), "cvae"),
        ("--label 3 on a cvae (valid)", ["--label", "3", "-o", "s.png"], S(), "cvae"),
        ("--layers on a flat VAE", ["--layers", "-o", "s.png"], E("--layers"), "vae"),
        ("--layers on a hierarchical VAE (valid)", ["--layers", "-o", "s.png"], S(), "hier"),
        ("--layers --label 3 on a cvae", ["--layers", "--label", "3", "-o", "s.png"],
         E("--layers", "--label"), "cvae"),
        ("--seed -1", ["--seed", "-1", "-o", "s.png"], OE("--seed", "seed"), "vae"),
        ("default output inside the run folder", [], S(lambda ctx, o: None if list(
            ctx.p("run").glob("samples-64-seed0.png")) else "no samples-64-seed0.png"), "vae"),
    ]:
        simple("sample", cat, f"sample {what}", [*smp, *extra], judge, setup=with_run(run))

    def existing_png(ctx):
        ctx.copy_run("vae", "run")
        ctx.write("figure.png", b"\x89PNG my own figure")
    simple("sample", cat, "sample -o an existing file of the user's (no --overwrite)",
           [*smp, "-o", "figure.png"], E("figure.png", hint=("--overwrite",)), setup=existing_png)

    def existing_dir(ctx):
        ctx.copy_run("vae", "run")
        ctx.write("figs/keep.txt", "keep\n")
    simple("sample", cat, "sample -o an existing folder, with --overwrite",
           [*smp, "-o", "figs", "--overwrite"], E("figs"), setup=existing_dir)

    # export
    cat = "cli: export"
    exp = ["export", "run", "-o", "l.nc", *dev]
    small = ["--num-images", "10", "--k", "20"]
    for what, extra, judge, run in [
        ("--num-samples 10 (valid)", [*small, "--num-samples", "10"], S(), "vae"),
        ("--num-samples 5 (odd for 2 chains)", [*small, "--num-samples", "5"],
         OE("--num-samples", forbid=("num_chains",)), "vae"),
        ("--num-samples 3", [*small, "--num-samples", "3"], OE("--num-samples", forbid=("num_chains",)), "vae"),
        ("--num-samples 40 with --k 20", [*small, "--num-samples", "40"],
         E("--num-samples", "--k", forbid=("num_particles",)), "vae"),
        ("--num-samples 0", [*small, "--num-samples", "0"], E("--num-samples"), "vae"),
        ("--num-images 0", ["--num-images", "0", "--k", "20", "--num-samples", "10"], E("--num-images"), "vae"),
        ("--num-images -1", ["--num-images", "-1", "--k", "20", "--num-samples", "10"], E("--num-images"), "vae"),
        ("--num-images 100000 (more than the test set)",
         ["--num-images", "100000", "--k", "20", "--num-samples", "10"],
         S(lambda ctx, o: None if "297" in o.out else "does not say how many images were exported"), "vae"),
        ("--k 0", ["--num-images", "10", "--k", "0", "--num-samples", "10"], E("--k", forbid=("num_particles",)), "vae"),
        ("a conditional VAE", [*small, "--num-samples", "10"], E("conditional"), "cvae"),
        ("a hierarchical VAE", [*small, "--num-samples", "10"], S(), "hier"),
        ("--seed -1", [*small, "--num-samples", "10", "--seed", "-1"], OE("--seed", "seed"), "vae"),
    ]:
        simple("export", cat, f"export {what}", [*exp, *extra], judge, setup=with_run(run))
    simple("export", cat, "export -o missing/l.nc",
           ["export", "run", "-o", "missing/l.nc", *small, "--num-samples", "10", *dev],
           E("missing"), setup=with_run())

    def existing_nc(ctx):
        ctx.copy_run("vae", "run")
        ctx.write("l.nc", b"my own netCDF")
    simple("export", cat, "export -o an existing file (no --overwrite)",
           [*exp, *small, "--num-samples", "10"], E("l.nc", hint=("--overwrite",)), setup=existing_nc)

    # score
    cat = "cli: score"
    sc = ["score", "run", "-o", "s.csv", "--quiet", *dev]

    def csv_rows(n):
        def check(ctx, o):
            p = ctx.p("s.csv")
            if not p.is_file():
                return "no s.csv"
            rows = p.read_text().splitlines()
            return None if len(rows) == n + 1 else f"{len(rows) - 1} rows, expected {n}"
        return check
    other8 = lambda ctx: (ctx.copy_run("vae", "run"), ctx.npz("other.npz", **npz_arrays()))
    other5 = lambda ctx: (ctx.copy_run("vae", "run"), ctx.write("other.npz", NPZ_BYTES["npz"]))
    for what, extra, judge, setup in [
        ("--k 10 (valid)", ["--k", "10"], S(csv_rows(297)), with_run()),
        ("--k 0", ["--k", "0"], E("--k", forbid=("num_particles",)), with_run()),
        ("--k -1", ["--k", "-1"], E("--k", forbid=("num_particles",)), with_run()),
        ("--batch-size 0", ["--k", "5", "--batch-size", "0"], E("--batch-size", forbid=("batch_size must",)), with_run()),
        ("--particle-batch 0", ["--k", "5", "--particle-batch", "0"], E("--particle-batch", forbid=("particle_batch must",)), with_run()),
        ("--data fashion-mnist on a digits run", ["--k", "5", "--data", "fashion-mnist"],
         E("784", "shape", "fashion-mnist"), with_run()),
        ("--data other.npz with 8x8 images (valid)", ["--k", "5", "--data", "other.npz"],
         S(csv_rows(100)), other8),
        ("--data other.npz with 5x5 images", ["--k", "5", "--data", "other.npz"],
         E("other.npz", "shape", "25"), other5),
        ("--data missing.npz", ["--k", "5", "--data", "missing.npz"], E("missing.npz"), with_run()),
        ("--data digits on a run trained on 5x5 npz", ["--k", "5", "--data", "digits"],
         E("digits", "shape", "64"), with_run("npz")),
        ("a cvae, --data other.npz without labels", ["--k", "5", "--data", "other.npz"],
         E("label"), lambda ctx: (ctx.copy_run("cvae", "run"), ctx.npz("other.npz", **npz_arrays()))),
    ]:
        simple("score", cat, f"score {what}", [*sc, *extra], judge, setup=setup, timeout=180)
    simple("score", cat, "score -o missing/s.csv", ["score", "run", "-o", "missing/s.csv", "--k", "5", *dev],
           E("missing"), setup=with_run())

    def existing_csv(ctx):
        ctx.copy_run("vae", "run")
        ctx.write("s.csv", "my,own,table\n")
    simple("score", cat, "score -o an existing file (no --overwrite)", [*sc, "--k", "5"],
           E("s.csv", hint=("--overwrite",)), setup=existing_csv)

    # report
    cat = "cli: report"
    rep = ["report", "run", "-o", "rep", *dev]
    simple("report", cat, "report one run", rep, S(lambda ctx, o: None if ctx.p(
        "rep/report.html").is_file() else "no report.html"), setup=with_run())
    simple("report", cat, "report two runs", ["report", "a", "b", "-o", "rep", *dev], S(),
           setup=two("vae", "vae_b"))

    def same_name(ctx):
        ctx.copy_run("vae", "x/run")
        ctx.copy_run("vae_b", "y/run")
        o = ctx.cli("report", "x/run", "y/run", "-o", "rep", *dev)
        if o.rc != 0:
            return expect_error(o, ["run"])
        md = ctx.p("rep/report.md").read_text()
        sections = md.split("\n## ")[1:]
        runs = [s for s in sections if not s.startswith("Comparison")]
        figs = [{l.split("](", 1)[1].rstrip(")") for l in s.splitlines() if l.startswith("![")}
                for s in runs]
        if len(figs) >= 2 and figs[0] & figs[1]:
            return WRONG, f"both runs show the same figures ({sorted(figs[0] & figs[1])[0]})"
        heads = [s.splitlines()[0] for s in runs]
        if len(heads) >= 2 and heads[0] == heads[1]:
            return WRONG, f"two sections both titled {heads[0]!r}"
        return OK, ""
    add("report", cat, "report x/run y/run (two runs whose folders have the same name)",
        "two distinct sections with their own figures", same_name)

    def user_report_md(ctx):
        ctx.copy_run("vae", "run")
        ctx.write("rep/report.md", "# my own report, do not touch\n")
    simple("report", cat, "report -o a folder of the user's holding report.md", rep,
           E("report.md", "rep"), setup=user_report_md)

    def user_figure(ctx):
        ctx.copy_run("vae", "run")
        ctx.write("rep/figures/run-samples.png", b"\x89PNG my figure")
    simple("report", cat, "report -o a folder holding the user's figures/run-samples.png", rep,
           E("run-samples.png", "figures", "rep"), setup=user_figure)

    def existing_report(ctx):
        ctx.copy_run("vae", "run")
        o = ctx.cli(*rep)
        if o.rc != 0:
            return expect_success(o)
        ctx.protect(ctx.p("rep"))
        o2 = ctx.cli(*rep)
        return expect_error(o2, ["report", "rep"], hint=("--overwrite",))
    add("report", cat, "report twice into the same -o without --overwrite",
        "second refused, first kept", existing_report)
    simple("report", cat, "report -o an existing file", ["report", "run", "-o", "out.txt", *dev],
           E("out.txt"), setup=lambda ctx: (ctx.copy_run("vae", "run"), ctx.write("out.txt", "x\n")))
    simple("report", cat, "report an unevaluated run (no eval.json)", rep,
           E("eval.json", hint=("evaluate",)),
           setup=lambda ctx: (ctx.copy_run("vae", "run"), ctx.p("run/eval.json").unlink()))
    simple("report", cat, "report --k 7 (never evaluated at k = 7)", [*rep, "--k", "7"],
           E("7", hint=("evaluate",)), setup=with_run())
    simple("report", cat, "report a folder that is not a run", ["report", "mine", "-o", "rep", *dev],
           E("mine"), setup=lambda ctx: ctx.write("mine/notes.txt", "x\n"))
    simple("report", cat, "report a digits run and an npz run", ["report", "a", "b", "-o", "rep", *dev],
           S(), setup=lambda ctx: (two("vae", "npz")(ctx), ctx.write("data.npz", NPZ_BYTES["npz"])))
    simple("report", cat, "report a run folder with spaces and unicode into -o 'rép ort'",
           ["report", "mes runs/é 1", "-o", "rép ort", *dev], S(),
           setup=with_run(rel="mes runs/é 1"))

    # misc
    cat = "cli: misc"
    simple("misc", cat, "no command at all", [], E("command", "required"))
    simple("misc", cat, "unknown command 'fit'", ["fit"], E("fit"))
    simple("misc", cat, "--version", ["--version"], S())
    simple("misc", cat, "recipes, with a broken models/x.toml in the project", ["recipes"], S(),
           setup=lambda ctx: ctx.write("models/x.toml", "[model\n"))
    simple("misc", cat, "recipes, where models is a file", ["recipes"], S(),
           setup=lambda ctx: ctx.write("models", "not a folder\n"))
    simple("misc", cat, "train --help", ["train", "--help"], S())


# ---- Ctrl-C and a full disk ----------------------------------------------------------

def register_interrupts():
    cat = "interrupt (Ctrl-C)"
    import matplotlib.figure
    import sklearn.datasets
    import tomllib
    import pyro_vae.infer as ev_mod
    import pyro_vae.export as ex_mod

    KI = raiser(KeyboardInterrupt)

    def ki(what, setup, args, patch_of, check=None):
        def fn(ctx):
            if setup is not None:
                setup(ctx)
            o = ctx.cli(*args, patches=[patch_of()])
            v, n = expect_interrupted(o)
            if v == OK and check is not None:
                problem = check(ctx, o)
                if problem:
                    return WRONG, problem
            return v, n
        add("int", cat, what, "exit non-zero (130) with a one-line message, no traceback, "
            "no half-written file", fn)

    def no_files(*patterns):
        def check(ctx, o):
            for pat in patterns:
                found = [p for p in ctx.proj.rglob(pat)]
                if found:
                    return f"left {ctx.rel(found[0])}"
            return None
        return check

    ki("Ctrl-C while train loads the data (start-up)", None, T(),
       lambda: fire_at(sklearn.datasets, "load_digits", KI, label="load_digits"),
       check=no_files("run/checkpoint.pt"))
    ki("Ctrl-C while train reads the recipe", lambda ctx: ctx.recipe("my.toml"),
       ["train", "my.toml", "--device", "cpu", "--quiet", "--out", "run"],
       lambda: fire_at(tomllib, "loads", KI, label="tomllib.loads"))

    def final_eval(ctx):
        o = ctx.cli(*T(), patches=[fire_at(ev_mod, "log_likelihood", KI, label="log_likelihood")])
        v, n = expect_interrupted(o)
        if v != OK:
            return v, n
        o2 = ctx.cli("evaluate", "run", "--device", "cpu", "--quiet")
        if o2.rc != 0:
            return UNCLEAR, f"the interrupted run cannot be evaluated afterwards: {o2.message}"
        return OK, ""
    add("int", cat, "Ctrl-C during train's final test evaluation, then evaluate",
        "exit 130 saying training is saved; evaluate works afterwards", final_eval)

    def keep_eval(ctx):
        ctx.copy_run("vae", "run")
        ctx.protect(ctx.p("run/eval.json"))
    ki("Ctrl-C during evaluate", keep_eval, ["evaluate", "run", "--device", "cpu", "--quiet"],
       lambda: fire_at(ev_mod, "log_likelihood", KI, label="log_likelihood"))
    ki("Ctrl-C during compare", lambda ctx: (ctx.copy_run("vae", "a"), ctx.copy_run("vae_b", "b")),
       ["compare", "a", "b", "--k", "7", "--device", "cpu", "--quiet"],
       lambda: fire_at(ev_mod, "log_likelihood", KI, label="log_likelihood"))
    ki("Ctrl-C during score", lambda ctx: ctx.copy_run("vae", "run"),
       ["score", "run", "-o", "s.csv", "--k", "5", "--device", "cpu", "--quiet"],
       lambda: fire_at(ev_mod, "log_likelihood", KI, label="log_likelihood"),
       check=no_files("s.csv", "*s.csv*tmp*"))
    ki("Ctrl-C while sample saves the figure", lambda ctx: ctx.copy_run("vae", "run"),
       ["sample", "run", "-o", "s.png", "--device", "cpu"],
       lambda: fire_at(matplotlib.figure.Figure, "savefig", KI, label="Figure.savefig"),
       check=no_files("s.png", "*s.png*tmp*", ".s.*"))
    ki("Ctrl-C during export", lambda ctx: ctx.copy_run("vae", "run"),
       ["export", "run", "-o", "l.nc", "--num-images", "10", "--k", "20", "--num-samples", "10",
        "--device", "cpu"],
       lambda: fire_at(ex_mod, "to_inference_data", KI, label="to_inference_data"),
       check=no_files("l.nc"))
    ki("Ctrl-C while report draws its figures", lambda ctx: ctx.copy_run("vae", "run"),
       ["report", "run", "-o", "rep", "--device", "cpu"],
       lambda: fire_at(matplotlib.figure.Figure, "savefig", KI, nth=2, label="Figure.savefig"),
       check=no_files("rep/report.html"))

    cat = "full disk"
    DF = raiser(torch_disk_full)
    NOSPC = raiser(enospc)

    def df(what, setup, args, patch_of, names, check=None, expected=None):
        def fn(ctx):
            if setup is not None:
                setup(ctx)
            o = ctx.cli(*args, patches=[patch_of(ctx)])
            v, n = expect_error(o, names)
            if v == OK and check is not None:
                problem = check(ctx, o)
                if problem:
                    return WRONG, problem
            return v, n
        add("disk", cat, what, expected or "a clear error naming the file; the previous file "
            "intact; no temporary file left", fn)

    def no_tmp(rel):
        def check(ctx, o):
            left = leftovers(ctx.p(rel)) if ctx.p(rel).is_dir() else []
            return f"left {left}" if left else None
        return check

    words = ("disk", "space", "could not write", "checkpoint")
    df("torch.save fails (PytorchStreamWriter) writing train's first checkpoint", None, T(),
       lambda ctx: fire_at(torch, "save", DF, label="torch.save"), words, check=no_tmp("run"))
    df("torch.save fails with ENOSPC writing train's first checkpoint", None, T(),
       lambda ctx: fire_at(torch, "save", NOSPC, label="torch.save"), words, check=no_tmp("run"))

    def keep(*rels):
        def setup(ctx):
            ctx.copy_run("vae", "run")
            for r in rels:
                ctx.protect(ctx.p(r))
        return setup
    df("torch.save fails while evaluate saves its estimates", keep("run/eval.json"),
       ["evaluate", "run", "--k", "7", "--device", "cpu", "--quiet"],
       lambda ctx: fire_at(torch, "save", DF, label="torch.save"),
       ("loglik", "disk", "space", "could not write"), check=no_tmp("run"))
    df("torch.save fails during --resume (previous checkpoint must survive)",
       keep("run/checkpoint.pt", "run/best.pt"),
       ["train", "--resume", "run", "--epochs", "3", "--device", "cpu", "--quiet"],
       lambda ctx: fire_at(torch, "save", DF, label="torch.save"), words, check=no_tmp("run"))
    import matplotlib.figure as mf
    df("the disk fills while train writes its figures", None, T(),
       lambda ctx: fire_at(mf.Figure, "savefig", NOSPC, label="Figure.savefig"),
       ("png", "disk", "space", "could not write"))
    df("fsync fails with ENOSPC while evaluate writes", keep("run/eval.json"),
       ["evaluate", "run", "--k", "7", "--device", "cpu", "--quiet"],
       lambda ctx: fire_at(os, "fsync", NOSPC, label="os.fsync"),
       ("disk", "space", "could not write", "eval.json", "loglik"), check=no_tmp("run"))
    def csv_full(ctx):
        import csv

        class FullWriter:  # the disk fills after 20 rows
            def __init__(self, w):
                self.w, self.n = w, 0

            def writerow(self, row):
                self.n += 1
                if self.n > 20:
                    raise enospc()
                return self.w.writerow(row)

            def writerows(self, rows):
                for row in rows:
                    self.writerow(row)

        return fire_at(csv, "writer", lambda orig, *a, **k: FullWriter(orig(*a, **k)),
                       label="csv.writer")
    df("the disk fills while score writes its CSV", keep(),
       ["score", "run", "-o", "s.csv", "--k", "5", "--device", "cpu", "--quiet"], csv_full,
       ("s.csv", "disk", "space"), check=lambda ctx, o: "left s.csv" if ctx.p("s.csv").exists() else None)
    df("the disk fills while sample saves its PNG", keep(),
       ["sample", "run", "-o", "s.png", "--device", "cpu"],
       lambda ctx: fire_at(mf.Figure, "savefig", NOSPC, label="Figure.savefig"),
       ("s.png", "disk", "space"))

    def nc_full(ctx):
        import arviz
        return fire_at(arviz.InferenceData, "to_netcdf", NOSPC, label="InferenceData.to_netcdf")
    df("the disk fills while export writes netCDF", keep(),
       ["export", "run", "-o", "l.nc", "--num-images", "10", "--k", "20", "--num-samples", "10",
        "--device", "cpu"], nc_full, ("l.nc", "disk", "space"))
    df("the disk fills while report writes figures", keep(),
       ["report", "run", "-o", "rep", "--device", "cpu"],
       lambda ctx: fire_at(mf.Figure, "savefig", NOSPC, label="Figure.savefig"),
       ("png", "rep", "disk", "space"))


# ---- permissions: umask and read-only folders ---------------------------------------

def register_permissions():
    cat = "permissions"

    def perm(what, umask, setup, args, files_of):
        def fn(ctx):
            if setup is not None:
                setup(ctx)
            o = ctx.cli(*args, umask=umask)
            if o.rc != 0:
                return expect_success(o)
            paths = files_of(ctx)
            if not paths:
                return HARNESS, "no files to check"
            problem = wrong_modes(paths, umask)
            return (WRONG, problem) if problem else (OK, "")
        add("perm", cat, what, f"files are {oct(0o666 & ~umask)} (umask {oct(umask)})", fn)

    def run_files(rel="run"):
        return lambda ctx: [p for p in ctx.p(rel).iterdir() if p.is_file()]
    for um in (0o022, 0o002, 0o077):
        perm(f"train under umask {oct(um)}", um, None, T(), run_files())
    run = lambda ctx: ctx.copy_run("vae", "run")
    perm("evaluate under umask 0o002 (new eval files)", 0o002,
         lambda ctx: (run(ctx), [p.unlink() for p in ctx.p("run").glob("loglik-*")],
                      ctx.p("run/eval.json").unlink()),
         ["evaluate", "run", "--device", "cpu", "--quiet"],
         lambda ctx: [ctx.p("run/eval.json"), *ctx.p("run").glob("loglik-*.pt")])
    perm("sample -o under umask 0o002", 0o002, run, ["sample", "run", "-o", "s.png", "--device", "cpu"],
         lambda ctx: [ctx.p("s.png")])
    perm("score -o under umask 0o002", 0o002, run,
         ["score", "run", "-o", "s.csv", "--k", "5", "--device", "cpu", "--quiet"],
         lambda ctx: [ctx.p("s.csv")])
    perm("export -o under umask 0o002", 0o002, run,
         ["export", "run", "-o", "l.nc", "--num-images", "10", "--k", "20", "--num-samples", "10",
          "--device", "cpu"], lambda ctx: [ctx.p("l.nc")])
    perm("report under umask 0o002", 0o002, run, ["report", "run", "-o", "rep", "--device", "cpu"],
         lambda ctx: [p for p in ctx.p("rep").rglob("*") if p.is_file()])
    perm("--resume under umask 0o002", 0o002, run,
         ["train", "--resume", "run", "--epochs", "3", "--device", "cpu", "--quiet"],
         lambda ctx: [ctx.p("run/checkpoint.pt"), ctx.p("run/metrics.jsonl")])

    cat = "read-only folders"

    def read_only(ctx, rel="run"):
        ctx.copy_run("vae", rel)
        ctx.protect(ctx.p(rel))
        make_read_only(ctx, ctx.p(rel))

    def ro(what, args, judge, setup=read_only):
        def fn(ctx):
            setup(ctx)
            o = ctx.cli(*args)
            return judge(ctx, o)
        add("ro", cat, what, judge.expected, fn)

    ro("evaluate a read-only run (a colleague's)",
       ["evaluate", "run", "--device", "cpu", "--quiet"],
       RS("read-only", "permission", "not writable", "run", what="evaluated without saving"))
    ro("sample from a read-only run into its folder (default -o)",
       ["sample", "run", "--device", "cpu"], E("run", "permission", "writable"))
    ro("sample from a read-only run into a writable -o", ["sample", "run", "-o", "s.png", "--device", "cpu"],
       S())
    ro("score a read-only run into a writable -o",
       ["score", "run", "-o", "s.csv", "--k", "5", "--device", "cpu", "--quiet"], S())
    ro("report a read-only run into a writable -o", ["report", "run", "-o", "rep", "--device", "cpu"], S())
    ro("compare two read-only runs", ["compare", "run", "run2", "--k", "7", "--device", "cpu", "--quiet"],
       OE("run", "permission", "writable"),
       setup=lambda ctx: (read_only(ctx, "run"), read_only(ctx, "run2")))
    ro("--resume a read-only run", ["train", "--resume", "run", "--epochs", "3", "--device", "cpu",
                                    "--quiet"], E("run", "permission", "writable"))

    def ro_parent(ctx):
        ctx.p("locked").mkdir()
        make_read_only(ctx, ctx.p("locked"))
    ro("train --out inside a read-only folder", T()[:-1] + ["locked/run"],
       E("locked", "permission", "writable"), setup=ro_parent)


# ---- paths --------------------------------------------------------------------------

def register_paths():
    cat = "paths"
    simple("path", cat, "train --out 'mes runs/été 1' (spaces, unicode)",
           ["train", "--epochs", "1", *SMALL, "--out", "mes runs/été 1"],
           S(has_run("mes runs/été 1")))
    simple("path", cat, "sample -o 'figures é/échantillon 1.png'",
           ["sample", "run", "-o", "figures é/échantillon 1.png", "--device", "cpu"], S(),
           setup=lambda ctx: (ctx.copy_run("vae", "run"), ctx.p("figures é").mkdir()))
    simple("path", cat, "score -o 'scores é/s 1.csv'",
           ["score", "run", "-o", "scores é/s 1.csv", "--k", "5", "--device", "cpu", "--quiet"], S(),
           setup=lambda ctx: (ctx.copy_run("vae", "run"), ctx.p("scores é").mkdir()))
    simple("path", cat, "evaluate with an absolute run path",
           lambda ctx: ["evaluate", str(ctx.p("run")), "--device", "cpu", "--quiet"], S(),
           setup=lambda ctx: ctx.copy_run("vae", "run"))
    simple("path", cat, "train --out with an absolute path",
           lambda ctx: ["train", "--epochs", "1", *SMALL, "--out", str(ctx.p("abs run"))],
           S(has_run("abs run")))


# ---- absurd sizes (subprocesses with a time and address-space limit) ---------------

def register_huge():
    cat = "absurd sizes"
    run = lambda ctx: ctx.copy_run("vae", "run")
    sub_case("huge", cat, "train --latent-dim 100000000",
             ["train", "--epochs", "1", *SMALL, "--latent-dim", "100000000", "--out", "run"],
             RS("latent", "100000000", "100,000,000", "memory"))
    sub_case("huge", cat, "train --set model.hidden=[100000000]",
             ["train", "--epochs", "1", *SMALL, "--set", "model.hidden=[100000000]", "--out", "run"],
             RS("hidden", "100000000", "100,000,000", "memory"))
    sub_case("huge", cat, "train --set train.num_particles=1000000",
             ["train", "--epochs", "1", *SMALL, "--set", "train.num_particles=1000000", "--out", "run"],
             RS("num_particles", "1000000", "1,000,000", "memory"))
    sub_case("huge", cat, "train --set eval.k=1000000000",
             ["train", "--epochs", "1", *SMALL, "--set", "eval.k=1000000000", "--out", "run"],
             RS("eval.k", "1000000000", "1,000,000,000"))
    sub_case("huge", cat, "evaluate --k 1000000000",
             ["evaluate", "run", "--k", "1000000000", "--device", "cpu", "--quiet"],
             RS("--k", "1000000000", "1,000,000,000"), setup=run)
    sub_case("huge", cat, "score --k 1000000000",
             ["score", "run", "-o", "s.csv", "--k", "1000000000", "--device", "cpu", "--quiet"],
             RS("--k", "1000000000", "1,000,000,000"), setup=run)
    sub_case("huge", cat, "sample -n 10000000",
             ["sample", "run", "-n", "10000000", "-o", "s.png", "--device", "cpu"],
             RS("-n", "10000000", "10,000,000"), setup=run)
    sub_case("huge", cat, "export --num-samples 1000000 --k 1000000",
             ["export", "run", "-o", "l.nc", "--num-images", "10", "--num-samples", "1000000",
              "--k", "1000000", "--device", "cpu"],
             RS("--num-samples", "--k", "1000000", "1,000,000", "memory"), setup=run)
    sub_case("huge", cat, "train --set model.guide=iaf with num_flows=100000",
             ["train", "--epochs", "1", *SMALL, "--set", "model.guide=iaf", "--set",
              "model.guide_options={num_flows=100000}", "--out", "run"],
             RS("num_flows", "100000", "100,000", "memory"), timeout=25)


# --------------------------------------------------------------------------------------
# running and reporting


def register_all():
    register_train_flags()
    register_components()
    register_recipes()
    register_npz()
    register_data_dir()
    register_run_folders()
    register_resume()
    register_locks()
    register_checkpoints()
    register_run_files()
    register_commands()
    register_interrupts()
    register_permissions()
    register_paths()
    register_huge()


@dataclass
class Result:
    case: Case
    verdict: str
    result: str
    seconds: float


def run_case(case):
    ctx = Ctx(case)
    t0 = time.perf_counter()
    verdict, note = HARNESS, ""
    try:
        verdict, note = case.fn(ctx)
    except HarnessError as e:
        verdict, note = HARNESS, str(e)
    except BaseException as e:  # noqa: BLE001 - a harness bug must not stop the others
        if isinstance(e, KeyboardInterrupt) and not ctx.outcomes:
            raise
        tb = traceback.format_exc().strip().splitlines()
        where = next((l.strip() for l in reversed(tb) if l.strip().startswith("File")), "")
        verdict, note = HARNESS, f"harness raised {type(e).__name__}: {e} ({where})"
    finally:
        ctx.cleanup()
    seconds = time.perf_counter() - t0
    main = ctx.shown or next((o for o in reversed(ctx.outcomes) if not o.killed),
                             ctx.outcomes[-1] if ctx.outcomes else None)
    tb = next((o for o in ctx.outcomes if o.traceback), None)
    untriggered = [p.label for p in ctx.patches if p.required and p.hits == 0]
    try:
        loss = ctx.data_loss()
    except Exception as e:  # noqa: BLE001
        loss = [f"(could not check: {e})"]
    if loss:
        verdict = LOSS
        note = "; ".join(loss[:2]) + (f" (+{len(loss) - 2} more)" if len(loss) > 2 else "") + \
            (f" ({note})" if note and not note.startswith(("accepted", "exit", "message",
                                                             "refused")) else "")
        shown = main
    elif tb is not None:
        verdict, note, shown = TB, "", tb
    elif untriggered and verdict != HARNESS and not (main and (main.rc not in (0, None))):
        verdict, note, shown = HARNESS, f"the simulated event ({untriggered[0]}) never happened", main
    else:
        shown = main
    if verdict == TB:
        text = shown.summary()
    else:
        summary = shown.summary() if shown is not None else ""
        text = note if not summary else (f"{note} — {summary}" if note else summary)
    return Result(case, verdict, text, seconds)


def md_cell(text, limit=150):
    text = " ".join(str(text).split())
    if len(text) > limit:
        text = text[:limit - 1] + "…"
    return text.replace("|", "\\|")


def write_markdown(path, results, argv, started, seconds):
    counts = {v: sum(r.verdict == v for r in results) for v in VERDICTS}
    cats = []
    for r in results:
        if r.case.category not in cats:
            cats.append(r.case.category)
    lines = [
        "# pyro_vae reliability pass",
        "",
        f"Command: `python analysis/reliability.py {' '.join(argv)}`".rstrip() + "  ",
        f"Date: {started:%Y-%m-%d %H:%M:%S} (took {seconds / 60:.1f} min, "
        f"{len(results)} cases; pyro_vae at `{git_head()}`)",
        "",
        "Each case runs in a fresh temporary project folder with `HOME` and `XDG_CACHE_HOME` "
        "pointed at temporary folders and `PYRO_VAE_DATA` unset; verdicts are decided by code "
        "(exit status, message, SHA-256 of every user file before and after). See the "
        "docstring of `analysis/reliability.py` for the verdict rules.",
        "",
        "## Summary",
        "",
        "| verdict | cases |",
        "|---|---|",
    ]
    lines += [f"| {v} | {counts[v]} |" for v in VERDICTS if counts[v] or v != HARNESS]
    lines += ["", "| category | " + " | ".join(v for v in VERDICTS if counts[v]) + " | total |",
              "|---|" + "---|" * (sum(1 for v in VERDICTS if counts[v]) + 1)]
    for c in cats:
        rs = [r for r in results if r.case.category == c]
        lines.append(f"| {c} | " + " | ".join(str(sum(r.verdict == v for r in rs))
                                              for v in VERDICTS if counts[v]) + f" | {len(rs)} |")
    lines += ["", "## Cases", "", "| # | category | case | expected | result | verdict |",
              "|---|---|---|---|---|---|"]
    for r in results:
        verdict = r.verdict if r.verdict == OK else f"**{r.verdict}**"
        lines.append(f"| {r.case.id} | {md_cell(r.case.category)} | {md_cell(r.case.what, 110)} | "
                     f"{md_cell(r.case.expected, 90)} | {md_cell(r.result)} | {verdict} |")
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return counts


def git_head():
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "pyro_vae"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head + (" + uncommitted changes" if dirty else "")
    except Exception:  # noqa: BLE001
        return "unknown"


def main(argv=None):
    global SESSION, torch, pyro, np, cli
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(REPO / "analysis" / "RELIABILITY.md"),
                        help="Markdown report to write (default: analysis/RELIABILITY.md)")
    parser.add_argument("--only", action="append", default=[],
                        help="run only cases whose id, category or text contains this "
                             "(case-insensitive; repeatable)")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folders")
    args = parser.parse_args(argv)

    SESSION = Path(tempfile.mkdtemp(prefix="pyro_vae-reliability-"))
    os.chmod(SESSION, 0o755)
    for d in ("cases", "base", "mpl"):
        (SESSION / d).mkdir()
        os.chmod(SESSION / d, 0o777 if d == "mpl" else 0o755)
    os.environ["MPLCONFIGDIR"] = str(SESSION / "mpl")
    os.environ.pop("PYRO_VAE_DATA", None)
    os.environ["HOME"] = str(SESSION / "base")
    os.environ["XDG_CACHE_HOME"] = str(SESSION / "base" / ".cache")
    os.umask(UMASK)
    warnings.simplefilter("ignore")

    import matplotlib
    matplotlib.use("Agg")
    import numpy
    import pyro as _pyro
    import torch as _torch
    from pyro_vae import cli as _cli
    np, pyro, torch, cli = numpy, _pyro, _torch, _cli

    register_all()
    cases = CASES
    if args.only:
        keys = [k.lower() for k in args.only]
        cases = [c for c in CASES if any(k in f"{c.id} {c.category} {c.what}".lower() for k in keys)]
    if args.list:
        for c in cases:
            print(f"{c.id:10s} {c.category:38s} {c.what}")
        print(f"{len(cases)} cases")
        shutil.rmtree(SESSION, ignore_errors=True)
        return 0

    started = datetime.datetime.now()
    t0 = time.perf_counter()
    results = []
    print(f"{len(cases)} cases; temporary folder {SESSION}", flush=True)
    try:
        for i, case in enumerate(cases, 1):
            r = run_case(case)
            results.append(r)
            print(f"[{i:3d}/{len(cases)}] {case.id:10s} {r.verdict:14s} {r.seconds:5.1f}s  "
                  f"{case.what[:60]}" + ("" if r.verdict == OK else f"\n      -> {r.result[:160]}"),
                  flush=True)
    except KeyboardInterrupt:
        print("interrupted: writing the report of the cases run so far", flush=True)
    seconds = time.perf_counter() - t0
    shown = list(argv)
    counts = write_markdown(args.out, results, shown, started, seconds)
    print()
    print(f"{len(results)} cases in {seconds / 60:.1f} min; report: {args.out}")
    for v in VERDICTS:
        if counts[v] or v != HARNESS:
            print(f"  {v:15s} {counts[v]}")
    if not args.keep:
        for dirpath, dirnames, filenames in os.walk(SESSION):
            for d in dirnames:
                try:
                    os.chmod(os.path.join(dirpath, d), 0o755)
                except OSError:
                    pass
        shutil.rmtree(SESSION, ignore_errors=True)
    else:
        print(f"kept {SESSION}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
