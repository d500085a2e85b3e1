"""Tabulate runs of the paper recipes against the published Fashion-MNIST table, and draw
their validation curves against the published numbers (issue 16).

Published test NLL on dynamically binarized Fashion-MNIST, k = 5000 (Norouzi et al. 2020,
Exemplar VAE, arXiv:2004.04795, Table 1; networks of Tomczak & Welling 2018,
arXiv:1705.07120): see :data:`PUBLISHED`.

Usage::

    python analysis/reproduction.py --run paper_vae=runs/paper_vae \\
        --run paper_vamp=runs/paper_vamp --run record=runs/vamp_90min \\
        --figure analysis/figures/reproduction_curves.png

Each ``--run ROW=FOLDER`` names a published row (a key of :data:`PUBLISHED`) or ``record``
(compared with the MLP VAE and the VampPrior rows, its targets) and a finished run folder whose ``eval.json`` holds the test
estimate. The Markdown table is printed; the figure is written only where no file is, unless
``--overwrite``.
"""

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pyro_vae.checkpoint import load_checkpoint  # noqa: E402
from pyro_vae.runs import read_eval_json, read_metrics  # noqa: E402

#: Published rows: recipe -> (label, test NLL in nats, its standard error).
PUBLISHED = {
    "paper_vae": ("VAE (gated MLP)", 228.70, 0.15),
    "paper_vamp": ("VampPrior", 227.35, 0.05),
    "paper_hvae": ("two-level HVAE", 227.37, 0.10),
    "paper_hvae_vamp": ("two-level HVAE + VampPrior", 226.72, 0.08),
}

#: How a run ended, in words.
STOPPED = {"early_stopping": "early stopping", "epochs": "epoch budget",
           "max_minutes": "wall-time limit", "interrupted": "interrupted"}


def summarize(row, folder):
    """One table row for the run in ``folder``: a dict of what the table prints.

    :raises SystemExit: if the folder has no ``eval.json`` or metrics.
    """
    evaluation, metrics = read_eval_json(folder), read_metrics(folder)
    if not evaluation or not metrics or "test_log_likelihood" not in evaluation:
        raise SystemExit(f"{folder}: no finished run (eval.json with a test estimate and "
                         "metrics.jsonl are needed)")
    recipe = json.loads((Path(folder) / "config.json").read_text()).get("name")
    if row != "record" and recipe != row:
        raise SystemExit(f"{folder} is a run of recipe {recipe!r}, not of the row's {row!r}")
    checkpoint = Path(folder) / "checkpoint.pt"
    state = load_checkpoint(checkpoint if checkpoint.is_file() else Path(folder) / "best.pt")
    # a packed folder's best.pt records the whole training's wall time; one packed before
    # that was recorded gives the time up to the evaluated epoch
    seconds = (state.get("packed_from") or {}).get("training_seconds", state.get("elapsed", 0.0))
    return {"row": row, "folder": str(folder), "nll": -evaluation["test_log_likelihood"],
            "se": evaluation["test_log_likelihood_se"], "k": evaluation["k"],
            "epochs": metrics[-1]["epoch"], "best_epoch": evaluation.get("evaluated_epoch"),
            "stopped": STOPPED.get(evaluation.get("stopped"), evaluation.get("stopped")),
            "minutes": float(seconds) / 60,
            "khat": evaluation.get("khat_above_0.7")}


def targets_of(row):
    """The published rows a table row is compared with."""
    if row == "record":
        return {k: PUBLISHED[k] for k in ("paper_vae", "paper_vamp")}
    return {row: PUBLISHED[row]}


def table(rows):
    """The Markdown table of ``rows`` (from :func:`summarize`) against :data:`PUBLISHED`:
    the difference in units of the paper's standard error (positive: ours is worse)."""
    lines = ["| row | ours: test NLL (nats) | k | paper | difference (in paper SEs) | epochs "
             "(best) | stopped by | wall minutes (training, validation) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        targets = targets_of(r["row"])
        paper = "; ".join(f"{label} {nll:.2f} +- {se:.2f}" for label, nll, se in targets.values())
        diff = "; ".join(f"{r['nll'] - nll:+.2f} nats ({(r['nll'] - nll) / se:+.1f})"
                         for _, nll, se in targets.values())
        label = "90-minute record" if r["row"] == "record" else PUBLISHED[r["row"]][0]
        lines.append(f"| {label} | {r['nll']:.2f} +- {r['se']:.2f} | {r['k']} | {paper} | {diff} "
                     f"| {r['epochs']} ({r['best_epoch']}) | {r['stopped']} | "
                     f"{r['minutes']:.0f} |")
    return "\n".join(lines)


def plot(rows, path):
    """Validation -ELBO per epoch of each run, with the published test NLL of its row (a
    tighter bound than the ELBO: the curve is expected to stay above it by the gap between
    the ELBO and log p(x), a few nats) and our own test NLL at the evaluated epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(rows), figsize=(5 * len(rows), 4), squeeze=False)
    for ax, r in zip(axes[0], rows):
        metrics = read_metrics(r["folder"])
        epochs = [m["epoch"] for m in metrics]
        ax.plot(epochs, [-m["validation_elbo"] for m in metrics], lw=1,
                label="validation -ELBO")
        targets = targets_of(r["row"])
        for (label, nll, _), color in zip(targets.values(), ["C1", "C2", "C3", "C4"]):
            ax.axhline(nll, color=color, ls="--", lw=1, label=f"paper test NLL, {label}")
        ax.plot([r["best_epoch"]], [r["nll"]], "k*", ms=10, label=f"ours, test NLL k={r['k']}")
        low = min(nll for _, nll, _ in targets.values()) - 2
        ax.set_ylim(low, low + 20)
        ax.set_xlabel("epoch")
        ax.set_ylabel("nats")
        ax.set_title("90-minute record" if r["row"] == "record" else PUBLISHED[r["row"]][0])
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    """Print the table; draw the figure (``--figure``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", action="append", default=[], metavar="ROW=FOLDER",
                        help=f"a row ({', '.join(PUBLISHED)} or record) and its run folder")
    parser.add_argument("--figure", help="write the validation curves here (.png)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing figure")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON too")
    args = parser.parse_args(argv)
    rows = []
    for item in args.run:
        row, sep, folder = item.partition("=")
        if not sep or (row not in PUBLISHED and row != "record"):
            parser.error(f"--run takes ROW=FOLDER with ROW one of {list(PUBLISHED)} or record, "
                         f"got {item!r}")
        rows.append(summarize(row, Path(folder)))
    if not rows:
        parser.error("give at least one --run ROW=FOLDER")
    if args.figure and Path(args.figure).exists() and not args.overwrite:
        parser.error(f"{args.figure} exists; pass --overwrite to replace it")
    print(table(rows))
    if args.json:
        print(json.dumps(rows, indent=1))
    if args.figure:
        plot(rows, args.figure)
        print(f"figure: {args.figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
