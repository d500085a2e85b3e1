"""Reports: one self-contained HTML page and a Markdown summary for runs or a comparison.

``build_report(runs, out)`` reads what ``pyro-vae train`` / ``pyro-vae evaluate`` left in
each run folder (``config.json``, ``metrics.jsonl``, ``eval.json``, the saved per-image
estimates ``loglik-k<K>-seed<S>.pt`` and the checkpoint, for samples) and writes:

- ``out/report.html``: every figure embedded as a PNG data URI, so the page is one file;
  a small script marks ``<body data-figures="loaded/total">`` once the browser has
  decoded them (the test renders the page in headless Chromium and reads it);
- ``out/report.md`` and ``out/figures/*.png``: the same content for a notebook or a repo.

Per run: the recipe, training curves, samples from the prior, the test log-likelihood
with its standard error, the bound against k, the k-hat summary and histogram, active
units and KL per latent site; where the run folder holds them, the AIS estimates, BDMC
bounds and inference gaps, and IWAE, AIS and BDMC against compute
(:mod:`pyro_vae.estimate_plots`). For several runs: a comparison table, the paired
differences against the first run (when they were evaluated on the same test images) and
the bounds against k together.
"""

import base64
import html
import json
import os
from pathlib import Path

from .errors import ConfigError
from .files import write_text
from .infer.diagnostics import standard_error
from .tables import fmt

_CHECK_SCRIPT = """<script>
window.addEventListener('load', function () {
  var imgs = document.images, ok = 0;
  for (var i = 0; i < imgs.length; i++) { if (imgs[i].complete && imgs[i].naturalWidth > 0) ok++; }
  document.body.setAttribute('data-figures', ok + '/' + imgs.length);
});
</script>"""


def _load(run, k, seed):
    from .estimate_files import load_result
    from .runs import read_eval_json, read_metrics

    run = Path(run)
    eval_path = run / "eval.json"
    if not (run / "config.json").is_file() or not eval_path.is_file():
        raise ConfigError(f"{run}: no config.json or eval.json; give a run folder made by "
                          "pyro-vae train (and evaluated)")
    summary = read_eval_json(run)
    if k is None and not isinstance(summary.get("k"), int):
        raise ConfigError(f"{eval_path} records no evaluation (no integer 'k'); run  pyro-vae "
                          f"evaluate {run}  first, or give --k")
    try:
        config = json.loads((run / "config.json").read_text(encoding="utf-8"))
        config["model"], config["data"]  # noqa: B018 - the tables the report reads
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"{run / 'config.json'} is damaged ({type(e).__name__}: {e}); "
                          "restore it from the checkpoint's config or leave the run out") from None
    k = int(summary.get("k", 0)) if k is None else int(k)
    result = load_result(run, k, seed)
    if result is None:
        raise ConfigError(f"{run}: no saved estimates for k = {k}, seed {seed}; run "
                          f"pyro-vae evaluate {run} --k {k} first")
    from .estimate_plots import saved_ais, saved_entries

    return {"name": run.name, "dir": run, "config": config,
            "metrics": read_metrics(run), "summary": summary, "result": result,
            "ais": saved_ais(run), "bdmc": saved_entries(run, "bdmc"),
            "gaps": saved_entries(run, "gaps")}


def unique_names(run_dirs):
    """Names for runs in a report, one per run and all different: the folder's name, with
    as many parent folders as needed to tell runs of the same name apart (``a-digits``,
    ``b-digits``), and a number for a folder given twice; safe as file names."""
    paths = [Path(os.path.abspath(r)) for r in run_dirs]
    names = []
    for i, p in enumerate(paths):
        depth = 1
        while depth < len(p.parts) and any(
                q.parts[-depth:] == p.parts[-depth:] for j, q in enumerate(paths)
                if j != i and q != p):
            depth += 1
        names.append("-".join(p.parts[-depth:]).strip("/") or "run")
    seen = {}
    for i, name in enumerate(names):
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            names[i] = f"{name}-{seen[name]}"
    return names


def _figures(runs, fig_dir, device):
    """Draw every figure; returns ``{key: path}``."""
    import torch

    from . import plots
    from .estimate_plots import plot_bound_vs_compute
    from .infer import seeded
    from .nets import event_size
    from .runs import load_run

    out = {}
    for r in runs:
        name = r["name"]
        if r["metrics"]:
            ax = plots.plot_curves(r["metrics"])
            ax.set_title(f"{name}: ELBO per epoch")
            out[f"{name}/curves"] = plots.save_figure(ax, fig_dir / f"{name}-curves.png")
            if any("discriminator_loss" in m for m in r["metrics"]):
                keys = [k for k in ("discriminator_loss", "discriminator_accuracy",
                                    "generator_adversarial") if k in r["metrics"][-1]]
                ax = plots.plot_curves(r["metrics"], keys=keys)
                ax.set_title(f"{name}: both players per epoch")
                ax.set_ylabel("loss per image (nats); accuracy in [0, 1]")
                out[f"{name}/players"] = plots.save_figure(ax, fig_dir / f"{name}-players.png")
            if any("validation_reconstruction" in m for m in r["metrics"]):
                ax = plots.plot_kl_curves(r["metrics"])
                ax.set_title(f"{name}: KL per latent layer and reconstruction")
                out[f"{name}/kl"] = plots.save_figure(ax, fig_dir / f"{name}-kl.png")
        vae, _, state = load_run(r["dir"], device)
        # a checkpoint without an image shape: one row of the model's datapoint
        image_shape = tuple(state.get("image_shape") or (1, 1, event_size(vae.event_shape)))
        with torch.no_grad(), seeded(0, device):
            images = vae.sample(64)
        ax = plots.plot_images(images, image_shape, title=f"{name}: samples (pixel means)")
        out[f"{name}/samples"] = plots.save_figure(ax, fig_dir / f"{name}-samples.png")
        if "codebook" in r["summary"]:
            ax = plots.plot_code_usage(r["summary"]["codebook"])
            out[f"{name}/codebook"] = plots.save_figure(ax, fig_dir / f"{name}-codebook.png")
        if "disentanglement" in r["summary"]:
            d = r["summary"]["disentanglement"]
            ax = plots.plot_mutual_information(d["mutual_information"], d["factor_names"])
            out[f"{name}/factors"] = plots.save_figure(ax, fig_dir / f"{name}-factors.png")
        ax = plots.plot_bound_vs_k(r["result"], [name])
        out[f"{name}/bound"] = plots.save_figure(ax, fig_dir / f"{name}-bound-vs-k.png")
        if r["ais"] or r["bdmc"]:
            ax = plot_bound_vs_compute(r["result"], r["ais"], r["bdmc"],
                                       title=f"{name}: estimates of log p(x) against compute")
            out[f"{name}/compute"] = plots.save_figure(ax, fig_dir / f"{name}-compute.png")
        if not bool(torch.isnan(r["result"].khat).all()):  # not fitted below k = 25
            ax = plots.plot_khat(r["result"], [name])
            out[f"{name}/khat"] = plots.save_figure(ax, fig_dir / f"{name}-khat.png")
    if len(runs) > 1:
        results, names = [r["result"] for r in runs], [r["name"] for r in runs]
        ax = plots.plot_bound_vs_k(results, names)
        out["all/bound"] = plots.save_figure(ax, fig_dir / "all-bound-vs-k.png")
        if len({res.fingerprint for res in results}) == 1:
            ax = plots.plot_comparison(results, names)
            out["all/comparison"] = plots.save_figure(ax, fig_dir / "all-comparison.png")
    return out


def _run_rows(r):
    s, m = r["summary"], r["config"]["model"]
    rows = [("recipe", f"{r['config']['name']}: prior {m['prior']}, guide {m['guide']}, "
                       f"likelihood {m['likelihood']}, latent {m['latent_dim']}, hidden {m['hidden']}"),
            ("data", f"{r['config']['data']['name']} ({r['config']['data']['binarization']} "
                     f"binarization), {s.get('num_test', '?')} test images"),
            ("training", f"{s.get('epochs', '?')} epochs, {s.get('steps', '?')} steps"
                         + (f", stopped by {s['stopped']}" if s.get("stopped") not in
                            (None, "epochs") else "")),
            (f"log p(x), IWAE k={r['result'].num_particles}",
             f"{fmt(r['result'].mean)} +- {fmt(r['result'].se)} nats"),
            ("ELBO", f"{fmt(float(r['result'].elbo.double().mean()))} nats"),
            ("bits/dim", fmt(r["result"].bits_per_dim, 4)),
            ("k-hat > 0.7", (r["result"].khat_note or "not fitted")
             if r["result"].khat_above_07 is None else
             f"{100 * r['result'].khat_above_07:.1f}% of test points")]
    for a in r.get("ais", []):
        ll = a["log_likelihood"].double()
        rows.append((f"log p(x), AIS {a['num_steps']} steps x {a['num_chains']} chains",
                     f"{fmt(float(ll.mean()))} +- {fmt(standard_error(ll))} nats on the first "
                     f"{ll.shape[0]} test images"))
    for e in r.get("bdmc", []):
        rows.append((f"BDMC, {e['bdmc_settings']['num_steps']} steps",
                     f"lower {fmt(e['bdmc_lower'])}, upper {fmt(e['bdmc_upper'])}, gap "
                     f"{fmt(e['bdmc_width'])} +- {fmt(e['bdmc_width_se'])} nats on "
                     f"{e['bdmc_num_simulated']} simulated images"))
    for g in r.get("gaps", []):
        rows.append((f"inference gaps ({g['method'].upper()})",
                     f"approximation {fmt(g['approximation_gap'])} +- "
                     f"{fmt(g['approximation_gap_se'])}, amortization "
                     f"{fmt(g['amortization_gap'])} +- {fmt(g['amortization_gap_se'])} nats "
                     f"on {g['num_test']} test images"))
    if "codebook" in s:
        c = s["codebook"]
        rows.append(("codebook", f"perplexity {fmt(c['perplexity'])} of {c['num_codes']} entries, "
                                 f"{c['dead_codes']} dead codes"))
    if "mig" in s:
        dci = s["dci"]
        rows.append(("disentanglement", f"MIG {fmt(s['mig'])}, DCI disentanglement "
                                        f"{fmt(dci['disentanglement'])}, completeness "
                                        f"{fmt(dci['completeness'])}, informativeness "
                                        f"{fmt(dci['informativeness'])}"))
    for site, n in s.get("active_units", {}).items():
        rows.append((f"active units {site}", f"{n} of {s['latent_dims'][site]}, KL "
                                             f"{fmt(s['kl'][site])} nats"))
    return rows


def build_report(run_dirs, out_dir, k=None, seed=0, device="cpu"):
    """Write ``report.html``, ``report.md`` and ``figures/`` into ``out_dir``.

    :param run_dirs: one or more run folders (the first is the baseline of a comparison).
    :param k: which saved estimates to use (default: each run's ``eval.json`` k).
    :returns: ``(html_path, markdown_path)``.
    :raises ConfigError: for a folder that is not an evaluated run.
    """
    from .infer import compare

    runs = [_load(run, k, seed) for run in run_dirs]
    for r, name in zip(runs, unique_names(run_dirs)):
        r["name"] = name
    out = Path(out_dir)
    fig_dir = out / "figures"
    try:
        fig_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create the report folder {fig_dir} ({e.strerror}); choose "
                          "another -o") from None
    figures = _figures(runs, fig_dir, device)
    title = "pyro_vae report: " + ", ".join(r["name"] for r in runs)
    md = [f"# {title}", ""]
    body = [f"<h1>{html.escape(title)}</h1>"]

    def figure(key, caption):
        path = figures.get(key)
        if path is None:
            return
        data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
        body.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}">'
                    f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        md.append(f"![{caption}](figures/{Path(path).name})")
        md.append("")

    def table(rows, header=None):
        body.append("<table>" + ("" if header is None else "<tr>" + "".join(
            f"<th>{html.escape(h)}</th>" for h in header) + "</tr>") + "".join(
            "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
            for row in rows) + "</table>")
        head = header or ["", ""]
        md.extend(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)])
        md.extend("| " + " | ".join(str(c) for c in row) + " |" for row in rows)
        md.append("")

    if len(runs) > 1:
        body.append("<h2>Comparison</h2>")
        md += ["## Comparison", ""]
        rows = []
        for r in runs:
            diff = "-"
            if r is not runs[0] and r["result"].fingerprint == runs[0]["result"].fingerprint:
                c = compare(r["result"], runs[0]["result"], r["name"], runs[0]["name"])
                diff = f"{c.difference:+.3f} +- {c.se:.3f}"
            rows.append((r["name"], f"{fmt(r['result'].mean)} +- {fmt(r['result'].se)}",
                         fmt(float(r["result"].elbo.double().mean())), diff))
        table(rows, ["run", "log p(x) (nats)", "ELBO", f"paired difference vs {runs[0]['name']}"])
        figure("all/comparison", "paired differences in test log-likelihood (+- 2 SE)")
        figure("all/bound", "IWAE bound against k")
    for r in runs:
        body.append(f"<h2>{html.escape(r['name'])}</h2>")
        md += [f"## {r['name']}", ""]
        table(_run_rows(r))
        figure(f"{r['name']}/curves", f"{r['name']}: training curves")
        figure(f"{r['name']}/kl", f"{r['name']}: KL per latent layer and reconstruction")
        figure(f"{r['name']}/samples", f"{r['name']}: samples from the prior")
        figure(f"{r['name']}/players", f"{r['name']}: discriminator and generator per epoch")
        figure(f"{r['name']}/codebook", f"{r['name']}: codebook usage on the test set")
        figure(f"{r['name']}/factors", f"{r['name']}: mutual information of latent dimensions "
                                       "and known factors")
        figure(f"{r['name']}/bound", f"{r['name']}: IWAE bound against k")
        figure(f"{r['name']}/khat", f"{r['name']}: Pareto k-hat of the importance weights")
        figure(f"{r['name']}/compute", f"{r['name']}: IWAE, AIS and BDMC against compute")
    style = ("<style>body{font-family:sans-serif;max-width:980px;margin:auto}"
             "img{max-width:100%}td,th{border-bottom:1px solid #ddd;padding:3px 8px;text-align:left}"
             "table{border-collapse:collapse;margin:8px 0}</style>")
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title>{style}</head><body>" + "\n".join(body) + _CHECK_SCRIPT + "</body></html>")
    html_path, md_path = out / "report.html", out / "report.md"
    write_text(html_path, page)
    write_text(md_path, "\n".join(md) + "\n")
    return html_path, md_path
