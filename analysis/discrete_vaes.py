"""Compare VAE families at one budget (issue 18): the test log-likelihood bound with paired
differences against a baseline run, sample sharpness measured by a classifier, training
time, and figures of samples, reconstructions and a categorical code's traversal.

Sharpness: a small scikit-learn MLP classifier (one hidden layer of 128 ReLUs) is fitted on
``--train-images`` grey-level training images of the run's data. For each run, ``--samples``
prior samples (the likelihood's pixel means, what every figure shows) and as many test images
(grey levels) are mapped to the classifier's hidden features; the Frechet distance between
the two Gaussians fitted to those features (as the FID of Heusel et al. 2017,
arXiv:1706.08500, with a small classifier of our own instead of Inception) measures how far
the samples are from real images, and the classifier's mean top probability on the samples
how recognisable they are (test images: the same number for reference). Training minutes
are the epochs' own wall time as ``metrics.jsonl`` records it (validation passes excluded).

Usage::

    python analysis/discrete_vaes.py --run vae=runs/discrete50/vae \\
        --run discrete=runs/discrete50/discrete --baseline vae --k 1000 \\
        --figure-dir analysis/figures --json analysis/discrete_vaes.json

Every run must have been evaluated at ``--k`` with seed 0, or at the k of its ``eval.json``
(the VQ-VAE's point-mass guide gives the same bound at any k: ``eval.k = 1``); the per-image
estimates ``loglik-k{K}-seed0.pt`` are what the paired differences use.
"""

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import warnings  # noqa: E402

import numpy as np  # noqa: E402
import scipy.linalg  # noqa: E402
import torch  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.neural_network import MLPClassifier  # noqa: E402

from pyro_vae import infer, plots  # noqa: E402
from pyro_vae.datasets import load_dataset  # noqa: E402
from pyro_vae.estimate_files import load_result  # noqa: E402
from pyro_vae.runs import load_run, read_eval_json, read_metrics  # noqa: E402


def frechet_distance(a, b):
    """Frechet distance between Gaussians fitted to the rows of ``a`` and ``b`` (n x d)."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    with warnings.catch_warnings():  # dead ReLU features make the covariances singular
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        root = scipy.linalg.sqrtm(cov_a @ cov_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))


def features(classifier, x):
    """The classifier's hidden ReLU features of images ``x`` (n x D)."""
    return np.maximum(x @ classifier.coefs_[0] + classifier.intercepts_[0], 0)


def parse_runs(pairs):
    runs = {}
    for pair in pairs:
        name, _, folder = pair.partition("=")
        if not folder:
            raise SystemExit(f"--run takes NAME=FOLDER, got {pair!r}")
        runs[name] = Path(folder)
    return runs


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", action="append", required=True, help="NAME=FOLDER (repeatable)")
    p.add_argument("--baseline", help="the NAME the others are paired against (default: first)")
    p.add_argument("--k", type=int, default=1000)
    p.add_argument("--samples", type=int, default=2000)
    p.add_argument("--train-images", type=int, default=20000)
    p.add_argument("--figure-dir", help="write samples, reconstructions and traversal figures")
    p.add_argument("--json", help="write the table as JSON")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    runs = parse_runs(args.run)
    baseline = args.baseline or next(iter(runs))
    loaded = {name: load_run(folder, device="cpu") for name, folder in runs.items()}
    config = next(iter(loaded.values()))[1]
    data = load_dataset(config.data.name, config.data.data_dir)
    n = min(args.train_images, data.train.shape[0])
    classifier = MLPClassifier(hidden_layer_sizes=(128,), max_iter=30, random_state=args.seed)
    with warnings.catch_warnings():  # 30 epochs of Adam: a feature map, not a tuned classifier
        warnings.simplefilter("ignore", ConvergenceWarning)
        classifier.fit(data.train[:n].numpy(), data.train_labels[:n].numpy())
    test = data.test[:args.samples].numpy()
    test_features = features(classifier, test)
    # a run evaluated at another k in its eval.json (the VQ-VAE: k = 1, its bound does not
    # change with k) is taken at that k; the table says which
    results = {name: load_result(folder, args.k, 0) or
               load_result(folder, read_eval_json(folder).get("k", args.k), 0)
               for name, folder in runs.items()}
    missing = [name for name, r in results.items() if r is None]
    if missing:
        raise SystemExit(f"no per-image estimates at k = {args.k}, seed 0 for {missing}: run "
                         f"`pyro-vae evaluate FOLDER --k {args.k}` first")
    rows, samples, recons = [], {}, {}
    originals = torch.bernoulli(data.test[:10], generator=torch.Generator().manual_seed(777))
    for name, (vae, cfg, state) in loaded.items():
        with torch.no_grad(), infer.seeded(args.seed):
            x = vae.sample(args.samples)
            recons[name] = vae.reconstruct(originals)
        samples[name] = x[:10]
        r = results[name]
        row = {"run": name, "folder": str(runs[name]), "recipe": cfg.name,
               "objective": cfg.train.objective, "log_likelihood": r.mean, "se": r.se,
               "elbo": float(r.elbo.mean()), "k": r.num_particles,
               "frechet_distance": frechet_distance(features(classifier, x.numpy()), test_features),
               "sample_confidence": float(classifier.predict_proba(x.numpy()).max(1).mean()),
               "epochs": int(state["epoch"]),
               "train_minutes": sum(m.get("seconds", 0.0) for m in read_metrics(runs[name])) / 60,
               "eval": {key: read_eval_json(runs[name]).get(key) for key in
                        ("active_units", "kl", "khat_above_0.7")}}
        if name != baseline:
            c = infer.compare(r, results[baseline], name_a=name, name_b=baseline)
            row.update(difference=c.difference, difference_se=c.se)
        rows.append(row)
    reference = float(classifier.predict_proba(test).max(1).mean())
    print(f"| run | objective | log p(x) bound | k | vs {baseline} (paired) | ELBO | "
          "Frechet distance | sample confidence | epochs | train minutes |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        diff = (f"{row['difference']:+.2f} +- {row['difference_se']:.2f}" if "difference" in row
                else "baseline")
        print(f"| {row['run']} | {row['objective']} | {row['log_likelihood']:.2f} +- "
              f"{row['se']:.2f} | {row['k']} | {diff} | {row['elbo']:.2f} | {row['frechet_distance']:.1f} | "
              f"{row['sample_confidence']:.3f} | {row['epochs']} | {row['train_minutes']:.2f} |")
    print(f"test images: sample confidence {reference:.3f}; Frechet distance of {args.samples} "
          "training images to the test images: "
          f"{frechet_distance(features(classifier, data.train[-args.samples:].numpy()), test_features):.1f}")
    if args.figure_dir:
        out = Path(args.figure_dir)
        out.mkdir(parents=True, exist_ok=True)
        image_shape = tuple(next(iter(loaded.values()))[2]["image_shape"])
        names = list(loaded)
        grid = torch.cat([samples[name] for name in names])
        plots.save_figure(plots.plot_images(grid, image_shape, nrow=10, row_labels=names,
                                            title="samples (pixel means)"),
                          out / "discrete_vaes_samples.png")
        grid = torch.cat([originals] + [recons[name] for name in names])
        plots.save_figure(plots.plot_images(grid, image_shape, nrow=10,
                                            row_labels=["test image"] + names,
                                            title="reconstructions (pixel means)"),
                          out / "discrete_vaes_reconstructions.png")
        for name, (vae, _, _) in loaded.items():
            if getattr(vae.posterior, "categorical", False):
                plots.save_figure(plots.plot_code_traversal(vae, originals[:1], image_shape),
                                  out / f"discrete_vaes_traversal_{name}.png")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "test_confidence": reference,
                                               "baseline": baseline}, indent=1) + "\n")
    return rows


if __name__ == "__main__":
    main()
