"""Figures: image grids of samples and reconstructions, training curves, and the
log-likelihood bound's behaviour (against k, k-hat) and model comparisons (latent-space
figures are in :mod:`pyro_vae.latent_plots`).

Every function takes ``ax=None`` (a new figure when omitted), draws, and returns the axes;
the caller decides where files go (:func:`save_figure`). The matplotlib backend is left to
the caller; the CLI uses ``Agg``.
"""

import math
from pathlib import Path

import torch
from torchvision.utils import make_grid

from .files import atomic_write
from .infer.chunks import seeded


def new_axes(ax, figsize):
    """``ax``, or the axes of a new figure of ``figsize`` when ``ax`` is ``None``."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def plot_images(images, image_shape, nrow=None, ax=None, title=None, row_labels=None):
    """Draw a grid of images.

    :param torch.Tensor images: ``(n, D)`` or ``(n, C, H, W)``, values in [0, 1].
    :param tuple image_shape: ``(C, H, W)`` with ``C*H*W == D``.
    :param int nrow: images per row (default: about ``sqrt(n)``).
    :param ax: matplotlib axes to draw on.
    :param str title: axes title.
    :param list row_labels: a label per grid row, written left of the row.
    :returns: the axes.
    :raises ValueError: if ``images`` cannot be viewed as ``(n, *image_shape)``, or if
        ``row_labels`` does not have one label per row.
    """
    images = torch.as_tensor(images).detach().float().cpu()
    n = images.shape[0]
    c, h, w = image_shape
    if images[0].numel() != c * h * w:
        raise ValueError(f"images of {images[0].numel()} values cannot be shown as {image_shape}")
    images = images.reshape(n, c, h, w).clamp(0, 1)
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / nrow)
    if row_labels is not None and len(row_labels) != rows:
        raise ValueError(f"{len(row_labels)} row labels for a grid of {rows} rows")
    grid = make_grid(images, nrow=nrow, padding=1, pad_value=0.5)
    ax = new_axes(ax, (6, 6 * grid.shape[1] / grid.shape[2]))
    ax.imshow(grid.permute(1, 2, 0).numpy() if c == 3 else grid[0].numpy(),
              cmap=None if c == 3 else "gray", vmin=0, vmax=1, interpolation="nearest")
    if row_labels is None:
        ax.set_axis_off()
    else:  # make_grid puts one pixel of padding before every row
        ax.set_xticks([])
        ax.set_yticks([1 + i * (h + 1) + (h - 1) / 2 for i in range(rows)], list(row_labels))
        ax.tick_params(left=False)
        for spine in ax.spines.values():
            spine.set_visible(False)
    if title:
        ax.set_title(title)
    return ax


def plot_samples(vae, image_shape, num_samples=36, temperatures=(0.6, 0.8, 1.0), axes=None):
    """Sample grids at several temperatures (the prior's standard deviations scaled; see
    :meth:`pyro_vae.vae.VAE.sample`), one panel each; the same noise seed per panel.

    :returns: the list of axes.
    :raises ValueError: for a non-Gaussian prior with a temperature other than 1.
    """
    temperatures = list(temperatures)
    if axes is None:
        import matplotlib.pyplot as plt

        _, axes = plt.subplots(1, len(temperatures), figsize=(4.5 * len(temperatures), 4.9),
                               squeeze=False)
        axes = list(axes[0])
    device = next(vae.parameters()).device
    for ax, t in zip(axes, temperatures):
        with torch.no_grad(), seeded(0, device):  # the caller's RNG is left as it was
            images = vae.sample(num_samples, temperature=t)
        plot_images(images, image_shape, ax=ax, title=f"temperature {t}")
    return axes


def plot_layer_samples(vae, image_shape, num_rows=8, num_cols=8, axes=None):
    """What each latent layer of a hierarchical VAE encodes: one panel per layer l = L..2;
    in each row z_l (and the layers above it) is drawn once from the model and kept fixed,
    and across the row the layers below, z_{l-1} ... z_1, are drawn afresh from the prior
    conditionals. Images are the likelihood's means. When the likelihood reads every layer
    (``likelihood_join``), only the top layer's panel can be drawn.

    :param vae: a :class:`~pyro_vae.hierarchy.HierarchicalVAE` with L >= 2 layers.
    :param tuple image_shape: ``(C, H, W)``.
    :param axes: one matplotlib axis per panel (default: a new figure).
    :returns: the list of axes.
    :raises ValueError: for a VAE with fewer than two latent layers.
    """
    num_layers = getattr(vae, "num_layers", 1)
    if num_layers < 2:
        raise ValueError("the layer figure needs a hierarchical VAE with at least two latent "
                         "layers (model.latent_dim = [D1, D2, ...])")
    layers = range(num_layers, 1, -1)
    if getattr(vae, "likelihood_join", None) is not None:
        layers = [num_layers]
    if axes is None:
        import matplotlib.pyplot as plt

        _, axes = plt.subplots(1, len(layers), figsize=(5 * len(layers), 5.4), squeeze=False)
        axes = list(axes[0])
    with torch.no_grad():
        for ax, layer in zip(axes, layers):
            top = vae.sample_layer(num_rows, layer).repeat_interleave(num_cols, dim=0)
            images = vae.sample(num_rows * num_cols, top=top, layer=layer)
            below = f"z{layer - 1}" if layer == 2 else f"z{layer - 1}..z1"
            plot_images(images, image_shape, nrow=num_cols, ax=ax,
                        title=f"rows: fixed z{layer}" + (" and above" if layer < num_layers else "")
                        + f"; across: {below} resampled")
    return axes


def plot_code_traversal(vae, x, image_shape, ax=None):
    """One datapoint's most probable categorical code, decoded with one variable changed
    per row (its K classes left to right; see :func:`pyro_vae.categorical.code_traversal`),
    with the datapoint itself at the start of each row.

    :param vae: a VAE with a categorical guide.
    :param torch.Tensor x: one datapoint, ``(1, *event_shape)``.
    :returns: the axes.
    :raises ValueError: if the guide is not categorical.
    """
    from .categorical import code_traversal

    with torch.no_grad():
        images = code_traversal(vae, x)  # (N, K, *event)
    n, k = images.shape[:2]
    rows = torch.cat([x.reshape(1, 1, -1).expand(n, 1, -1).to(images.device),
                      images.reshape(n, k, -1)], 1)
    return plot_images(rows.reshape(n * (k + 1), -1), image_shape, nrow=k + 1, ax=ax,
                       title=f"input, then variable 1..{n} (rows) set to class 1..{k}")


def plot_code_usage(usage, ax=None, title=None):
    """Bars of how often each codebook entry is used, most used first, with the
    perplexity and the dead codes in the title.

    :param dict usage: what :meth:`pyro_vae.vq.VectorQuantizedGuide.code_usage` returns
        (``counts``, ``perplexity``, ``dead_codes``, ``num_codes``), e.g. from ``eval.json``.
    :returns: the axes.
    """
    counts = torch.tensor(usage["counts"], dtype=torch.float64)
    freq = (counts / counts.sum()).sort(descending=True).values
    ax = new_axes(ax, (6, 3))
    ax.bar(range(len(freq)), freq.numpy(), width=1.0, color="tab:blue")
    ax.axhline(1 / len(freq), color="grey", lw=0.8, ls="--", label="uniform use")
    ax.set_xlabel("codebook entries, most used first")
    ax.set_ylabel("frequency on the test set")
    ax.legend(frameon=False)
    ax.set_title(title or f"codebook usage: perplexity {usage['perplexity']:.1f} of "
                          f"{usage['num_codes']}, {usage['dead_codes']} dead codes")
    return ax


def plot_reconstructions(originals, reconstructions, image_shape, ax=None, title=None):
    """Draw originals and their reconstructions in alternating rows.

    :param torch.Tensor originals: ``(n, D)``.
    :param torch.Tensor reconstructions: ``(n, D)``.
    :param tuple image_shape: ``(C, H, W)``.
    :returns: the axes.
    """
    n = originals.shape[0]
    ncol = min(n, 10)
    rows = []
    for start in range(0, n, ncol):
        rows += [originals[start:start + ncol], reconstructions[start:start + ncol]]
    return plot_images(torch.cat([r.detach().cpu().reshape(r.shape[0], -1) for r in rows]),
                       image_shape, nrow=ncol, ax=ax,
                       title=title or "odd rows: test images; even rows: reconstructions")


def plot_curves(metrics, ax=None, keys=("train_elbo", "validation_elbo")):
    """Draw per-epoch curves from a run's metrics.

    :param metrics: a list of dicts (the lines of ``metrics.jsonl``), each with ``epoch``.
    :param keys: which metrics to draw (ELBOs in nats per datapoint).
    :returns: the axes.
    """
    ax = new_axes(ax, (6, 4))
    for key in keys:
        points = [(m["epoch"], m[key]) for m in metrics if m.get(key) is not None]
        if points:
            ax.plot(*zip(*points), marker="." if len(points) < 30 else None,
                    label=key.replace("_", " "))
    warm = [m["epoch"] for m in metrics if m.get("kl_weight", 1.0) < 1.0]
    if warm:  # the training objective weighs the KL term less there: not the ELBO
        ax.axvspan(0, max(warm) + 0.5, color="0.85", zorder=0,
                   label="KL warm-up (train curve: weighted KL)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("ELBO (nats per datapoint)")
    ax.grid(alpha=0.3)
    ax.legend()
    return ax


def _as_list(results, labels):
    results = list(results) if isinstance(results, (list, tuple)) else [results]
    labels = list(labels) if labels is not None else [f"model {i + 1}" for i in range(len(results))]
    if len(labels) != len(results):
        raise ValueError(f"{len(results)} results but {len(labels)} labels")
    return results, labels


def plot_bound_vs_k(results, labels=None, ax=None):
    """The importance-weighted bound against the number of particles k (log axis), mean
    over test points with +- 2 standard errors, for one or several
    :class:`~pyro_vae.infer.LogLikelihoodResult` (their ``k_sweep``).

    :returns: the axes.
    :raises ValueError: if the labels do not match the results.
    """
    results, labels = _as_list(results, labels)
    ax = new_axes(ax, (6, 4))
    for result, label in zip(results, labels):
        ks = sorted(int(k) for k in result.k_sweep)
        means = [float(result.k_sweep[k].double().mean()) for k in ks]
        ses = [float(result.k_sweep[k].double().std() / math.sqrt(result.k_sweep[k].numel()))
               for k in ks]
        ax.errorbar(ks, means, yerr=[2 * se for se in ses], marker="o", capsize=3, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("particles k")
    ax.set_ylabel("IWAE bound on log p(x) (nats)")
    ax.grid(alpha=0.3)
    ax.legend()
    return ax


def plot_khat(results, labels=None, ax=None):
    """Distribution of the per-datapoint Pareto k-hat of the importance weights, with the
    0.5 and 0.7 thresholds (Vehtari et al., arXiv:1507.02646).

    :returns: the axes.
    """
    results, labels = _as_list(results, labels)
    ax = new_axes(ax, (6, 3.5))
    unfitted = []
    for result, label in zip(results, labels):
        khat = result.khat[~torch.isnan(result.khat)].cpu().numpy()
        if not len(khat):
            unfitted.append(label)
            continue
        ax.hist(khat, bins=40, alpha=0.6, label=f"{label} ({100 * (khat > 0.7).mean():.0f}% > 0.7)")
    if unfitted:
        ax.text(0.5, 0.5, f"k-hat not fitted for {', '.join(unfitted)}\n(fewer than 25 "
                "particles, or exact weights)", transform=ax.transAxes, ha="center")
    for edge in (0.5, 0.7):
        ax.axvline(edge, color="k", lw=0.8, ls="--")
    ax.set_xlabel("Pareto k-hat per test point")
    ax.set_ylabel("test points")
    if len(unfitted) < len(results):
        ax.legend()
    return ax


def plot_comparison(results, labels, baseline=0, ax=None):
    """Paired differences in test log-likelihood against ``results[baseline]``, with error
    bars of 2 paired standard errors (see :func:`pyro_vae.infer.compare`).

    :returns: the axes.
    :raises ValueError: for mismatched labels or results on different test sets.
    """
    from .infer import compare

    results, labels = _as_list(results, labels)
    ax = new_axes(ax, (6, 0.6 * len(results) + 1.5))
    rows = [(label, compare(r, results[baseline], label, labels[baseline]))
            for i, (r, label) in enumerate(zip(results, labels)) if i != baseline]
    y = range(len(rows))
    ax.errorbar([c.difference for _, c in rows], list(y), xerr=[2 * c.se for _, c in rows],
                fmt="o", capsize=4)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(list(y), [label for label, _ in rows])
    ax.set_xlabel(f"log p(x) minus {labels[baseline]}'s, nats per test point (+- 2 SE, paired)")
    ax.grid(alpha=0.3, axis="x")
    return ax


def plot_kl_curves(metrics, ax=None):
    """Per-epoch validation KL term of each latent site (``validation_kl/<site>`` in
    ``metrics.jsonl``), with the reconstruction term on a second axis: where a layer's KL
    falls to zero, that layer has collapsed.

    :returns: the axes (the KL one).
    :raises ValueError: if the metrics record no KL terms.
    """
    sites = sorted({k[len("validation_kl/"):] for m in metrics for k in m
                    if k.startswith("validation_kl/")})
    if not sites:
        raise ValueError("these metrics record no validation_kl/<site> terms (runs made "
                         "before they were recorded)")
    ax = new_axes(ax, (6, 4))
    for site in sites:
        points = [(m["epoch"], m[f"validation_kl/{site}"]) for m in metrics
                  if f"validation_kl/{site}" in m]
        ax.plot(*zip(*points), label=f"KL {site}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation KL term (nats per datapoint)")
    ax.grid(alpha=0.3)
    recon = [(m["epoch"], m["validation_reconstruction"]) for m in metrics
             if "validation_reconstruction" in m]
    if recon:
        twin = ax.twinx()
        twin.plot(*zip(*recon), color="k", ls="--", label="reconstruction")
        twin.set_ylabel("validation E[log p(x|z)] (nats)")
        twin.legend(loc="lower right")
    ax.legend(loc="upper left")
    return ax


def save_figure(ax, path, dpi=120):
    """Save the figure holding ``ax`` to ``path`` atomically (see
    :func:`pyro_vae.files.atomic_write`), then close it. The format follows the suffix
    (``.png``, ``.pdf``, ``.svg``, ...).

    :returns: the path.
    :raises PyroVAEError: if the file cannot be written (the old one is kept).
    """
    import matplotlib.pyplot as plt

    path = Path(path)
    fig = ax.figure
    fig.tight_layout()
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi,
                                                   format=path.suffix.lstrip(".") or "png"),
                     binary=None)
    finally:
        plt.close(fig)
    return path


def plot_mutual_information(matrix, factor_names, ax=None, title=None, vmax=None):
    """Heat map of the mutual information between each latent dimension (rows) and each
    known factor (columns), nats, with the values written in the cells (see
    :func:`pyro_vae.disentanglement.mutual_information_matrix`).

    :param matrix: ``(D, F)`` nats.
    :param factor_names: the F factors' names.
    :param float vmax: the top of the colour scale (default: the matrix's largest value);
        give several panels the same one to compare them.
    :returns: the axes.
    :raises ValueError: if the matrix is not ``(D, F)`` for the F names given.
    """
    import numpy as np

    matrix = np.asarray(matrix, dtype=float)
    if matrix.ndim != 2 or matrix.shape[1] != len(factor_names):
        raise ValueError(f"expected a (D, {len(factor_names)}) matrix for factors "
                         f"{list(factor_names)}, got shape {matrix.shape}")
    d, f = matrix.shape
    ax = new_axes(ax, (1.2 * f + 2, 0.35 * d + 1.5))
    vmax = float(matrix.max()) if vmax is None else float(vmax)
    image = ax.imshow(matrix, cmap="viridis", vmin=0, vmax=vmax, aspect="auto")
    ax.set_xticks(range(f), list(factor_names), rotation=30, ha="right")
    ax.set_yticks(range(d), [f"z{i}" for i in range(d)])
    for i in range(d):
        for j in range(f):
            ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if matrix[i, j] < 0.6 * max(vmax, 1e-12) else "black")
    ax.figure.colorbar(image, ax=ax, label="mutual information (nats)")
    ax.set_title(title or "latent dimension x factor")
    return ax
