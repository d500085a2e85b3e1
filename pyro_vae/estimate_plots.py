"""The estimates of log p(x) a run folder keeps, and the figure of each against its compute.

A run folder can hold the IWAE estimate (``loglik-k<K>-seed<S>.pt``, with its k-sweep),
AIS estimates (``ais-*.pt``, one per settings, from ``pyro-vae evaluate --method ais``), BDMC
bounds (``bdmc.json``) and the inference gaps (``gaps.json``). :func:`plot_bound_vs_compute`
puts the IWAE bound against k, AIS against its number of steps and BDMC's two bounds on one
axis of compute: evaluations of the model's log density per image (IWAE: k; AIS: chains x
steps x (leapfrog + 1), each a gradient evaluation).
"""

import json
from pathlib import Path

from .checkpoint import safe_load
from .errors import CheckpointError
from .plots import new_axes


def saved_ais(run_dir):
    """The AIS results saved in ``run_dir`` (``ais-*.pt``), as dicts of tensors and plain
    data, sorted by number of steps; unreadable files are left out."""
    found = []
    for path in sorted(Path(run_dir).glob("ais-*.pt")):
        try:
            saved = safe_load(path)
        except CheckpointError:
            continue
        if saved.get("format") == "pyro_vae.ais":
            found.append(saved)
    return sorted(found, key=lambda s: (s["num_chains"], s["num_steps"]))


def saved_entries(run_dir, name):
    """The entries of ``run_dir/<name>.json`` (``bdmc`` or ``gaps``), ``[]`` when absent or
    unreadable."""
    path = Path(run_dir) / f"{name}.json"
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))["entries"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return entries if isinstance(entries, list) else []


def ais_evaluations(num_chains, num_steps, num_leapfrog):
    """Gradient evaluations of the log density per image of one AIS run (measured chains:
    ``num_steps - 1`` transitions of ``num_leapfrog + 1`` evaluations, plus the start)."""
    return num_chains * (1 + (num_steps - 1) * (num_leapfrog + 1))


def plot_bound_vs_compute(iwae=None, ais=(), bdmc=(), ax=None, title=None):
    """The estimates of log p(x) against evaluations of the log density per image.

    :param iwae: a :class:`~pyro_vae.infer.LogLikelihoodResult` (its k-sweep), or ``None``.
    :param ais: saved AIS results (:func:`saved_ais`); one line per ``(num_chains,
        num_leapfrog, number of images)``, a point per number of steps.
    :param bdmc: ``bdmc.json`` entries (:func:`saved_entries`): the lower and upper bounds
        on simulated data, a point per number of steps.
    :returns: the matplotlib axes. Means in nats; the images behind each line are in the
        legend (AIS and BDMC run on subsets, so their levels differ from IWAE's).
    """
    ax = new_axes(ax, (6.4, 4.2))
    if iwae is not None:
        ks = sorted(iwae.k_sweep)
        ax.plot(ks, [float(iwae.k_sweep[k].double().mean()) for k in ks], "o-",
                label=f"IWAE, k = 1..{iwae.num_particles} ({iwae.num_datapoints} images)")
    groups = {}
    for s in ais:
        key = (s["num_chains"], s["num_leapfrog"], int(s["log_likelihood"].shape[0]))
        groups.setdefault(key, []).append(s)
    for (chains, leapfrog, n), runs in groups.items():
        ax.plot([ais_evaluations(chains, r["num_steps"], leapfrog) for r in runs],
                [float(r["log_likelihood"].double().mean()) for r in runs], "s-",
                label=f"AIS, {chains} chains, {leapfrog} leapfrog ({n} images)")
    entries = sorted(bdmc, key=lambda e: e["bdmc_settings"]["num_steps"])
    if entries:
        x = [ais_evaluations(e["bdmc_settings"]["num_chains"], e["bdmc_settings"]["num_steps"],
                             e["bdmc_settings"]["num_leapfrog"]) for e in entries]
        n = entries[-1]["bdmc_num_simulated"]
        ax.plot(x, [e["bdmc_upper"] for e in entries], "v--", color="tab:red",
                label=f"BDMC upper bound ({n} simulated images)")
        ax.plot(x, [e["bdmc_lower"] for e in entries], "^--", color="tab:green",
                label="BDMC lower bound (same images)")
    ax.set_xscale("log")
    ax.set_xlabel("log-density evaluations per image")
    ax.set_ylabel("mean estimate of log p(x) (nats)")
    ax.set_title(title or "estimates of log p(x) against compute")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    return ax
