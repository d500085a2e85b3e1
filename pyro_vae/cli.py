"""The ``pyro-vae`` command line: ``train``, ``evaluate``, ``sample``, ``recipes``.

Every command is a function of ``argv`` (:func:`main`), so it can be run in-process.
Errors caused by bad input print one message that says what was wrong and what to do,
and return a non-zero status; nothing already on disk is lost.
"""

import argparse
import json
import sys
import time
from pathlib import Path

from . import __version__
from .config import apply_overrides, list_recipes, parse_value, resolve_recipe
from .errors import ConfigError, PyroVAEError, TrainingDiverged


def _add_device(p):
    p.add_argument("--device", default="auto",
                   help="auto (CUDA when present), cpu, cuda or cuda:N (default: auto)")


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
    t.add_argument("--data-dir", help="folder searched first for data files")
    t.add_argument("--download", action="store_true",
                   help="allow torchvision to download missing data into the cache")
    t.add_argument("--epochs", type=int, help="number of epochs (with --resume: the new total)")
    t.add_argument("--batch-size", type=int, help="images per step")
    t.add_argument("--lr", type=float, help="Adam learning rate")
    t.add_argument("--seed", type=int, help="random seed")
    t.add_argument("--latent-dim", type=int, help="size of the latent z")
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

    e = sub.add_parser("evaluate", help="evaluate a run on its test set; writes RUN/eval.json",
                       description="Compute the test ELBO (nats per datapoint) of a trained run "
                                   "and merge it into RUN/eval.json.")
    e.add_argument("run", help="run folder")
    e.add_argument("--batch-size", type=int, help="datapoints per evaluation chunk")
    e.add_argument("--seed", type=int, default=0, help="seed of the guide's samples")
    _add_device(e)

    s = sub.add_parser("sample", help="draw images from a trained run's prior",
                       description="Sample z from the prior and save a grid of the "
                                   "likelihood's means as a PNG.")
    s.add_argument("run", help="run folder")
    s.add_argument("-n", "--num-samples", type=int, default=64, help="number of images")
    s.add_argument("-o", "--output", help="PNG file (default: RUN/samples-<n>-seed<seed>.png)")
    s.add_argument("--seed", type=int, default=0, help="random seed")
    s.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    _add_device(s)

    sub.add_parser("recipes", help="list the recipes found in models/",
                   description="List the recipe names found in ./models and the source tree.")
    return parser


def _overrides(args):
    pairs = {}
    for flag, key in (("data", "data.name"), ("data_dir", "data.data_dir"),
                      ("epochs", "train.epochs"), ("batch_size", "train.batch_size"),
                      ("lr", "train.lr"), ("seed", "train.seed"),
                      ("latent_dim", "model.latent_dim")):
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


def _print_summary(summary):
    print(f"run folder:      {summary['run']}")
    print(f"epochs:          {summary['epochs']} ({summary['steps']} steps)")
    if "validation_elbo" in summary:
        print(f"validation ELBO: {summary['validation_elbo']:.3f} nats")
    print(f"test ELBO:       {summary['test_elbo']:.3f} +- {summary['test_elbo_se']:.3f} nats "
          f"({summary['num_test']} test images)")


def cmd_train(args):
    """``pyro-vae train``: a new run, or ``--resume RUN``."""
    from .train import Run, prepare_run_folder, load_run

    if args.resume:
        changed = _overrides(args)
        changed.pop("train.epochs", None)
        if changed or args.recipe or args.out or args.overwrite:
            raise ConfigError("--resume continues a run as it was recorded; only --epochs, "
                              "--device and --quiet may be given with it")
        _, config, _ = load_run(args.resume, device="cpu")
        if args.epochs is not None:
            config = apply_overrides(config, {"train.epochs": args.epochs})
        run = Run(config, args.resume, device=args.device, quiet=args.quiet)
        run.resume()
    else:
        config = apply_overrides(resolve_recipe(args.recipe), _overrides(args))
        if args.out:
            out = Path(args.out)
        else:
            data_name = Path(config.data.name).stem
            out = Path("runs") / f"{config.name}-{data_name}-{time.strftime('%Y%m%d-%H%M%S')}"
        run = Run(config, out, device=args.device, quiet=args.quiet)  # loads data: may fail
        prepare_run_folder(out, overwrite=args.overwrite)
    try:
        run.fit()
    except TrainingDiverged as e:
        print(f"pyro-vae: {e}", file=sys.stderr)
        return 1
    _print_summary(run.finish())
    return 0


def cmd_evaluate(args):
    """``pyro-vae evaluate RUN``: test ELBO into ``RUN/eval.json``."""
    from .data import load_dataset, prepare_eval_splits
    from .train import evaluate_run_elbo, load_run, update_eval_json, resolve_device

    device = resolve_device(args.device)
    vae, config, state = load_run(args.run, device)
    if args.batch_size is not None:
        config = apply_overrides(config, {"train.eval_batch_size": args.batch_size})
    data = load_dataset(config.data.name, config.data.data_dir, config.data.download)
    _, test = prepare_eval_splits(data, config.data.binarization)
    results = evaluate_run_elbo(vae, test, config, device)
    results["epochs"] = int(state["epoch"])
    merged = update_eval_json(args.run, results)
    print(json.dumps(merged, indent=2))
    return 0


def cmd_sample(args):
    """``pyro-vae sample RUN -n 64 -o FILE.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import torch

    from . import plots
    from .evaluate import seeded
    from .train import load_run, resolve_device

    if args.num_samples < 1:
        raise ConfigError(f"-n must be at least 1, got {args.num_samples}")
    device = resolve_device(args.device)
    vae, _, state = load_run(args.run, device)
    out = Path(args.output) if args.output else \
        Path(args.run) / f"samples-{args.num_samples}-seed{args.seed}.png"
    if out.exists() and not args.overwrite:
        raise ConfigError(f"{out} exists; pass --overwrite to replace it or choose another -o")
    if not out.parent.is_dir():
        raise ConfigError(f"folder {out.parent} does not exist; create it or choose another -o")
    with torch.no_grad(), seeded(args.seed, device):
        images = vae.sample(args.num_samples)
    ax = plots.plot_images(images, tuple(state.get("image_shape", (1, 1, images.shape[1]))),
                           title=f"{args.num_samples} samples (pixel means)")
    plots.save_figure(ax, out)
    print(out)
    return 0


def cmd_recipes(args):
    """``pyro-vae recipes``: list recipe names."""
    for name in list_recipes():
        print(name)
    return 0


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "sample": cmd_sample,
            "recipes": cmd_recipes}


def main(argv=None):
    """Run ``pyro-vae`` with ``argv`` (default ``sys.argv[1:]``); return the exit status.

    0 on success, 1 when training diverged, 2 for bad input (the message says what to do).
    """
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except PyroVAEError as e:
        print(f"pyro-vae: error: {e}", file=sys.stderr)
        return 2
