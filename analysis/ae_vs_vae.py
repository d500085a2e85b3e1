"""Autoencoders against a VAE: samples from the prior, and where the prior's draws fall
among the codes of real images.

Trains (or reuses) the recipes ``vae``, ``ae`` and ``dae`` with the same networks and
prior, then draws one figure with a column per model: a grid of images decoded from
z ~ p(z), and a PCA projection (scikit-learn) of the codes of test images (the guide's
draw from q(z|x), or an autoencoder's point: together a sample of the aggregate posterior)
with prior draws over them. A latent space that the objective never asked to cover the
prior leaves the prior's draws in regions no image maps to ("holes"), and their decodings
are not images of the data.

The numbers written beside the figure (``ae_vs_vae.json``):

- ``hole_ratio``: the median distance from a prior draw to its nearest test code, over the
  median distance from a test code to its nearest other test code (scikit-learn's
  NearestNeighbors, in the full latent space): about 1 when prior draws fall among codes,
  far above 1 when they fall in holes;
- ``code_norm`` / ``prior_norm``: the median Euclidean norm of the codes and of the draws;
- the test log-likelihood (IWAE bound, ``--k``) of each run (for autoencoders with the
  explicit Gaussian evaluation proposal :class:`pyro_vae.distributions.GaussianProposal`).

Usage::

    python analysis/ae_vs_vae.py --data fashion-mnist --epochs 20 --k 1000 \\
        --out runs/ae-vs-vae --figure analysis/figures/fashion_mnist_ae_vs_vae.png
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.neighbors import NearestNeighbors  # noqa: E402

from pyro_vae import cli, plots  # noqa: E402

from pyro_vae import latent_plots
from pyro_vae.batches import prepare_eval_splits# noqa: E402
from pyro_vae.datasets import load_dataset# noqa: E402
from pyro_vae.infer import seeded  # noqa: E402
from pyro_vae.runs import load_run  # noqa: E402

RECIPES = ("vae", "ae", "dae")


def hole_statistics(codes, draws):
    """``(hole_ratio, code_norm, prior_norm)`` (see the module docstring)."""
    nn = NearestNeighbors(n_neighbors=2).fit(codes)
    between = nn.kneighbors(codes)[0][:, 1]
    to_prior = nn.kneighbors(draws, n_neighbors=1)[0][:, 0]
    return (float(np.median(to_prior) / np.median(between)),
            float(np.median(np.linalg.norm(codes, axis=1))),
            float(np.median(np.linalg.norm(draws, axis=1))))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--k", type=int, default=1000, help="particles of the test log-likelihood")
    p.add_argument("--num-codes", type=int, default=2000, help="test images to encode")
    p.add_argument("--out", required=True, help="folder of the runs (reused when present)")
    p.add_argument("--figure", help="PNG to write (default OUT/ae_vs_vae.png)")
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for recipe in RECIPES:
        run = out / recipe
        if not (run / "eval.json").is_file():
            status = cli.main(["train", recipe, "--data", args.data, "--epochs", str(args.epochs),
                               "--out", str(run), "--quiet", "--device", args.device,
                               "--set", f"eval.k={args.k}", "--overwrite"])
            if status:
                raise SystemExit(f"training {recipe} failed ({status})")
    data = load_dataset(args.data)
    test = prepare_eval_splits(data, "dynamic")[1][:args.num_codes]
    fig, axes = plt.subplots(2, len(RECIPES), figsize=(4.2 * len(RECIPES), 8.6))
    summary = {}
    for col, recipe in enumerate(RECIPES):
        vae, config, state = load_run(out / recipe, device="cpu")
        image_shape = tuple(state["image_shape"])
        with torch.no_grad(), seeded(0):
            if getattr(vae.posterior, "point_mass", False):
                codes = latent_plots.latent_point(vae, test).numpy()
            else:
                codes = vae.posterior(test).sample().numpy()
            draws = vae.prior(args.num_codes).sample().numpy()
            samples = vae.sample(36)
        ratio, code_norm, prior_norm = hole_statistics(codes, draws)
        loglik = json.loads((out / recipe / "eval.json").read_text())
        summary[recipe] = {"hole_ratio": ratio, "code_norm": code_norm,
                           "prior_norm": prior_norm,
                           "test_log_likelihood": loglik["test_log_likelihood"],
                           "test_log_likelihood_se": loglik["test_log_likelihood_se"],
                           "k": loglik["k"], "epochs": int(state["epoch"])}
        plots.plot_images(samples, image_shape, nrow=6, ax=axes[0, col],
                          title=f"{recipe}: decoded z ~ p(z)")
        pca = PCA(n_components=2).fit(codes)
        c2, d2 = pca.transform(codes), pca.transform(draws)
        ax = axes[1, col]
        ax.scatter(d2[:, 0], d2[:, 1], s=3, c="tab:red", alpha=0.35, label="draws of p(z)")
        ax.scatter(c2[:, 0], c2[:, 1], s=3, c="k", alpha=0.5, label="codes of test images")
        ax.set_title(f"{recipe}: PCA of codes; hole ratio {ratio:.1f}")
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
        ax.legend(loc="upper right", markerscale=4, fontsize=8)
    fig.suptitle(f"{args.data}: prior samples and latent codes of a VAE and two autoencoders "
                 f"({args.epochs} epochs)")
    fig.tight_layout()
    figure = Path(args.figure) if args.figure else out / "ae_vs_vae.png"
    fig.savefig(figure, dpi=110)
    plt.close(fig)
    (out / "ae_vs_vae.json").write_text(json.dumps(summary, indent=1) + "\n")
    for recipe, row in summary.items():
        print(f"{recipe:4s} log p(x) {row['test_log_likelihood']:9.2f} +- "
              f"{row['test_log_likelihood_se']:.2f} (k={row['k']})  hole ratio "
              f"{row['hole_ratio']:6.2f}  |code| {row['code_norm']:6.2f}  "
              f"|z ~ p(z)| {row['prior_norm']:6.2f}")
    print(figure)


if __name__ == "__main__":
    main()
