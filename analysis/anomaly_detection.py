"""Anomaly detection with a VAE's log-likelihood: train on all classes but one, score the
test set, and ask how well -log p(x) singles out the held-out class (AUROC), against the
ELBO-based score.

Steps: ``pyro-vae train RECIPE --set data.classes=[...]`` (every class but ``--held-out``),
then ``pyro-vae score`` on the whole test set (IWAE bound with ``--k`` particles), then
scikit-learn's ``roc_auc_score`` with the held-out class as positives, for -log p(x) and for
-ELBO. Writes ``OUT/scores.csv``, ``OUT/auroc.json`` and the run folder ``OUT/run``.

Usage::

    python analysis/anomaly_detection.py --data fashion-mnist --held-out 0 --epochs 20 \\
        --k 1000 --out runs/anomaly-fmnist-0
"""

import argparse
import csv
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pyro_vae import cli  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default="vae")
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--held-out", type=int, default=0, help="the class left out of training")
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--k", type=int, default=1000, help="particles of the IWAE score")
    parser.add_argument("--out", required=True, help="output folder (created)")
    parser.add_argument("--set", dest="extra", action="append", default=[],
                        help="extra --set TABLE.KEY=VALUE for training")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)

    from sklearn.metrics import roc_auc_score

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    run = out / "run"
    kept = [c for c in range(args.num_classes) if c != args.held_out]
    if not (run / "checkpoint.pt").exists():
        argv_train = ["train", args.recipe, "--data", args.data, "--epochs", str(args.epochs),
                      "--out", str(run), "--quiet", "--device", args.device,
                      "--set", f"data.classes={kept}", "--set", "eval.k=10"]
        for item in args.extra:
            argv_train += ["--set", item]
        if cli.main(argv_train) != 0:
            raise SystemExit("training failed")
    scores = out / "scores.csv"
    if cli.main(["score", str(run), "-o", str(scores), "--k", str(args.k), "--quiet",
                 "--overwrite", "--device", args.device]) != 0:
        raise SystemExit("scoring failed")
    with open(scores) as f:
        rows = list(csv.DictReader(f))
    if not rows or rows[0]["label"] == "":
        raise SystemExit(f"{args.data} has no test labels; AUROC needs them")
    positive = [int(r["label"]) == args.held_out for r in rows]
    nll = [float(r["neg_log_likelihood"]) for r in rows]
    neg_elbo = [float(r["neg_elbo"]) for r in rows]
    result = {
        "data": args.data, "recipe": args.recipe, "held_out": args.held_out,
        "epochs": args.epochs, "k": args.k, "num_test": len(rows),
        "num_held_out": int(sum(positive)),
        "auroc_neg_log_likelihood": roc_auc_score(positive, nll),
        "auroc_neg_elbo": roc_auc_score(positive, neg_elbo),
    }
    (out / "auroc.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"held-out class {args.held_out} of {args.data}: AUROC {result['auroc_neg_log_likelihood']:.4f} "
          f"with -log p(x) (IWAE, k = {args.k}), {result['auroc_neg_elbo']:.4f} with -ELBO")
    return result


if __name__ == "__main__":
    main()
