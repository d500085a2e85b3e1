"""The ``pyro-vae`` command line: ``train``, ``evaluate``, ``compare``, ``sample``, ``export``,
``recipes``.

Every command is a function of ``argv`` (:func:`main`), so it can be run in-process.
Errors caused by bad input print one message that says what was wrong and what to do,
and return a non-zero status; nothing already on disk is lost.
"""

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

from . import __version__
from .config import Config
from .recipes import apply_overrides, list_recipes, parse_value, resolve_recipe
from .distributed import SINGLE, launched_by_torchrun
from .errors import ConfigError, PyroVAEError, RunFolderError, TrainingDiverged, TrainingWarning


def positive_int(text, most=None):
    """An argparse type: an integer of at least 1 (and at most ``most``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    if most is not None and value > most:
        raise argparse.ArgumentTypeError(f"must be at most {most:,}, got {value:,}")
    return value


def seed_int(text):
    """An argparse type: a seed of torch's generators, 0..2**32-1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
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
                   help="continue the run in folder RUN from its last checkpoint")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_device(t)

    e = sub.add_parser("evaluate", help="test log-likelihood of a run; writes RUN/eval.json",
                       description="Estimate the test log-likelihood of a trained run with the "
                                   "importance-weighted bound (k particles), with standard errors, "
                                   "k-hat and ESS diagnostics, KL per latent dimension and active "
                                   "units; print a table and merge the numbers into RUN/eval.json.")
    e.add_argument("run", help="run folder")
    _add_eval_options(e)

    c = sub.add_parser("compare", help="paired comparison of two runs' test log-likelihoods",
                       description="Estimate both runs' test log-likelihoods on the same test "
                                   "points and print a table with the paired difference, its "
                                   "standard error and a verdict.")
    c.add_argument("run_a", help="first run folder")
    c.add_argument("run_b", help="second run folder")
    _add_eval_options(c)

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

    sub.add_parser("recipes", help="list the recipes found in models/",
                   description="List the recipe names found in ./models and the source tree.")
    return parser


def _overrides(args):
    pairs = {}
    for flag, key in (("data", "data.name"), ("data_dir", "data.data_dir"),
                      ("epochs", "train.epochs"), ("batch_size", "train.batch_size"),
                      ("lr", "train.lr"), ("seed", "train.seed"),
                      ("latent_dim", "model.latent_dim"), ("labels", "data.labels")):
        if getattr(args, flag) is not None:
            pairs[key] = getattr(args, flag)
    if args.download:
        pairs["data.download"] = True
    for item in args.set:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected TABLE.KEY=VALUE, e.g. train.epochs=10")
        key, value = item.split("=", 1)
        pairs[key.strip()] = parse_value(value.strip())
    return pairs


def _fmt(value, digits=3):
    return "-" if value is None else f"{value:.{digits}f}"


def evaluation_rows(summary):
    """Rows ``(label, text)`` describing one evaluation summary (see ``eval.json``)."""
    rows = [(f"log p(x), IWAE k={summary['k']}",
             f"{_fmt(summary['test_log_likelihood'])} +- {_fmt(summary['test_log_likelihood_se'])}")]
    for k, value in summary["ladder"].items():
        if int(k) != summary["k"]:
            rows.append((f"  bound at k={k}", f"{_fmt(value)} +- {_fmt(summary['ladder_se'][k])}"))
    rows += [
        ("ELBO", f"{_fmt(summary['test_elbo'])} +- {_fmt(summary['test_elbo_se'])}"),
        ("bits/dim", _fmt(summary["bits_per_dim"], 4)),
        ("k-hat > 0.7", "not fitted (k < 25)" if summary["khat_above_0.7"] is None else
         f"{100 * summary['khat_above_0.7']:.1f}% of points "
         f"(median k-hat {_fmt(summary['khat_median'], 2)})"),
        ("ESS mean / min", f"{summary['ess_mean']:.1f} / {summary['ess_min']:.1f} of {summary['k']}"),
    ]
    for site, n in summary.get("active_units", {}).items():
        rows.append((f"active units {site}", f"{n} of {summary['latent_dims'][site]}"))
    for site, kl in summary.get("kl", {}).items():
        rows.append((f"KL(q||p) {site}", f"{_fmt(kl)}"))
    return rows


def _print_table(header, columns):
    """Print rows ``label | col1 | col2 ...`` aligned; ``columns`` is a list of row lists."""
    labels = [label for label, _ in columns[0]]
    cells = [[text for _, text in col] for col in columns]
    width0 = max(len(x) for x in labels + [""])
    widths = [max(len(x) for x in col + [h]) for col, h in zip(cells, header)]
    print("  ".join([" " * width0] + [h.rjust(w) for h, w in zip(header, widths)]))
    for i, label in enumerate(labels):
        print("  ".join([label.ljust(width0)] + [col[i].rjust(w) for col, w in zip(cells, widths)]))


def _print_summary(summary):
    print(f"run folder:      {summary['run']}")
    print(f"epochs:          {summary['epochs']} ({summary['steps']} steps)")
    reasons = {"early_stopping": "early stopping (no better validation ELBO for "
                                 "train.patience epochs)",
               "max_minutes": "the wall-time limit train.max_minutes"}
    if summary.get("stopped") in reasons:
        print(f"stopped by:      {reasons[summary['stopped']]}")
    if summary.get("evaluated_epoch") not in (None, summary["epochs"]):
        print(f"evaluated:       the best validation epoch, {summary['evaluated_epoch']} (best.pt)")
    if "validation_elbo" in summary:
        print(f"validation ELBO: {summary['validation_elbo']:.3f} nats")
    if "test_accuracy" in summary:
        print(f"classifier:      {100 * summary['test_accuracy']:.2f}% test accuracy of q(y|x) "
              f"({summary['num_labelled']} labelled training images)")
    print(f"test set:        {summary['num_test']} images; all values in nats per image")
    _print_table(["test"], [evaluation_rows(summary)])


def cmd_train(args):
    """``pyro-vae train``: a new run, or ``--resume RUN``; under torchrun, data-parallel
    over the ranks (rank 0 writes the run folder and holds its lock)."""
    from .checkpoint import load_checkpoint
    from .runfolder import (check_run_argument, check_run_folder, create_run_folder,
                            create_unique_run_folder, note_stale, open_run_folder)
    from .run import Run

    world = args.world
    if args.resume:
        changed = _overrides(args)
        changed.pop("train.epochs", None)
        if changed or args.recipe or args.out or args.overwrite:
            raise ConfigError("--resume continues a run as it was recorded; only --epochs, "
                              "--device and --quiet may be given with it")
        _on_main(world, lambda: check_run_argument(args.resume, "--resume"))
        # rank 0 reads the run; the other ranks (other nodes, maybe) get its recipe
        config = _on_main(world, lambda: load_checkpoint(args.resume)["config"])
        config = Config.from_dict(config, where=f"run {args.resume}")
        if args.epochs is not None:
            config = apply_overrides(config, {"train.epochs": args.epochs})
        out = Path(args.resume)
        lock = _lock_on_main(world, lambda: open_run_folder(out, "pyro-vae train --resume"))
    else:
        config = apply_overrides(resolve_recipe(args.recipe), _overrides(args))
        if args.out:
            out = Path(args.out)
            _on_main(world, lambda: check_run_folder(out, overwrite=args.overwrite))
        else:  # a name of our own: a free one is taken when the run starts
            data_name = Path(config.data.name).stem
            stamp = time.strftime('%Y%m%d-%H%M%S')
            out = Path("runs") / f"{config.name}-{data_name}-{stamp}"
        lock = None
    try:
        if args.resume:
            run = Run(config, out, device=args.device, quiet=args.quiet, world=world)
            run.resume()
        else:
            # data and model first: if they fail, nothing on disk has changed
            run = Run(config, out, device=args.device, quiet=args.quiet, world=world)
            command = "pyro-vae train" + (" --overwrite" if args.overwrite else "")
            if args.out:
                lock = _lock_on_main(world, lambda: create_run_folder(out, args.overwrite,
                                                                      command))
            else:
                made = _lock_on_main(world, lambda: create_unique_run_folder(out, command))
                run.run_dir = Path(world.broadcast(str(made[0]) if made else None))
                lock = made[1] if made else None
        if lock is not None:
            note_stale(lock)
        return _fit_and_finish(run, config, world)
    finally:
        if lock is not None:
            lock.release()


def _fit_and_finish(run, config, world):
    """Train ``run``, evaluate it and print the summary; returns the exit status."""
    try:
        run.fit()
    except TrainingDiverged as e:
        if world.is_main:
            print(f"pyro-vae: {e}", file=sys.stderr)
        return 1
    if run.stop_reason == "interrupted":
        t = run.trainer
        if world.is_main:
            launch = "torchrun ... -m pyro_vae" if world.distributed else "pyro-vae"
            print(f"pyro-vae: interrupted in epoch {t.epoch + 1} after step {t.step}; the "
                  f"checkpoint is saved: continue with  {launch} train --resume {run.run_dir}",
                  file=sys.stderr)
        return 130
    try:
        summary = run.finish()
    except KeyboardInterrupt:
        if world.is_main:
            print(f"pyro-vae: interrupted during the final evaluation; training is complete and "
                  f"saved in {run.run_dir}: evaluate it with  pyro-vae evaluate {run.run_dir}",
                  file=sys.stderr)
        return 130
    if world.is_main:
        if world.distributed:
            print(f"trained data-parallel on {world.size} processes "
                  f"({run.device.type}); global batch {config.train.batch_size}")
        _print_summary(summary)
    if run.diverging:
        if world.is_main:
            print(f"pyro-vae: error: the objective diverged (the last epoch's train ELBO is far "
                  f"below the untrained model's; see {run.run_dir / 'metrics.jsonl'}); the run "
                  "is kept but its numbers are not those of a trained model. Lower train.lr or "
                  "set train.clip_norm", file=sys.stderr)
        return 1
    return 0


def _lock_on_main(world, fn):
    """``fn()`` (which takes a run lock) on rank 0: the lock there, ``None`` on the other
    ranks; an error on rank 0 is raised on every rank."""
    held = []
    _on_main(world, lambda: held.append(fn()))
    return held[0] if held else None


def _on_main(world, fn):
    """``fn()`` on rank 0, its result (or its error, re-raised) on every rank."""
    result, error = None, None
    if world.is_main:
        try:
            result = fn()
        except PyroVAEError as e:
            error = e
    if world.distributed:
        result, message = world.broadcast((result, None if error is None else
                                           (type(error).__name__, str(error))))
        if message is not None and error is None:
            error = (ConfigError if message[0] == "ConfigError" else PyroVAEError)(message[1])
    if error is not None:
        raise error
    return result


def _evaluate_run(run, args, reuse=False, test_sets=None):
    """Load a run, its test set, and evaluate it with the command-line options.

    ``test_sets`` caches test sets by data settings, so that runs on the same data share one.
    """
    from .batches import prepare_eval_splits
    from .datasets import data_fingerprint, load_dataset
    from .infer import data_fingerprint as tensor_fingerprint
    from .distributed import resolve_device
    from .runs import evaluate_run, load_result, load_run, save_result

    world = getattr(args, "world", None) or SINGLE
    device = world.device if world.distributed else resolve_device(args.device)
    vae, config, state = load_run(run, device)
    overrides = {f"eval.{key}": getattr(args, key) for key in ("k", "batch_size",
                                                               "particle_batch", "seed")
                 if getattr(args, key) is not None}
    config = apply_overrides(config, overrides)
    key = (config.data.name, config.data.data_dir, config.data.binarization)
    test_sets = {} if test_sets is None else test_sets
    if key not in test_sets:
        data = load_dataset(config.data.name, config.data.data_dir, config.data.download)
        test_sets[key] = (prepare_eval_splits(data, config.data.binarization)[1],
                          data.test_labels, data_fingerprint(data))
        del data
    test, labels, source = test_sets[key]
    trained_on = state.get("data_source")
    if trained_on and trained_on.get("fingerprint") != source["fingerprint"]:
        raise RunFolderError(
            f"{run} was trained on {trained_on.get('name')} read from {trained_on.get('source')} "
            f"(fingerprint {trained_on.get('fingerprint')}), but the data read now from "
            f"{source['source']} differs (fingerprint {source['fingerprint']}); its test "
            "log-likelihood would be of other images. Give the original files, or score other "
            "data deliberately with  pyro-vae score RUN --data ...")
    if getattr(vae, "conditional", False):  # log p(x | y): the model reads the labels too
        if labels is None:
            raise ConfigError(f"{run} is a conditional model, but its data has no test labels")
        test = (test, labels)
    cached = load_result(run, config.eval.k, config.eval.seed) if reuse else None
    if cached is not None and cached.fingerprint == tensor_fingerprint(test):
        return None, cached, state
    summary, result = evaluate_run(vae, test, config, device,
                                   progress=not args.quiet and world.is_main, world=world)
    if world.is_main:
        save_result(run, result)
    return summary, result, state


def cmd_evaluate(args):
    """``pyro-vae evaluate RUN --k 5000``: table on stdout, numbers into ``RUN/eval.json``."""
    from .files import remove_temporary_files
    from .runfolder import RunLock, check_run_argument
    from .runs import read_eval_json, update_eval_json

    world = args.world
    _on_main(world, lambda: check_run_argument(args.run))
    # eval.json is rewritten: one process at a time, and a damaged one is reported before,
    # not after, the work
    lock = _lock_on_main(world, lambda: RunLock(args.run, "pyro-vae evaluate").acquire())
    try:
        _on_main(world, lambda: (read_eval_json(args.run), remove_temporary_files(args.run)))
        summary, _, state = _evaluate_run(args.run, args)
        if not world.is_main:
            return 0
        return _write_evaluation(args.run, summary, state, update_eval_json)
    finally:
        if lock is not None:
            lock.release()


def _write_evaluation(run, summary, state, update_eval_json):
    """Merge an evaluation into ``run/eval.json`` and print its table."""
    summary["epochs"] = int(state["epoch"])
    update_eval_json(run, summary)
    print(f"{run}: {summary['num_test']} test images, epoch {summary['epochs']}; "
          "values in nats per image")
    _print_table(["estimate"], [evaluation_rows(summary)])
    print(f"written to {Path(run) / 'eval.json'}")
    return 0


def cmd_compare(args):
    """``pyro-vae compare RUN_A RUN_B --k 1000``: a paired comparison table."""
    from .checkpoint import load_checkpoint
    from .infer import compare
    from .runfolder import check_run_argument

    conditional = []
    for run in (args.run_a, args.run_b):
        check_run_argument(run)
        conditional.append(bool(load_checkpoint(run)["config"]["model"].get("conditional")))
    if conditional[0] != conditional[1]:
        a, b = (args.run_a, args.run_b) if conditional[0] else (args.run_b, args.run_a)
        raise ConfigError(f"{a} is a conditional model, whose estimate is log p(x|y), and {b} "
                          "is not (log p(x)); the two are different quantities and are not "
                          "compared")
    results, test_sets = [], {}
    for run in (args.run_a, args.run_b):
        _, result, _ = _evaluate_run(run, args, reuse=True, test_sets=test_sets)
        results.append(result)
    try:
        comparison = compare(results[0], results[1], name_a=args.run_a, name_b=args.run_b)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    rows = []
    for r in results:
        rows.append([
            (f"log p(x), k={r.num_particles}", f"{r.mean:.3f} +- {r.se:.3f}"),
            ("ELBO", f"{float(r.elbo.mean()):.3f}"),
            ("bits/dim", f"{r.bits_per_dim:.4f}"),
            ("k-hat > 0.7", "-" if r.khat_above_07 is None else f"{100 * r.khat_above_07:.1f}%"),
        ])
    _print_table([args.run_a, args.run_b], rows)
    print(f"paired difference (first - second): {comparison.difference:+.3f} +- "
          f"{comparison.se:.3f} nats over {comparison.num_datapoints} test images")
    print(comparison.verdict)
    return 0


def cmd_sample(args):
    """``pyro-vae sample RUN -n 64 -o FILE.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import torch

    from . import plots
    from .infer import seeded
    from .nets import event_size
    from .distributed import resolve_device
    from .runs import load_run

    if args.num_samples < 1:
        raise ConfigError(f"-n must be at least 1, got {args.num_samples}")
    device = resolve_device(args.device)
    vae, _, state = load_run(args.run, device)
    if args.layers and getattr(vae, "num_layers", 1) < 2:
        raise ConfigError(f"--layers needs a hierarchical VAE; {args.run} has one latent layer")
    if args.label is not None:
        if not vae.context_dim or vae.num_classes is None:
            raise ConfigError(f"--label needs a model of labels (model.conditional or "
                              f"model.semi_supervised); {args.run} has none")
        if not 0 <= args.label < vae.num_classes:
            raise ConfigError(f"--label must lie in [0, {vae.num_classes}), got {args.label}")
        if args.layers:
            raise ConfigError("--label and --layers exclude each other")
    kind = "layers" if args.layers else "samples"
    if args.label is not None:
        kind = f"samples-label{args.label}"
    out = Path(args.output) if args.output else \
        Path(args.run) / f"{kind}-{args.num_samples}-seed{args.seed}.png"
    if out.exists() and not args.overwrite:
        raise ConfigError(f"{out} exists; pass --overwrite to replace it or choose another -o")
    if not out.parent.is_dir():
        raise ConfigError(f"folder {out.parent} does not exist; create it or choose another -o")
    image_shape = tuple(state.get("image_shape") or (1, 1, event_size(vae.event_shape)))
    with torch.no_grad(), seeded(args.seed, device):
        if args.layers:
            ax = plots.plot_layer_samples(vae, image_shape,
                                          num_rows=max(1, args.num_samples // 8))[0]
        else:
            y = None if args.label is None else \
                torch.full((args.num_samples,), args.label, dtype=torch.long, device=device)
            images = vae.sample(args.num_samples, y=y)
            ax = plots.plot_images(images, image_shape,
                                   title=f"{args.num_samples} samples (pixel means)" +
                                   ("" if y is None else f", label {args.label}"))
    plots.save_figure(ax, out)
    print(out)
    return 0


def cmd_export(args):
    """``pyro-vae export RUN -o latents.nc``: ArviZ InferenceData of test-image latents."""
    from .batches import prepare_eval_splits
    from .datasets import load_dataset
    from .export import to_inference_data
    from .files import atomic_write
    from .distributed import resolve_device
    from .runs import load_run

    if args.num_samples > args.k:
        raise ConfigError(f"--num-samples ({args.num_samples}) draws are resampled from --k "
                          f"({args.k}) guide draws: give --num-samples at most --k")
    device = resolve_device(args.device)
    vae, config, _ = load_run(args.run, device)
    out = Path(args.output) if args.output else Path(args.run) / "latents.nc"
    if out.exists() and not args.overwrite:
        raise ConfigError(f"{out} exists; pass --overwrite to replace it or choose another -o")
    if not out.parent.is_dir():
        raise ConfigError(f"folder {out.parent} does not exist; create it or choose another -o")
    if getattr(vae, "conditional", False):
        raise ConfigError("export covers models of x alone; a conditional model's latents "
                          "depend on the label as well")
    data = load_dataset(config.data.name, config.data.data_dir, config.data.download)
    test = prepare_eval_splits(data, config.data.binarization)[1][:args.num_images]
    try:
        # the draws are independent; ArviZ's diagnostics want chains: two when they split
        idata = to_inference_data(vae.model, vae.guide, test, num_samples=args.num_samples,
                                  num_chains=2 if args.num_samples % 2 == 0 else 1,
                                  num_particles=args.k, seed=args.seed, device=device)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    atomic_write(out, idata.to_netcdf, binary=None)
    est = idata.estimates
    print(f"{out}: {test.shape[0]} test images, {args.num_samples} draws each "
          f"(resampled from k = {args.k}); mean log p(x) bound "
          f"{float(est.log_likelihood.mean()):.3f} nats, mean ESS {float(est.ess.mean()):.1f}")
    return 0


def cmd_report(args):
    """``pyro-vae report RUN [RUN ...] -o OUT``."""
    from .report import build_report
    from .distributed import resolve_device

    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"-o {out} is a file; give a folder for the report")
    existing = [p for p in (out / "report.html", out / "report.md") if p.exists()]
    if (out / "figures").is_dir():
        existing += sorted((out / "figures").iterdir())
    if existing and not args.overwrite:
        names = ", ".join(str(p.relative_to(out)) for p in existing[:6])
        raise ConfigError(f"{out} already holds {names}{' ...' if len(existing) > 6 else ''}; "
                          "a report writes report.html, report.md and figures/ there: pass "
                          "--overwrite to replace its files, or choose another -o")
    html_path, md_path = build_report(args.runs, out, k=args.k, seed=args.seed,
                                      device=resolve_device(args.device))
    print(html_path)
    print(md_path)
    return 0


def cmd_score(args):
    """``pyro-vae score RUN [--data NAME] -o scores.csv``: per-image -log p(x)."""
    import csv

    from .batches import prepare_eval_splits
    from .datasets import load_dataset
    from .infer import log_likelihood
    from .files import atomic_write
    from .distributed import resolve_device
    from .runs import load_run

    out = Path(args.output)
    if out.exists() and not args.overwrite:
        raise ConfigError(f"{out} exists; pass --overwrite to replace it or choose another -o")
    if not out.parent.is_dir():
        raise ConfigError(f"folder {out.parent} does not exist; create it or choose another -o")
    device = resolve_device(args.device)
    vae, config, _ = load_run(args.run, device)
    name = args.data or config.data.name
    data = load_dataset(name, args.data_dir or config.data.data_dir, config.data.download)
    if tuple(data.event_shape) != tuple(vae.event_shape):
        raise ConfigError(f"{name} images have shape {data.event_shape}, the run's model takes "
                          f"{vae.event_shape}")
    test = prepare_eval_splits(data, config.data.binarization)[1]
    if getattr(vae, "conditional", False):  # scores are then -log p(x | y)
        if data.test_labels is None:
            raise ConfigError(f"{name} has no test labels, which the conditional model needs")
        test = (test, data.test_labels)
    result = log_likelihood(vae.model, vae.guide, test, num_particles=args.k,
                            batch_size=args.batch_size, particle_batch=args.particle_batch,
                            seed=args.seed, device=device, progress=not args.quiet)
    labels = data.test_labels.tolist() if data.test_labels is not None else \
        [""] * result.num_datapoints
    def write(f):
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["index", "label", "neg_log_likelihood", "neg_elbo", "khat"])
        for i in range(result.num_datapoints):
            writer.writerow([i, labels[i], f"{-float(result.log_likelihood[i]):.6f}",
                             f"{-float(result.elbo[i]):.6f}", f"{float(result.khat[i]):.4f}"])

    atomic_write(out, write, binary=False)
    print(f"{out}: {result.num_datapoints} images of {name}; mean -log p(x) {-result.mean:.3f} nats "
          f"(k = {args.k})")
    return 0


def cmd_recipes(args):
    """``pyro-vae recipes``: list recipe names."""
    for name in list_recipes():
        print(name)
    return 0


#: The commands that run data-parallel under torchrun (the others refuse to).
DISTRIBUTED_COMMANDS = ("train", "evaluate")

COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "compare": cmd_compare,
            "sample": cmd_sample, "export": cmd_export, "report": cmd_report,
            "score": cmd_score, "recipes": cmd_recipes}


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
