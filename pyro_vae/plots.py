"""Figures: image grids of samples and reconstructions, and training curves.

Every function takes ``ax=None`` (a new figure when omitted), draws, and returns the axes;
the caller decides where files go (:func:`save_figure`). The matplotlib backend is left to
the caller; the CLI uses ``Agg``.
"""

import math
import os
import tempfile
from pathlib import Path

import torch
from torchvision.utils import make_grid


def _axes(ax, figsize):
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def plot_images(images, image_shape, nrow=None, ax=None, title=None):
    """Draw a grid of images.

    :param torch.Tensor images: ``(n, D)`` or ``(n, C, H, W)``, values in [0, 1].
    :param tuple image_shape: ``(C, H, W)`` with ``C*H*W == D``.
    :param int nrow: images per row (default: about ``sqrt(n)``).
    :param ax: matplotlib axes to draw on.
    :param str title: axes title.
    :returns: the axes.
    :raises ValueError: if ``images`` cannot be viewed as ``(n, *image_shape)``.
    """
    images = torch.as_tensor(images).detach().float().cpu()
    n = images.shape[0]
    c, h, w = image_shape
    if images[0].numel() != c * h * w:
        raise ValueError(f"images of {images[0].numel()} values cannot be shown as {image_shape}")
    images = images.reshape(n, c, h, w).clamp(0, 1)
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    grid = make_grid(images, nrow=nrow, padding=1, pad_value=0.5)
    ax = _axes(ax, (6, 6 * grid.shape[1] / grid.shape[2]))
    ax.imshow(grid.permute(1, 2, 0).numpy() if c == 3 else grid[0].numpy(),
              cmap=None if c == 3 else "gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax


def plot_layer_samples(vae, image_shape, num_rows=8, num_cols=8, axes=None):
    """What each latent layer of a hierarchical VAE encodes: one panel per layer l = L..2;
    in each row z_l (and the layers above it) is drawn once from the model and kept fixed,
    and across the row the layers below, z_{l-1} ... z_1, are drawn afresh from the prior
    conditionals. Images are the likelihood's means.

    :param vae: a :class:`~pyro_vae.hierarchy.HierarchicalVAE` with L >= 2 layers.
    :param tuple image_shape: ``(C, H, W)``.
    :param axes: L - 1 matplotlib axes (default: a new figure).
    :returns: the list of axes.
    :raises ValueError: for a VAE with fewer than two latent layers.
    """
    num_layers = getattr(vae, "num_layers", 1)
    if num_layers < 2:
        raise ValueError("the layer figure needs a hierarchical VAE with at least two latent "
                         "layers (model.latent_dim = [D1, D2, ...])")
    if axes is None:
        import matplotlib.pyplot as plt

        _, axes = plt.subplots(1, num_layers - 1, figsize=(5 * (num_layers - 1), 5.4),
                               squeeze=False)
        axes = list(axes[0])
    with torch.no_grad():
        for ax, layer in zip(axes, range(num_layers, 1, -1)):
            top = vae.sample_layer(num_rows, layer).repeat_interleave(num_cols, dim=0)
            images = vae.sample(num_rows * num_cols, top=top, layer=layer)
            below = f"z{layer - 1}" if layer == 2 else f"z{layer - 1}..z1"
            plot_images(images, image_shape, nrow=num_cols, ax=ax,
                        title=f"rows: fixed z{layer}" + (" and above" if layer < num_layers else "")
                        + f"; across: {below} resampled")
    return axes


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
    ax = _axes(ax, (6, 4))
    for key in keys:
        points = [(m["epoch"], m[key]) for m in metrics if m.get(key) is not None]
        if points:
            ax.plot(*zip(*points), marker="." if len(points) < 30 else None,
                    label=key.replace("_", " "))
    ax.set_xlabel("epoch")
    ax.set_ylabel("ELBO (nats per datapoint)")
    ax.grid(alpha=0.3)
    ax.legend()
    return ax


def save_figure(ax, path, dpi=120):
    """Save the figure holding ``ax`` to ``path`` atomically, then close it.

    :returns: the path.
    """
    import matplotlib.pyplot as plt

    path = Path(path)
    fig = ax.figure
    fig.tight_layout()
    fd, tmp = tempfile.mkstemp(prefix=path.stem + ".", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=dpi)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
        plt.close(fig)
    return path
