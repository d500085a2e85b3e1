"""Train several recipes at one fixed budget, evaluate them, and tabulate paired differences.

Every recipe is trained with the same data, epochs, batch size and seed, evaluated with the
importance-weighted bound at the same k on the same test images (the protocol's
binarization), and compared with the first recipe (the baseline) by the paired difference
of per-image estimates (``pyro_vae.infer.compare``). Finished runs are reused, so an
interrupted experiment continues where it stopped.

Usage::

    python analysis/compare_recipes.py vae vae_iaf vae_vamp --data fashion-mnist \\
        --epochs 50 --k 1000 --out runs/budget50 --results analysis/compare_recipes.md

The table is printed and, with ``--results FILE.md``, written to ``FILE.md`` with its rows
as JSON in ``FILE.json``. An existing file is never replaced unless ``--overwrite`` is
given (checked before any training): ``analysis/RESULTS.md`` is written by hand, and a
generated table is copied into it, not written over it.
"""

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pyro_vae import cli  # noqa: E402
from pyro_vae.infer import compare  # noqa: E402
from pyro_vae.estimate_files import load_result  # noqa: E402
from pyro_vae.runs import read_metrics  # noqa: E402


def run_recipe(recipe, args):
    """Train (unless already done) and evaluate one recipe; returns its run folder."""
    out = Path(args.out) / recipe
    metrics = read_metrics(out)
    if not (metrics and metrics[-1]["epoch"] >= args.epochs and (out / "checkpoint.pt").exists()):
        argv = ["train", recipe, "--data", args.data, "--epochs", str(args.epochs),
                "--seed", str(args.seed), "--out", str(out), "--quiet", "--overwrite",
                "--set", f"eval.k={min(args.k, 100)}", *args.extra]
        if cli.main(argv) != 0:
            raise SystemExit(f"training {recipe} failed")
    if load_result(out, args.k, 0) is None:
        argv = ["evaluate", str(out), "--k", str(args.k), "--quiet"]
        if args.particle_batch:
            argv += ["--particle-batch", str(args.particle_batch)]
        if cli.main(argv) != 0:
            raise SystemExit(f"evaluating {recipe} failed")
    return out


def results_files(results):
    """The files ``--results`` names: the Markdown table and the JSON rows beside it."""
    return [Path(results), Path(results).with_suffix(".json")]


def check_results_files(args):
    """Refuse (``SystemExit``) to replace an existing results file without ``--overwrite``,
    or to write into a folder that does not exist."""
    if not args.results:
        return
    for path in results_files(args.results):
        if path.exists() and not args.overwrite:
            raise SystemExit(f"{path} exists; pass --overwrite to replace it or choose another "
                             "--results (analysis/RESULTS.md is written by hand: copy the "
                             "table into it)")
        if not path.parent.is_dir():
            raise SystemExit(f"folder {path.parent} does not exist; create it or choose another "
                             "--results")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("recipes", nargs="+", help="recipe names; the first is the baseline")
    parser.add_argument("--data", default="digits")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--particle-batch", type=int, help="particles per evaluation chunk")
    parser.add_argument("--out", default="runs/compare", help="folder holding one run per recipe")
    parser.add_argument("--results", help="write the table (Markdown) to this file and its "
                        "rows (JSON) beside it, e.g. analysis/compare_recipes.md")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the --results files if they exist")
    parser.add_argument("--set", dest="extra", action="append", default=[],
                        help="extra --set TABLE.KEY=VALUE for every training run")
    args = parser.parse_args(argv)
    args.extra = [item for pair in (("--set", s) for s in args.extra) for item in pair]
    check_results_files(args)

    start = time.time()
    runs = {recipe: run_recipe(recipe, args) for recipe in args.recipes}
    results = {recipe: load_result(out, args.k, 0) for recipe, out in runs.items()}
    baseline = args.recipes[0]
    rows = []
    for recipe, out in runs.items():
        r = results[recipe]
        train_seconds = sum(m["seconds"] for m in read_metrics(out))
        row = {"recipe": recipe, "log_likelihood": r.mean, "se": r.se,
               "elbo": float(r.elbo.mean()), "bits_per_dim": r.bits_per_dim,
               "khat_above_0.7": r.khat_above_07, "train_seconds": train_seconds}
        if recipe != baseline:
            c = compare(r, results[baseline], recipe, baseline)
            row.update(difference=c.difference, difference_se=c.se, verdict=c.verdict)
        rows.append(row)

    command = "python analysis/compare_recipes.py " + " ".join(argv if argv is not None
                                                               else sys.argv[1:])
    lines = [
        f"Test log-likelihood on {args.data} ({results[baseline].num_datapoints} test images, "
        f"IWAE with k = {args.k}), every recipe trained for {args.epochs} epochs "
        f"(seed {args.seed}); paired differences against `{baseline}`.",
        "",
        f"Command: `{command}`",
        "",
        "| recipe | log p(x) (nats) | ELBO | bits/dim | k-hat > 0.7 | paired difference vs "
        f"`{baseline}` | training time |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        diff = "-" if "difference" not in row else \
            f"{row['difference']:+.3f} +- {row['difference_se']:.3f}"
        khat = "-" if row["khat_above_0.7"] is None else f"{100 * row['khat_above_0.7']:.0f}%"
        lines.append(f"| `{row['recipe']}` | {row['log_likelihood']:.3f} +- {row['se']:.3f} | "
                     f"{row['elbo']:.3f} | {row['bits_per_dim']:.4f} | {khat} | {diff} | "
                     f"{row['train_seconds'] / 60:.1f} min |")
    lines += [""] + [f"- {row['verdict']}" for row in rows if "verdict" in row]
    table = "\n".join(lines)
    print(table)
    print(f"({time.time() - start:.0f} s)")
    if args.results:
        check_results_files(args)  # again: a file may have appeared while training
        md_path, json_path = results_files(args.results)
        md_path.write_text(table + "\n")
        json_path.write_text(json.dumps(rows, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
