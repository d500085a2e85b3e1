"""The ``pyro-vae`` command line: ``train``, ``evaluate``, ``compare``, ``sample``, ``export``,
``report``, ``score``, ``pack``, ``bdmc``, ``gaps``, ``recipes``.

Every command is a function of ``argv`` (:func:`main`), so it can be run in-process.
Errors caused by bad input print one message that says what was wrong and what to do,
and return a non-zero status; nothing already on disk is lost.
"""

import argparse
import sys
import warnings

from . import __version__
from .commands import (cmd_compare, cmd_evaluate, cmd_export, cmd_pack, cmd_recipes,
                       cmd_report, cmd_sample, cmd_score)
from .distributed import SINGLE, launched_by_torchrun
from .estimate_commands import EVALUATION_METHODS, cmd_bdmc, cmd_gaps
from .infer.gaps import LOG_LIKELIHOOD_METHODS
from .errors import ConfigError, PyroVAEError, TrainingWarning
from .train_command import cmd_train


def _whole_number(text):
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def positive_int(text, most=None):
    """An argparse type: an integer of at least 1 (and at most ``most``)."""
    value = _whole_number(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    if most is not None and value > most:
        raise argparse.ArgumentTypeError(f"must be at most {most:,}, got {value:,}")
    return value


def seed_int(text):
    """An argparse type: a seed of torch's generators, 0..2**32-1."""
    value = _whole_number(text)
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"must lie in 0..2**32-1, got {value}")
    return value


def _particles(text):
    from .config import MAX_PARTICLES

    return positive_int(text, MAX_PARTICLES)


#: The most images ``pyro-vae sample`` draws into one figure (a 100 x 100 grid).
MAX_SAMPLES = 10_000


def _add_device(p):
    p.add_argument("--device", default="auto",
                   help="auto (CUDA when present), cpu, cuda or cuda:N (default: auto)")


def _add_eval_options(p):
    p.add_argument("--k", type=_particles,
                   help="particles per datapoint (default: the recipe's eval.k)")
    p.add_argument("--batch-size", type=positive_int,
                   help="test images per chunk (default: the recipe's)")
    p.add_argument("--particle-batch", type=positive_int,
                   help="particles per chunk; memory grows with batch size x particle batch")
    p.add_argument("--seed", type=seed_int, help="seed of the guide's samples (default: the recipe's)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_device(p)


def _add_ais_options(p, num_test_help):
    """The options of the AIS-based commands (chains, steps, leapfrog, step size, images)."""
    p.add_argument("--num-test", type=int, default=1000, help=num_test_help)
    from .infer.ais import DEFAULT_NUM_CHAINS, DEFAULT_NUM_LEAPFROG, DEFAULT_NUM_STEPS

    p.add_argument("--num-chains", type=positive_int, default=DEFAULT_NUM_CHAINS,
                   help=f"AIS chains per image (default {DEFAULT_NUM_CHAINS})")
    p.add_argument("--num-steps", type=positive_int, default=DEFAULT_NUM_STEPS,
                   help=f"AIS intermediate distributions (default {DEFAULT_NUM_STEPS})")
    p.add_argument("--num-leapfrog", type=positive_int, default=DEFAULT_NUM_LEAPFROG,
                   help=f"leapfrog steps per HMC transition (default {DEFAULT_NUM_LEAPFROG})")
    p.add_argument("--step-size", type=_positive_float, default=None,
                   help="one fixed leapfrog step size (default: tuned per image and "
                        "temperature in a pilot run)")


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def build_parser():
    """The argparse parser of ``pyro-vae``."""
    parser = argparse.ArgumentParser(
        prog="pyro-vae",
        description="Variational autoencoders in Pyro: train, evaluate and sample.")
    parser.add_argument("--version", action="version", version=f"pyro_vae {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    t = sub.add_parser("train", help="train a recipe; writes a run folder",
                       description="Train a VAE recipe by SVI and write a run folder (config, "
                                   "checkpoint, metrics.jsonl, eval.json, figures).")
    t.add_argument("recipe", nargs="?", default=None,
                   help="recipe name in models/ or path to a .toml (default: vae)")
    t.add_argument("--data", help="digits, fashion-mnist, mnist or a path to a .npz "
                                  "(default: the recipe's)")
    t.add_argument("--data-dir", help="the folder holding the data files (then the only place "
                                      "looked in)")
    t.add_argument("--download", action="store_true",
                   help="allow torchvision to download missing data into the cache")
    t.add_argument("--epochs", type=int, help="number of epochs (with --resume: the new total)")
    t.add_argument("--batch-size", type=positive_int, help="images per step")
    t.add_argument("--lr", type=float, help="Adam learning rate")
    t.add_argument("--seed", type=seed_int, help="random seed")
    t.add_argument("--latent-dim", type=positive_int, help="size of the latent z")
    t.add_argument("--labels", type=int,
                   help="semi-supervised recipes: training images that keep their label")
    t.add_argument("--set", action="append", default=[], metavar="TABLE.KEY=VALUE",
                   help="override any recipe value, e.g. --set model.hidden=[200,200] "
                        "(repeatable)")
    t.add_argument("--out", help="run folder (default: runs/<recipe>-<data>-<time>)")
    t.add_argument("--overwrite", action="store_true",
                   help="replace an existing run folder given by --out")
    t.add_argument("--resume", metavar="RUN",
                   help="continue the run in folder RUN from its last checkpoint; its "
                        "budget may grow: --epochs N and --set train.max_minutes=M are "
                        "new totals counted from the run's start")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_device(t)

    e = sub.add_parser("evaluate", help="test log-likelihood of a run; writes RUN/eval.json",
                       description="Estimate the test log-likelihood of a trained run with the "
                                   "importance-weighted bound (k particles), with standard errors, "
                                   "k-hat and ESS diagnostics, KL per latent dimension and active "
                                   "units; print a table and merge the numbers into RUN/eval.json.")
    e.add_argument("run", help="run folder")
    _add_eval_options(e)
    e.add_argument("--method", choices=EVALUATION_METHODS, default="iwae",
                   help="iwae (default): the importance-weighted bound with --k particles; "
                        "ais: annealed importance sampling with HMC (Wu et al. 2017), about "
                        "two orders of magnitude dearer, on the first --num-test images")
    _add_ais_options(e, "ais: the first N test images (default 1000; 0: all)")

    for name, helptext, description in (
            ("bdmc", "lower and upper AIS bounds on data simulated from the model",
             "Simulate (z, x) from the run's model, one per test image, and bound log p(x) "
             "from below (forward AIS from the guide) and above (reverse AIS from the "
             "simulated z); the gap says how far AIS with these settings is from log p(x). "
             "Writes RUN/bdmc.json (Grosse et al. 2015, arXiv:1511.02543)."),
            ("gaps", "approximation and amortization gaps of the guide",
             "Per test image: the guide's ELBO, the ELBO of a diagonal Gaussian fitted to "
             "that image alone (Pyro's AutoNormal), and log p(x) (AIS or IWAE); writes "
             "RUN/gaps.json (Cremer et al. 2018, arXiv:1801.03558).")):
        g = sub.add_parser(name, help=helptext, description=description)
        g.add_argument("run", help="run folder")
        _add_ais_options(g, "images: the first N test images (default 1000; 0: all)")
        g.add_argument("--batch-size", type=positive_int,
                       help="images per chunk (default: the recipe's)")
        g.add_argument("--seed", type=seed_int, help="seed (default: the recipe's eval.seed)")
        g.add_argument("--quiet", action="store_true", help="no progress bar")
        _add_device(g)
        if name == "gaps":
            g.add_argument("--log-likelihood", choices=LOG_LIKELIHOOD_METHODS, default="ais",
                           help="the estimate of log p(x) (default ais; iwae uses "
                                "num-chains x num-steps particles)")
            g.add_argument("--local-steps", type=positive_int, default=500,
                           help="Adam steps of each image's local Gaussian (default 500)")
            g.add_argument("--local-lr", type=_positive_float, default=0.05,
                           help="their learning rate (default 0.05, cosine decay)")

    c = sub.add_parser("compare", help="paired comparison of two runs' test log-likelihoods",
                       description="Estimate both runs' test log-likelihoods on the same test "
                                   "points and print a table with the paired difference, its "
                                   "standard error and a verdict.")
    c.add_argument("run_a", help="first run folder")
    c.add_argument("run_b", help="second run folder")
    _add_eval_options(c)
    c.add_argument("--method", choices=EVALUATION_METHODS, default="iwae",
                   help="compare IWAE (default) or AIS estimates (saved ones of the same "
                        "settings and images are reused)")
    _add_ais_options(c, "ais: the first N test images (default 1000; 0: all)")

    s = sub.add_parser("sample", help="draw images from a trained run's prior",
                       description="Sample z from the prior and save a grid of the "
                                   "likelihood's means as a PNG.")
    s.add_argument("run", help="run folder")
    s.add_argument("-n", "--num-samples", type=lambda t: positive_int(t, MAX_SAMPLES), default=64,
                   help=f"number of images (at most {MAX_SAMPLES:,})")
    s.add_argument("-o", "--output", help="PNG file (default: RUN/samples-<n>-seed<seed>.png)")
    s.add_argument("--seed", type=seed_int, default=0, help="random seed")
    s.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    s.add_argument("--layers", action="store_true",
                   help="hierarchical VAEs: one panel per layer, each row with that layer "
                        "fixed and the layers below resampled (-n is then rows x 8 columns)")
    s.add_argument("--label", type=int, default=None,
                   help="conditional and semi-supervised models: draw this class only "
                        "(default: the classes in turn)")
    _add_device(s)

    e = sub.add_parser("export", help="latent posterior draws of test images as ArviZ netCDF",
                       description="Write guide draws, importance-resampled posterior draws and "
                                   "per-image log-likelihood estimates of the first test images "
                                   "as an ArviZ InferenceData netCDF file "
                                   "(arviz.from_netcdf opens it).")
    e.add_argument("run", help="run folder")
    e.add_argument("-o", "--output", help="netCDF file (default: RUN/latents.nc)")
    e.add_argument("--num-images", type=positive_int, default=1000,
                   help="first test images to export")
    e.add_argument("--num-samples", type=positive_int, default=100, help="draws kept per image")
    e.add_argument("--k", type=_particles, default=1000, help="guide draws behind the resampling")
    e.add_argument("--seed", type=seed_int, default=0, help="random seed")
    e.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    _add_device(e)

    r = sub.add_parser("report", help="an HTML page and a Markdown summary of runs",
                       description="Write OUT/report.html (self-contained, figures embedded), "
                                   "OUT/report.md and OUT/figures/ for one run or a comparison "
                                   "of runs (the first is the baseline). Uses what pyro-vae "
                                   "train/evaluate saved; nothing is re-estimated.")
    r.add_argument("runs", nargs="+", help="run folders")
    r.add_argument("-o", "--output", required=True, help="output folder")
    r.add_argument("--k", type=_particles,
                   help="which saved estimates (default: each run's eval.json k)")
    r.add_argument("--seed", type=seed_int, default=0, help="seed of the saved estimates")
    r.add_argument("--overwrite", action="store_true", help="replace an existing report")
    _add_device(r)

    sc = sub.add_parser("score", help="per-image -log p(x) of a data set under a trained run",
                        description="Estimate -log p(x) (nats, IWAE bound) for every image of "
                                    "a data set's test split, binarized as the run's protocol "
                                    "does, and write a CSV: index, label, neg_log_likelihood, "
                                    "neg_elbo, khat. High scores are unlikely images "
                                    "(anomalies).")
    sc.add_argument("run", help="run folder")
    sc.add_argument("--data", help="data set (default: the run's)")
    sc.add_argument("--data-dir", help="the folder holding the data files (then the only place "
                                       "looked in)")
    sc.add_argument("-o", "--output", required=True, help="CSV file to write")
    sc.add_argument("--k", type=_particles, default=1000, help="particles per image")
    sc.add_argument("--batch-size", type=positive_int, default=100, help="images per chunk")
    sc.add_argument("--particle-batch", type=positive_int, default=500,
                    help="particles per chunk")
    sc.add_argument("--seed", type=seed_int, default=0, help="seed of the guide's samples")
    sc.add_argument("--quiet", action="store_true", help="no progress bar")
    sc.add_argument("--overwrite", action="store_true", help="replace an existing file")
    _add_device(sc)

    pk = sub.add_parser("pack", help="a pretrained folder of a finished run, for others",
                        description="Write a new folder with the weights the run's evaluation "
                                    "used (best.pt, without optimizer state), its config, "
                                    "metrics, eval.json and figures; `evaluate` and `sample` "
                                    "read it like the run.")
    pk.add_argument("run", help="a finished run folder (with eval.json)")
    pk.add_argument("--out", required=True, help="the new folder (must not exist)")

    sub.add_parser("recipes", help="list the recipes found in models/",
                   description="List the recipe names found in ./models and the source tree.")
    return parser






#: The commands that run data-parallel under torchrun (the others refuse to).
DISTRIBUTED_COMMANDS = ("train", "evaluate")
#: The commands that draw figures (with matplotlib's file-only backend, ``Agg``).
DRAWING_COMMANDS = ("train", "sample", "report")


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "compare": cmd_compare,
            "sample": cmd_sample, "export": cmd_export, "report": cmd_report,
            "score": cmd_score, "recipes": cmd_recipes, "pack": cmd_pack, "bdmc": cmd_bdmc,
            "gaps": cmd_gaps}


def main(argv=None):
    """Run ``pyro-vae`` with ``argv`` (default ``sys.argv[1:]``); return the exit status.

    0 on success, 1 when training diverged, 2 for bad input (the message says what to do),
    130 when interrupted (Ctrl-C); every file already written is complete (all writes are
    atomic) and the message says what to run next.
    """
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # argparse printed the usage and what was wrong
        return e.code if isinstance(e.code, int) else 2
    args.world = SINGLE
    with warnings.catch_warnings():
        warnings.simplefilter("always", TrainingWarning)
        warnings.showwarning = _show_warning
        try:
            if args.command in DISTRIBUTED_COMMANDS:
                from .distributed import init_world
                args.world = init_world(args.device)
            elif launched_by_torchrun():
                raise ConfigError(f"pyro-vae {args.command} runs in one process; under torchrun "
                                  f"use one of: {', '.join(DISTRIBUTED_COMMANDS)}")
            if args.command in DRAWING_COMMANDS:  # files, never a window
                import matplotlib

                matplotlib.use("Agg")
            return COMMANDS[args.command](args)
        except PyroVAEError as e:
            if args.world.is_main:
                print(f"pyro-vae: error: {e}", file=sys.stderr)
            return 2
        except (MemoryError, RuntimeError) as e:
            if not isinstance(e, MemoryError) and not _out_of_memory(e):
                raise
            if args.world.is_main:
                print(f"pyro-vae: error: out of memory during {args.command} "
                      f"({str(e).strip().splitlines()[0][:160]}); lower train.batch_size or "
                      "train.num_particles, --batch-size or --particle-batch, or the model's "
                      "sizes; every file written so far is complete", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            if args.world.is_main:
                print(f"pyro-vae: interrupted (Ctrl-C) during {args.command}; every file written "
                      "so far is complete, nothing is half-written", file=sys.stderr)
            return 130
        finally:
            from .distributed import shutdown_world
            shutdown_world(args.world)


def _out_of_memory(error):
    """Whether a RuntimeError is an allocation failure (CPU or CUDA)."""
    import torch

    text = str(error)
    return isinstance(error, torch.OutOfMemoryError) or "can't allocate memory" in text or \
        "out of memory" in text.lower()


def _show_warning(message, category, filename, lineno, file=None, line=None):
    if issubclass(category, TrainingWarning):
        print(f"pyro-vae: warning: {message}", file=file or sys.stderr)
    else:
        print(warnings.formatwarning(message, category, filename, lineno, line),
              file=file or sys.stderr, end="")
