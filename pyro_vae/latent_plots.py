"""Figures of the latent space: traversals, interpolations and 2-D embeddings of the
latent point estimates, and KL per latent dimension.

Every function takes ``ax=None`` (a new figure when omitted), draws, and returns the axes.
"""

import torch

from .plots import new_axes, plot_images


def latent_point(vae, x):
    """The point estimate of the latent next to the data for a batch ``x``: the guide's
    mean of ``z`` (flat VAE) or of ``z1`` (hierarchical, given the point estimates above
    it), shape ``(B, D)``."""
    from .vae import point_estimate

    if hasattr(vae, "encode"):
        return vae.encode(x)["z1"]
    return point_estimate(vae.posterior(x))


def decode_mean(vae, layers):
    """The likelihood's mean given latent values ``layers = [z1, ..., zL]`` (a flat VAE:
    ``[z]``), each ``(n, D_l)``: only ``z1`` is read unless the likelihood reads every layer
    (``likelihood_join``, the two-level HVAE of Tomczak & Welling 2018, arXiv:1705.07120)."""
    if getattr(vae, "likelihood_join", None) is None:
        return vae.likelihood(layers[0]).mean
    return vae.decode(layers).mean


def layer_points(vae, x):
    """The point estimates of every latent layer for a batch ``x``, ``[z1, ..., zL]`` (a
    flat VAE: ``[z]``), each ``(B, D_l)``."""
    if hasattr(vae, "encode"):
        values = vae.encode(x)
        return [values[site] for site in vae.sites]
    return [latent_point(vae, x)]


def plot_traversal(vae, x, image_shape, dims=None, steps=9, span=3.0, ax=None, row_labels=None):
    """Latent traversals: from the point estimate of one input, each row sets one latent
    dimension to values evenly spaced in ``[-span, span]`` (prior standard deviations for
    a standard-normal prior) and decodes (the likelihood's mean); in a hierarchy the
    latent next to the data, z1, is traversed, the layers above kept at their estimates.

    :param torch.Tensor x: one datapoint, ``(D_x,)`` or ``(1, D_x)``.
    :param dims: latent dimensions to traverse (default: the first 8).
    :param list row_labels: a label per traversed dimension, left of its row.
    :returns: the axes.
    """
    x = x.reshape(1, -1) if x.dim() == 1 else x[:1]
    with torch.no_grad():
        layers = layer_points(vae, x)
        z = layers[0][0]
        dims = list(range(min(8, z.shape[-1]))) if dims is None else list(dims)
        values = torch.linspace(-span, span, steps, device=z.device)
        grid = z.repeat(len(dims) * steps, 1)
        for row, d in enumerate(dims):
            grid[row * steps:(row + 1) * steps, d] = values
        images = decode_mean(vae, [grid, *(h.expand(grid.shape[0], -1) for h in layers[1:])])
    title = (f"traversals from {-span} to {span}" if row_labels is not None else
             f"traversals: rows are latent dims {dims}, from {-span} to {span}")
    return plot_images(images, image_shape, nrow=steps, ax=ax, title=title,
                       row_labels=row_labels)


def plot_interpolation(vae, x_a, x_b, image_shape, steps=10, ax=None):
    """Decoded linear interpolations between the latent point estimates of pairs of inputs
    (in a hierarchy, of every layer at once).

    :param torch.Tensor x_a: ``(P, D_x)`` first inputs; ``x_b`` the second, same shape.
    :returns: the axes (one row per pair, the inputs' reconstructions at the ends).
    :raises ValueError: for inputs of different shapes.
    """
    if x_a.shape != x_b.shape:
        raise ValueError(f"x_a and x_b must have the same shape, got {tuple(x_a.shape)} and "
                         f"{tuple(x_b.shape)}")
    with torch.no_grad():
        t = torch.linspace(0, 1, steps, device=x_a.device).reshape(1, steps, 1)
        layers = [((1 - t) * a.unsqueeze(1) + t * b.unsqueeze(1)).reshape(-1, a.shape[-1])
                  for a, b in zip(layer_points(vae, x_a), layer_points(vae, x_b))]  # (P steps, D)
        images = decode_mean(vae, layers)
    return plot_images(images, image_shape, nrow=steps, ax=ax,
                       title="interpolations in latent space (one pair per row)")


def plot_embedding(vae, x, labels=None, method="pca", batch_size=500, ax=None, seed=0):
    """A 2-D embedding of the latent point estimates of ``x``, coloured by label.

    :param torch.Tensor x: ``(N, D_x)`` inputs.
    :param labels: ``(N,)`` integer labels (or ``None``: one colour).
    :param str method: ``"pca"`` (scikit-learn's PCA) or ``"tsne"`` (scikit-learn's t-SNE,
        van der Maaten & Hinton 2008); with a 2-D latent the latent itself is drawn.
    :returns: the axes.
    :raises ValueError: for an unknown method or labels of the wrong length.
    """
    if method not in ("pca", "tsne"):
        raise ValueError(f"method must be 'pca' or 'tsne', got {method!r}")
    if labels is not None and len(labels) != x.shape[0]:
        raise ValueError(f"{len(labels)} labels for {x.shape[0]} inputs")
    with torch.no_grad():
        z = torch.cat([latent_point(vae, x[i:i + batch_size])
                       for i in range(0, x.shape[0], batch_size)]).cpu().double().numpy()
    if z.shape[1] == 2:
        xy, how = z, "latent"
    elif method == "pca":
        from sklearn.decomposition import PCA

        pca = PCA(n_components=2, random_state=seed).fit(z)
        xy = pca.transform(z)
        how = f"PCA ({100 * pca.explained_variance_ratio_.sum():.0f}% of the variance)"
    else:
        from sklearn.manifold import TSNE

        xy, how = TSNE(n_components=2, random_state=seed, init="pca").fit_transform(z), "t-SNE"
    ax = new_axes(ax, (6, 5.5))
    if labels is None:
        ax.scatter(xy[:, 0], xy[:, 1], s=4)
    else:
        labels = torch.as_tensor(labels).cpu().numpy()
        for value in sorted(set(labels.tolist())):
            keep = labels == value
            ax.scatter(xy[keep, 0], xy[keep, 1], s=4, label=str(value))
        ax.legend(markerscale=3, fontsize="small", title="label", loc="best")
    ax.set_title(f"latent means of {x.shape[0]} inputs, {how}")
    ax.set_xticks([])
    ax.set_yticks([])
    return ax


def plot_kl_per_dim(report, ax=None):
    """KL(q || p) of each latent dimension, sorted, per site, from a
    :class:`~pyro_vae.infer.LatentReport`, with the number of active units: a picture
    of posterior collapse.

    :returns: the axes.
    """
    ax = new_axes(ax, (6, 3.5))
    for site, kl in report.kl_per_dim.items():
        if kl is None:
            continue
        values = torch.as_tensor(kl).sort(descending=True).values.cpu()
        ax.plot(range(1, len(values) + 1), values.numpy(), marker=".",
                label=f"{site}: {report.active_units[site]} of {len(values)} active")
    ax.set_xlabel("latent dimension (sorted by KL)")
    ax.set_ylabel("KL(q || p) (nats)")
    ax.set_yscale("symlog", linthresh=0.01)
    ax.grid(alpha=0.3)
    ax.legend()
    return ax
