"""Open a latent export (``pyro-vae export``) with ArviZ and use ArviZ's own tools on it.

Writes, into the output folder:

- ``summary.csv``: ``arviz.summary`` of the importance-resampled posterior draws of the
  chosen images (mean, sd, HDI, ESS per latent dimension);
- ``forest.png``: ``arviz.plot_forest`` of the guide's draws against the resampled draws,
  for the most active latent dimensions of the chosen images (where the two differ, the
  guide misses the posterior; where the resampled interval collapses to a point, the
  importance weights were degenerate: few effective samples);
- ``khat.png``: the distribution of the per-image Pareto k-hat of the importance weights.

Usage::

    pyro-vae export runs/fmnist10 -o runs/fmnist10/latents.nc --num-images 200
    python analysis/arviz_latents.py runs/fmnist10/latents.nc --out runs/fmnist10/arviz
"""

import argparse
import sys
from pathlib import Path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("netcdf", help="file written by pyro-vae export")
    parser.add_argument("--out", required=True, help="output folder (created)")
    parser.add_argument("--images", type=int, nargs="+", default=[0, 1, 2],
                        help="images to summarize and plot")
    parser.add_argument("--dims", type=int, default=4,
                        help="how many latent dimensions to show: those whose guide means vary "
                             "most across the exported images (the active units)")
    args = parser.parse_args(argv)

    import arviz as az
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    idata = az.from_netcdf(args.netcdf)
    missing = {"posterior", "guide", "estimates"} - set(idata.groups())
    if missing:
        sys.exit(f"{args.netcdf} lacks the group(s) {sorted(missing)}: not a pyro-vae export")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    site = list(idata.posterior.data_vars)[0]
    dim = f"{site}_dim"
    activity = idata.guide[site].mean(("chain", "draw")).var("image").values
    chosen = sorted(int(d) for d in activity.argsort()[::-1][:args.dims])
    coords = {"image": args.images, dim: chosen}
    print(f"{site}: dimensions {chosen}, whose guide means vary most across images")
    summary = az.summary(idata, var_names=[site], coords=coords)
    summary.to_csv(out / "summary.csv")
    print(summary.to_string())

    axes = az.plot_forest([idata.guide, idata.posterior], model_names=["guide q(z|x)",
                                                                       "resampled ~ p(z|x)"],
                          var_names=[site], coords=coords, combined=True, figsize=(7, 8))
    axes[0].figure.savefig(out / "forest.png", dpi=110, bbox_inches="tight")
    plt.close("all")

    khat = idata.estimates.khat.values
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(khat[~(khat != khat)], bins=30)
    for edge in (0.5, 0.7):
        ax.axvline(edge, color="k", lw=0.8, ls="--")
    ax.set_xlabel("Pareto k-hat of the importance weights, per image")
    ax.set_ylabel("images")
    fig.savefig(out / "khat.png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    print(f"written: {out / 'summary.csv'}, {out / 'forest.png'}, {out / 'khat.png'}")
    return summary


if __name__ == "__main__":
    main()
