"""The estimator-of-record table: IWAE, AIS, BDMC and the inference gaps for trained runs.

For each run folder, on the first ``--num-test`` test images: the IWAE bound with ``--k``
particles (kept as ``RUN/iwae-k<k>-n<N>.pt``), AIS (``pyro-vae evaluate RUN --method
ais``), the BDMC sandwich on as many images simulated from the model (``pyro-vae bdmc``)
and the inference gaps (``pyro-vae gaps``, reusing the AIS estimate), all with the same AIS
settings. Each command skips work whose result the run folder already holds (same settings,
images and weights). Then a Markdown table with paired differences against the first run
(image by image, AIS and IWAE), a JSON file of the rows and a figure: each run's bound
against compute, and the paired differences under both estimators.

Usage::

    python analysis/ais_table.py runs/ais50/vae runs/ais50/vae_iaf runs/ais50/vae_vamp \\
        runs/ais50/hvae2 runs/ais50/ladder --num-steps 100 --num-chains 4 --num-leapfrog 5 \\
        --out analysis/ais_table --figure analysis/figures/fashion_mnist_ais_table.png
"""

import argparse
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pyro_vae import cli  # noqa: E402
from pyro_vae.checkpoint import atomic_save, safe_load  # noqa: E402
from pyro_vae.estimate_plots import plot_bound_vs_compute, saved_ais, saved_entries  # noqa: E402
from pyro_vae.infer import LogLikelihoodResult, log_likelihood, standard_error  # noqa: E402
from pyro_vae.runs import load_for_evaluation  # noqa: E402


def iwae_first(run, k, num_test, seed=0, particle_batch=500):
    """The IWAE bound with ``k`` particles on the first ``num_test`` test images of
    ``run``, computed once and kept in the run folder."""
    path = Path(run) / f"iwae-k{k}-n{num_test}-seed{seed}.pt"
    args = SimpleNamespace(device="cpu", k=None, batch_size=None, particle_batch=None,
                           seed=None)
    vae, config, state, test, _, _ = load_for_evaluation(run, args)
    if path.is_file():
        saved = safe_load(path)
        if saved.get("weights_digest") == state.get("digest"):
            return LogLikelihoodResult.from_state_dict(saved["result"])
    vae.eval()
    r = log_likelihood(vae.model, vae.proposal(), test[:num_test], num_particles=k,
                       batch_size=config.eval.batch_size, particle_batch=particle_batch,
                       seed=seed, progress=True)
    atomic_save({"weights_digest": state.get("digest"), "result": r.state_dict()}, path)
    return r


def estimates(run, a):
    """Run (or read) every estimate of one run; returns a dict of per-image tensors and
    summaries."""
    settings = ["--num-test", str(a.num_test), "--num-chains", str(a.num_chains),
                "--num-steps", str(a.num_steps), "--num-leapfrog", str(a.num_leapfrog),
                "--device", "cpu"] + (["--quiet"] if a.quiet else [])
    bdmc_images = a.bdmc_num_test or a.num_test

    def entry(name, key, images_key, images, **more):
        found = [e for e in saved_entries(run, name) if e[key]["num_steps"] == a.num_steps
                 and e[key]["num_chains"] == a.num_chains
                 and e[key]["num_leapfrog"] == a.num_leapfrog and e[images_key] == images
                 and all(e[key].get(k) == v for k, v in more.items())]
        return found[-1] if found else None

    commands = [["evaluate", str(run), "--method", "ais", *settings]]
    if entry("bdmc", "bdmc_settings", "bdmc_num_simulated", bdmc_images) is None:
        commands.append(["bdmc", str(run), *settings, "--num-test", str(bdmc_images)])
    if entry("gaps", "settings", "num_test", a.num_test, local_lr=a.local_lr) is None:
        commands.append(["gaps", str(run), *settings, "--local-lr", str(a.local_lr)])
    for command in commands:  # each reads what the run folder holds of the same settings
        if cli.main(command) != 0:
            raise SystemExit(f"{' '.join(command)} failed")
    iwae = iwae_first(run, a.k, a.num_test)
    ais = [s for s in saved_ais(run) if (s["num_steps"], s["num_chains"], s["num_leapfrog"],
                                         s["log_likelihood"].shape[0]) ==
           (a.num_steps, a.num_chains, a.num_leapfrog, a.num_test)][0]

    return {"iwae": iwae, "ais": ais,
            "bdmc": entry("bdmc", "bdmc_settings", "bdmc_num_simulated", bdmc_images),
            "gaps": entry("gaps", "settings", "num_test", a.num_test, local_lr=a.local_lr),
            "bdmc_all": saved_entries(run, "bdmc"), "ais_all": saved_ais(run)}


def row(name, e, base):
    """One table row (a dict) of run ``name`` with paired differences against ``base``."""
    ais = e["ais"]["log_likelihood"].double()
    iwae = e["iwae"].log_likelihood.double()
    g, b = e["gaps"], e["bdmc"]
    out = {"run": name, "iwae": float(iwae.mean()), "iwae_se": standard_error(iwae),
           "ais": float(ais.mean()), "ais_se": standard_error(ais),
           "ais_minus_iwae": float((ais - iwae).mean()),
           "ais_minus_iwae_se": standard_error(ais - iwae),
           "ais_minutes": e["ais"]["seconds"] / 60,
           "acceptance": float(e["ais"]["acceptance"].mean()),
           "bdmc_lower": b["bdmc_lower"], "bdmc_upper": b["bdmc_upper"],
           "bdmc_width": b["bdmc_width"], "bdmc_width_se": b["bdmc_width_se"],
           "bdmc_num_simulated": b["bdmc_num_simulated"],
           "elbo": g["elbo"], "local_elbo": g["local_elbo"],
           "approximation_gap": g["approximation_gap"],
           "approximation_gap_se": g["approximation_gap_se"],
           "amortization_gap": g["amortization_gap"],
           "amortization_gap_se": g["amortization_gap_se"]}
    if base is not None:
        for key, values, base_values in (("ais", ais, base["ais"]["log_likelihood"].double()),
                                         ("iwae", iwae, base["iwae"].log_likelihood.double())):
            d = values - base_values
            out[f"{key}_vs_base"], out[f"{key}_vs_base_se"] = float(d.mean()), standard_error(d)
    return out


def markdown(rows, a, base_name):
    """The table in Markdown."""
    lines = [
        f"| run | IWAE k = {a.k} | AIS | AIS - IWAE | BDMC upper - lower (images) | ELBO | "
        "approximation gap | amortization gap | vs `" + base_name + "`: IWAE | vs `"
        + base_name + "`: AIS | AIS time |",
        "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        vs = (f"{r['iwae_vs_base']:+.3f} +- {r['iwae_vs_base_se']:.3f} | "
              f"{r['ais_vs_base']:+.3f} +- {r['ais_vs_base_se']:.3f}"
              if "ais_vs_base" in r else "- | -")
        lines.append(
            f"| `{r['run']}` | {r['iwae']:.3f} +- {r['iwae_se']:.3f} | "
            f"{r['ais']:.3f} +- {r['ais_se']:.3f} | {r['ais_minus_iwae']:+.3f} +- "
            f"{r['ais_minus_iwae_se']:.3f} | {r['bdmc_width']:.3f} +- {r['bdmc_width_se']:.3f} "
            f"({r['bdmc_num_simulated']}) | "
            f"{r['elbo']:.3f} | {r['approximation_gap']:.3f} +- {r['approximation_gap_se']:.3f}"
            f" | {r['amortization_gap']:.3f} +- {r['amortization_gap_se']:.3f} | {vs} | "
            f"{r['ais_minutes']:.1f} min |")
    return "\n".join(lines) + "\n"


def figure(names, results, rows, path):
    """Each run's estimates against compute, and the paired differences."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = len(names) + 1
    cols = 3
    fig, axes = plt.subplots((panels + cols - 1) // cols, cols,
                             figsize=(5 * cols, 3.6 * ((panels + cols - 1) // cols)),
                             squeeze=False)
    for ax, name in zip(axes.flat, names):
        e = results[name]
        plot_bound_vs_compute(e["iwae"], e["ais_all"], e["bdmc_all"], ax=ax, title=name)
        ax.legend(fontsize=6)
    ax = axes.flat[len(names)]
    others = [r for r in rows if "ais_vs_base" in r]
    y = range(len(others))
    for shift, key, label in ((-0.12, "iwae", "IWAE"), (0.12, "ais", "AIS")):
        ax.errorbar([r[f"{key}_vs_base"] for r in others], [i + shift for i in y],
                    xerr=[2 * r[f"{key}_vs_base_se"] for r in others], fmt="o", label=label,
                    capsize=3)
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_yticks(list(y), [r["run"] for r in others])
    ax.set_xlabel(f"paired difference vs {names[0]}, nats (+- 2 SE)")
    ax.legend(fontsize=7)
    for ax in list(axes.flat)[panels:]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run folders; the first is the baseline")
    parser.add_argument("--num-test", type=int, default=1000)
    parser.add_argument("--bdmc-num-test", type=int, default=0,
                        help="images simulated for BDMC (default: --num-test)")
    parser.add_argument("--local-lr", type=float, default=0.05,
                        help="learning rate of the gaps' local fits")
    parser.add_argument("--k", type=int, default=5000, help="IWAE particles")
    parser.add_argument("--num-chains", type=int, default=4)
    parser.add_argument("--num-steps", type=int, default=100)
    parser.add_argument("--num-leapfrog", type=int, default=5)
    parser.add_argument("--out", help="write OUT.md (the table) and OUT.json (the rows)")
    parser.add_argument("--figure", help="write the figure (PNG) here")
    parser.add_argument("--quiet", action="store_true")
    a = parser.parse_args(argv)
    names = [Path(r).name for r in a.runs]
    results = {name: estimates(run, a) for name, run in zip(names, a.runs)}
    rows = [row(name, results[name], None if i == 0 else results[names[0]])
            for i, name in enumerate(names)]
    md = markdown(rows, a, names[0])
    print(md)
    if a.out:
        command = "python analysis/ais_table.py " + " ".join(
            argv if argv is not None else sys.argv[1:])
        Path(a.out + ".md").write_text(md)
        Path(a.out + ".json").write_text(json.dumps(
            {"command": command, "num_test": a.num_test, "k": a.k, "num_chains": a.num_chains,
             "num_steps": a.num_steps, "num_leapfrog": a.num_leapfrog,
             "threads": torch.get_num_threads(), "rows": rows}, indent=1) + "\n")
    if a.figure:
        figure(names, results, rows, a.figure)
    return 0


if __name__ == "__main__":
    sys.exit(main())
