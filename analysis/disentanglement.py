"""Compare disentangling objectives on ``--data shapes`` over several seeds (issue 19).

Reads run folders named ``NAME-sSEED`` under ``--runs`` (each trained and evaluated by
``pyro-vae train``, so its ``eval.json`` has ``mig`` and ``dci``), groups them by NAME and
prints, per objective, the mean, standard deviation and range across seeds of MIG, the
three DCI scores, the test ELBO and the IWAE bound (the run's k), the KL and the active
units. Differences of each objective against ``--baseline`` are paired by seed (the same
seed gives the same initial weights and data order). Disentanglement metrics vary a lot
with the seed (Locatello et al. 2019, arXiv:1811.12359): the spread is the point.

Figures (``--figure-dir``): ``shapes_disentanglement.png``, MIG and DCI disentanglement
against the test ELBO, one point per run; ``shapes_traversals.png``, for each objective its
run with the median MIG, one traversal row per active dimension labelled with the factor it
carries most; ``shapes_mutual_information.png``, the latent-by-factor mutual information of
the same runs, on one colour scale.

Usage::

    python analysis/disentanglement.py --runs runs/shapes --baseline vae \\
        --figure-dir analysis/figures --json analysis/disentanglement.json
"""

import argparse
import json
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from pyro_vae import plots  # noqa: E402
from pyro_vae.datasets import load_dataset  # noqa: E402
from pyro_vae.factor_eval import dimension_labels  # noqa: E402
from pyro_vae.latent_plots import plot_traversal  # noqa: E402
from pyro_vae.runs import load_run, read_eval_json  # noqa: E402

#: What the table reports per run, from its eval.json.
COLUMNS = {"mig": lambda e: e["mig"],
           "dci_disentanglement": lambda e: e["dci"]["disentanglement"],
           "dci_completeness": lambda e: e["dci"]["completeness"],
           "dci_informativeness": lambda e: e["dci"]["informativeness"],
           "test_elbo": lambda e: e["test_elbo"],
           "log_likelihood": lambda e: e["test_log_likelihood"],
           "kl": lambda e: e["kl"]["z"],
           "active_units": lambda e: e["active_units"]["z"]}


def collect(runs_dir):
    """``{name: {seed: (folder, eval dict)}}`` for every evaluated ``NAME-sSEED`` folder."""
    found = defaultdict(dict)
    for folder in sorted(Path(runs_dir).iterdir()):
        match = re.fullmatch(r"(.+)-s(\d+)", folder.name)
        if not folder.is_dir() or not match:
            continue
        summary = read_eval_json(folder)
        if "mig" not in summary:
            continue
        found[match.group(1)][int(match.group(2))] = (folder, summary)
    return dict(found)


def spread(values):
    """Mean, standard deviation (0 for one value), min and max."""
    values = list(values)
    return {"mean": statistics.fmean(values),
            "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values)}


def summarize(found, baseline):
    """Rows of the table: per objective, the spread of every column, and the paired
    differences against ``baseline`` (by seed) of MIG, DCI disentanglement and the ELBO."""
    rows = []
    for name, by_seed in found.items():
        row = {"objective": name, "seeds": sorted(by_seed)}
        for column, read in COLUMNS.items():
            row[column] = spread(read(e) for _, e in by_seed.values())
        if baseline in found and name != baseline:
            shared = sorted(set(by_seed) & set(found[baseline]))
            for column in ("mig", "dci_disentanglement", "test_elbo", "log_likelihood"):
                diffs = [COLUMNS[column](by_seed[s][1]) - COLUMNS[column](found[baseline][s][1])
                         for s in shared]
                if diffs:
                    row[f"{column}_vs_{baseline}"] = spread(diffs)
        rows.append(row)
    return rows


def median_run(by_seed):
    """The folder and summary of the run with the median MIG (the lower of two middles)."""
    ordered = sorted(by_seed.values(), key=lambda fe: fe[1]["mig"])
    return ordered[(len(ordered) - 1) // 2]


def write_figures(found, out):
    """The three figures of the module docstring, into the folder ``out``."""
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name, by_seed in found.items():
        elbo = [e["test_elbo"] for _, e in by_seed.values()]
        axes[0].scatter(elbo, [e["mig"] for _, e in by_seed.values()], label=name)
        axes[1].scatter(elbo, [e["dci"]["disentanglement"] for _, e in by_seed.values()],
                        label=name)
    for ax, what in zip(axes, ("MIG", "DCI disentanglement")):
        ax.set_xlabel("test ELBO (nats)")
        ax.set_ylabel(what)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle("disentanglement against the ELBO, one point per run (seed)")
    fig.tight_layout()
    plots.save_figure(axes[0], out / "shapes_disentanglement.png")

    chosen = {name: median_run(by_seed) for name, by_seed in found.items()}
    data = load_dataset("shapes")
    image = data.test[0]
    heights = [max(1, len(e["disentanglement"]["active_dims"])) for _, e in chosen.values()]
    fig, axes = plt.subplots(len(chosen), 1, figsize=(7, 0.62 * sum(heights) + 0.5 * len(chosen)),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    for ax, (name, (folder, summary)) in zip(axes[:, 0], chosen.items()):
        details = summary["disentanglement"]
        vae, _, _ = load_run(folder, device="cpu")
        if details["active_dims"]:
            plot_traversal(vae, image, data.image_shape, dims=details["active_dims"], span=2.5,
                           ax=ax, row_labels=dimension_labels(details))
        ax.set_title(f"{name} ({folder.name}, MIG {summary['mig']:.3f})")
    fig.tight_layout()
    plots.save_figure(axes[0, 0], out / "shapes_traversals.png")

    fig, axes = plt.subplots(1, len(chosen), figsize=(4.2 * len(chosen), 4.2), squeeze=False)
    top = max(max(map(max, e["disentanglement"]["mutual_information"])) for _, e in chosen.values())
    for ax, (name, (folder, summary)) in zip(axes[0], chosen.items()):
        details = summary["disentanglement"]
        plots.plot_mutual_information(details["mutual_information"], details["factor_names"],
                                      ax=ax, title=f"{name} ({folder.name})", vmax=top)
    fig.tight_layout()
    plots.save_figure(axes[0, 0], out / "shapes_mutual_information.png")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", required=True, help="folder holding the NAME-sSEED run folders")
    p.add_argument("--baseline", default="vae", help="the NAME the others are paired against")
    p.add_argument("--figure-dir", help="write the figures here")
    p.add_argument("--json", help="write the table as JSON")
    args = p.parse_args(argv)
    found = collect(args.runs)
    if not found:
        raise SystemExit(f"no evaluated NAME-sSEED run folders with disentanglement metrics "
                         f"under {args.runs}")
    rows = summarize(found, args.baseline)

    def cell(s, digits=3):
        return f"{s['mean']:.{digits}f} +- {s['sd']:.{digits}f} [{s['min']:.{digits}f}, " \
               f"{s['max']:.{digits}f}]"

    print("| objective | seeds | MIG | DCI disentanglement | DCI completeness | DCI "
          "informativeness | test ELBO | log p(x) | KL | active units |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['objective']} | {len(r['seeds'])} | {cell(r['mig'])} | "
              f"{cell(r['dci_disentanglement'])} | {cell(r['dci_completeness'])} | "
              f"{cell(r['dci_informativeness'])} | {cell(r['test_elbo'], 2)} | "
              f"{cell(r['log_likelihood'], 2)} | {cell(r['kl'], 2)} | "
              f"{r['active_units']['mean']:.1f} |")
    paired = [r for r in rows if f"mig_vs_{args.baseline}" in r]
    if paired:
        print(f"\npaired by seed against {args.baseline}: mean +- sd [min, max] of the differences")
        print("| objective | MIG | DCI disentanglement | test ELBO | log p(x) |")
        print("|---|---|---|---|---|")
        for r in paired:
            b = args.baseline
            print(f"| {r['objective']} | {cell(r[f'mig_vs_{b}'])} | "
                  f"{cell(r[f'dci_disentanglement_vs_{b}'])} | {cell(r[f'test_elbo_vs_{b}'], 2)} | "
                  f"{cell(r[f'log_likelihood_vs_{b}'], 2)} |")
    if args.figure_dir:
        write_figures(found, Path(args.figure_dir))
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "baseline": args.baseline},
                                              indent=1) + "\n")
    return rows


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
