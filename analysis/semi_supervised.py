"""Semi-supervised classification with M2: test accuracy of q(y|x) against the number of
labelled training images.

For each ``--labels N`` trains ``pyro-vae train m2 --labels N`` into ``OUT/m2-N`` (a run
folder already holding an ``eval.json`` is reused), then collects the test accuracy, the
validation accuracy of the last epoch and the test log-likelihood into ``OUT/table.md``
and ``OUT/table.json``, and draws the accuracy against N with the validation accuracy of
every epoch (``OUT/accuracy.png``). For reference, a supervised baseline: scikit-learn's
logistic regression fitted on the same N labelled images alone (grey levels), tested on
the test set.

Usage::

    python analysis/semi_supervised.py --data fashion-mnist --labels 100 600 1000 3000 \\
        --epochs 40 --k 100 --out runs/m2
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from sklearn.linear_model import LogisticRegression  # noqa: E402

from pyro_vae import cli  # noqa: E402
from pyro_vae.datasets import labelled_subset, load_dataset# noqa: E402
from pyro_vae.runs import load_run, read_metrics  # noqa: E402


def supervised_baseline(data, num_labelled, seed):
    """Test accuracy of a logistic regression fitted on the labelled subset alone."""
    keep = labelled_subset(data.train_labels, num_labelled, seed)
    model = LogisticRegression(max_iter=2000).fit(data.train[keep].numpy(),
                                                  data.train_labels[keep].numpy())
    return float(model.score(data.test.numpy(), data.test_labels.numpy()))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--labels", type=int, nargs="+", default=[100, 600, 1000, 3000])
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--k", type=int, default=100, help="particles of the test log-likelihood")
    p.add_argument("--recipe", default="m2")
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="auto")
    p.add_argument("--figure", help="PNG (default OUT/accuracy.png)")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    fig, (ax_n, ax_epochs) = plt.subplots(1, 2, figsize=(11, 4))
    for n in args.labels:
        run = out / f"{args.recipe}-{n}"
        if not (run / "eval.json").is_file():
            status = cli.main(["train", args.recipe, "--data", args.data, "--labels", str(n),
                               "--epochs", str(args.epochs), "--out", str(run), "--quiet",
                               "--device", args.device, "--set", f"eval.k={args.k}",
                               "--overwrite"])
            if status:
                raise SystemExit(f"training with {n} labels failed ({status})")
        summary = json.loads((run / "eval.json").read_text())
        metrics = read_metrics(run)
        _, config, _ = load_run(run, device="cpu")
        data = load_dataset(config.data.name, config.data.data_dir)
        rows.append({"labels": n, "num_labelled": summary["num_labelled"],
                     "test_accuracy": summary["test_accuracy"],
                     "logistic_regression_accuracy": supervised_baseline(
                         data, n, config.train.seed),
                     "validation_accuracy": metrics[-1]["validation_accuracy"],
                     "best_validation_accuracy": max(m["validation_accuracy"] for m in metrics),
                     "epochs": summary["epochs"],
                     "test_log_likelihood": summary["test_log_likelihood"],
                     "test_log_likelihood_se": summary["test_log_likelihood_se"],
                     "k": summary["k"]})
        ax_epochs.plot([m["epoch"] for m in metrics],
                       [100 * m["validation_accuracy"] for m in metrics], label=f"{n} labels")
    ax_n.plot([r["labels"] for r in rows], [100 * r["test_accuracy"] for r in rows], "o-")
    ax_n.set_xscale("log")
    ax_n.set_xlabel("labelled training images")
    ax_n.set_ylabel("test accuracy of q(y|x) (%)")
    ax_n.set_title(f"M2 on {args.data}")
    ax_epochs.set_xlabel("epoch")
    ax_epochs.set_ylabel("validation accuracy (%)")
    ax_epochs.legend()
    fig.tight_layout()
    fig.savefig(Path(args.figure) if args.figure else out / "accuracy.png", dpi=110)
    plt.close(fig)
    lines = ["| labelled images | M2 test accuracy | validation accuracy (last epoch / best) | "
             "logistic regression on the labelled images alone | epochs | test log p(x) (nats) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['num_labelled']} | {100 * r['test_accuracy']:.2f}% | "
                     f"{100 * r['validation_accuracy']:.2f}% / "
                     f"{100 * r['best_validation_accuracy']:.2f}% | "
                     f"{100 * r['logistic_regression_accuracy']:.2f}% | {r['epochs']} | "
                     f"{r['test_log_likelihood']:.2f} +- {r['test_log_likelihood_se']:.2f} "
                     f"(k = {r['k']}) |")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    (out / "table.json").write_text(json.dumps(rows, indent=1) + "\n")
    print("\n".join(lines))
    return rows


if __name__ == "__main__":
    main()
