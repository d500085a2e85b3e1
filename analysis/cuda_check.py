"""Check that training and evaluation on CUDA give the numbers of the CPU, within a tolerance.

Trains the same small recipe (``vae`` on the embedded 8x8 digits: 64-400-50, softplus,
Bernoulli) for two epochs with the same seed, once with ``--device cuda`` and once with
``--device cpu``, through the command line in this process (``pyro_vae.cli.main``, each
run in a temporary folder), and compares the validation ELBO of every epoch and the test
log-likelihood of the evaluation after training (IWAE, k = 100, seed 0), in nats per image.
Prints a table and exits with status 1 if a difference exceeds its tolerance, 0 otherwise.
Without a CUDA device it says so and exits with status 0.

Why a tolerance and not equality: the CPU and CUDA runs start from the same weights (they
are drawn on the CPU), but every later draw (the order of the minibatches, the dynamic
binarization, the guide's samples in training and in the estimate) comes from the CUDA
generator on the GPU, whose stream differs from the CPU's for the same seed; float
arithmetic differs as well. The two runs are therefore like two runs with different seeds,
and the tolerance is the spread between seeds: with ``--calibrate N`` the script trains the
recipe on the CPU with N more seeds (no GPU needed) and prints the largest difference
between two of them. Measured on the development machine (2 CPU cores, torch 2.14.1, Pyro
1.9.2; ``python analysis/cuda_check.py --calibrate 5``: seeds 0 to 5, 15 pairs), the
largest differences between seeds were 0.582 and 0.404 nats (validation ELBO after epochs
1 and 2) and 0.140 nats (test log-likelihood); the tolerances, :data:`TOLERANCES`, are
about twice as wide (1.2, 0.9 and 0.3 nats). A CUDA run that agrees within them computes the same model; a bug that is
specific to the device (a tensor left on the wrong device, a wrong reduction, a kernel
that loses precision) moves the numbers by far more after two epochs.

Usage::

    python analysis/cuda_check.py                   # on a machine with a GPU
    python analysis/cuda_check.py --calibrate 5     # the seed-to-seed spread, on the CPU
"""

import argparse
import contextlib
import io
import sys
import tempfile
import time
from itertools import combinations
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from pyro_vae import cli  # noqa: E402
from pyro_vae.runs import read_eval_json, read_metrics  # noqa: E402

#: Allowed |CPU - CUDA| in nats per image: the validation ELBO after each epoch (by epoch)
#: and the test log-likelihood; twice the largest seed-to-seed difference measured on the
#: CPU (see the module docstring).
TOLERANCES = {"validation_elbo": {1: 1.2, 2: 0.9}, "test_log_likelihood": 0.3}


def train_and_evaluate(device, seed, out, args):
    """Train the recipe on ``device`` with ``seed`` into ``out`` through the command line
    (its own evaluation after training included) and read back the numbers.

    :returns: ``{"validation_elbo": [per epoch], "test_log_likelihood": float,
        "seconds": float}``, in nats per image.
    :raises SystemExit: if the command fails (with its status and output).
    """
    argv = ["train", args.recipe, "--data", args.data, "--epochs", str(args.epochs),
            "--seed", str(seed), "--device", device, "--out", str(out), "--quiet",
            "--set", f"eval.k={args.k}"]
    printed = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(printed):
        status = cli.main(argv)
    seconds = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"pyro-vae {' '.join(argv)} failed with status {status}:\n"
                         f"{printed.getvalue()[-2000:]}")
    return {"validation_elbo": [m["validation_elbo"] for m in read_metrics(out)],
            "test_log_likelihood": read_eval_json(out)["test_log_likelihood"],
            "seconds": seconds}


def quantities(run):
    """``{(name, epoch or None): value}`` of one run's numbers, in table order."""
    out = {("validation_elbo", e): v for e, v in enumerate(run["validation_elbo"], start=1)}
    out[("test_log_likelihood", None)] = run["test_log_likelihood"]
    return out


def tolerance(name, epoch):
    """The tolerance of one quantity (:data:`TOLERANCES`; the last epoch's for later ones)."""
    tol = TOLERANCES[name]
    return tol[min(epoch, max(tol))] if isinstance(tol, dict) else tol


def label(name, epoch, k):
    """A row's label in the printed table."""
    return f"validation ELBO, epoch {epoch}" if epoch else f"test log p(x), IWAE k={k}"


def compare_runs(cpu, cuda, k):
    """Rows ``(label, cpu, cuda, |difference|, tolerance, ok)`` and whether all agree."""
    rows = []
    a, b = quantities(cpu), quantities(cuda)
    for key in a:
        diff = abs(a[key] - b[key]) if key in b else float("inf")
        tol = tolerance(*key)
        rows.append((label(*key, k), a[key], b.get(key, float("nan")), diff, tol, diff <= tol))
    return rows, all(row[-1] for row in rows)


def print_rows(rows):
    """Print the comparison table."""
    print(f"{'':<30}{'cpu':>11}{'cuda':>11}{'|diff|':>9}{'tolerance':>11}  agree")
    for name, a, b, diff, tol, ok in rows:
        print(f"{name:<30}{a:>11.3f}{b:>11.3f}{diff:>9.3f}{tol:>11.2f}  {'yes' if ok else 'NO'}")


def calibrate(args, root):
    """Train on the CPU with seeds ``seed .. seed + calibrate`` and print, for each quantity,
    the largest difference between two seeds (what the tolerances are set from)."""
    runs = [train_and_evaluate("cpu", args.seed + i, root / f"cpu-seed{args.seed + i}", args)
            for i in range(args.calibrate + 1)]
    values = [quantities(r) for r in runs]
    print(f"{len(runs)} CPU runs, seeds {args.seed} to {args.seed + args.calibrate}: the largest "
          "difference between two seeds, nats per image")
    spread = {}
    for key in values[0]:
        spread[key] = max(abs(x[key] - y[key]) for x, y in combinations(values, 2))
        print(f"  {label(*key, args.k):<30}{spread[key]:>8.3f}  (tolerance "
              f"{tolerance(*key):.2f})")
    return spread


def main(argv=None):
    """Run the check; returns the exit status (0: agree or no CUDA device, 1: disagree)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default="vae")
    parser.add_argument("--data", default="digits")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--k", type=int, default=100, help="particles of the test estimate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--calibrate", type=int, default=0, metavar="N",
                        help="instead: train on the CPU with N more seeds and print the "
                             "seed-to-seed spread")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cuda-check-") as tmp:
        root = Path(tmp)
        if args.calibrate:
            calibrate(args, root)
            return 0
        if not torch.cuda.is_available():
            print(f"no CUDA device: torch {torch.__version__} sees none "
                  "(torch.cuda.is_available() is False); nothing to check, exiting with status 0")
            return 0
        print(f"{args.recipe} on {args.data}, {args.epochs} epochs, seed {args.seed}; "
              f"CUDA device: {torch.cuda.get_device_name(0)}")
        cuda = train_and_evaluate("cuda", args.seed, root / "cuda", args)
        cpu = train_and_evaluate("cpu", args.seed, root / "cpu", args)
    rows, ok = compare_runs(cpu, cuda, args.k)
    print_rows(rows)
    print(f"training and evaluation: {cpu['seconds']:.1f} s on the CPU, {cuda['seconds']:.1f} s "
          "on CUDA (start-up included)")
    print("CPU and CUDA agree within the tolerances" if ok else
          "CPU and CUDA DISAGREE beyond the tolerances")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
