"""Figures of saved test log-likelihood estimates: the bound against k, the k-hat
distribution, and paired differences against the first run.

Reads the per-image estimates that ``pyro-vae evaluate RUN --k K`` saved in each run
folder (``loglik-k<K>-seed<S>.pt``); nothing is recomputed.

Usage::

    python analysis/estimate_figures.py runs/budget50/vae runs/budget50/ladder --k 1000 \\
        --out analysis/figures/estimates.png
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run folders; the first is the baseline")
    parser.add_argument("--k", type=int, required=True, help="k of the saved estimates")
    parser.add_argument("--seed", type=int, default=0, help="seed of the saved estimates")
    parser.add_argument("--khat-runs", type=int, default=2,
                        help="how many runs (from the first) to overlay in the k-hat panel")
    parser.add_argument("--out", required=True, help="PNG file to write")
    args = parser.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pyro_vae import plots
    from pyro_vae.estimate_files import load_result

    results, names = [], []
    for run in args.runs:
        result = load_result(run, args.k, args.seed)
        if result is None:
            sys.exit(f"{run} has no saved estimates for k = {args.k}, seed {args.seed}; run "
                     f"pyro-vae evaluate {run} --k {args.k} first")
        results.append(result)
        names.append(Path(run).name)
    panels = 3 if len(results) > 1 else 2
    fig, axes = plt.subplots(1, panels, figsize=(5.7 * panels, 4.5))
    plots.plot_bound_vs_k(results, names, ax=axes[0])
    axes[0].set_title("IWAE bound against k")
    count = max(1, min(args.khat_runs, len(results)))
    plots.plot_khat(results[:count], names[:count], ax=axes[1])
    axes[1].set_title(f"Pareto k-hat, k = {args.k}")
    if panels == 3:
        plots.plot_comparison(results, names, ax=axes[2])
        axes[2].set_title(f"paired difference against {names[0]}")
    fig.tight_layout()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    plots.save_figure(axes[0], out, dpi=100)
    print(out)
    return out


if __name__ == "__main__":
    main()
