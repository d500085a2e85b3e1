"""Disentanglement of a trained VAE on data with known factors of variation: the codes of
training images, the metrics of :mod:`pyro_vae.disentanglement` (MIG, DCI) for
``eval.json``, and the figures (the latent-by-factor mutual information, a traversal per
active dimension labelled with the factor it carries most).

A run evaluates these when its data set knows its factors (``data.name = "shapes"``,
:mod:`pyro_vae.shapes`) and its model has one continuous latent layer.
"""

import torch

from .disentanglement import disentanglement_metrics
from .infer import ACTIVE_UNIT_THRESHOLD

#: Training images the metrics are computed on (a seeded subset; the metrics' usual size).
MAX_POINTS = 10_000


def factor_sample(data, max_points=MAX_POINTS, seed=0):
    """A seeded subset of the training images with their factors.

    :param data: an :class:`~pyro_vae.images.ImageData` with factors.
    :returns: ``(images, factors)``, ``(n, D)`` float and ``(n, F)`` int64, ``n`` at most
        ``max_points``.
    :raises ValueError: if the data set has no known factors.
    """
    if not data.has_factors:
        raise ValueError(f"data set {data.name!r} has no known factors of variation; "
                         "disentanglement metrics need one that has (e.g. --data shapes)")
    n = data.train.shape[0]
    keep = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))[:max_points]
    keep = keep.sort().values
    return data.train[keep], data.train_factors[keep]


def supports_factor_metrics(vae):
    """True for a model whose codes the metrics can read: one continuous latent layer
    (not a hierarchy, not categorical or vector-quantized codes) of an unconditional model
    (a conditional or M2 model's code is read given a label, which is itself a factor)."""
    return getattr(vae, "num_layers", 1) == 1 and \
        not getattr(vae.posterior, "categorical", False) and \
        not hasattr(vae.posterior, "code_usage") and \
        not getattr(vae, "conditional", False) and not getattr(vae, "semi_supervised", False)


def guide_means(vae, images, batch_size=500):
    """The guide's mean of ``z`` for each image, ``(n, D)`` on the CPU."""
    from .latent_plots import latent_point

    device = next(vae.parameters()).device
    vae.eval()
    with torch.no_grad():
        return torch.cat([latent_point(vae, images[i:i + batch_size].to(device)).cpu()
                          for i in range(0, images.shape[0], batch_size)])


def evaluate_factors(vae, images, factors, factor_names, seed=0):
    """MIG and DCI of ``vae``'s codes (guide means) of ``images``.

    :param images: ``(n, D_x)`` training images; ``factors`` ``(n, F)`` their factors.
    :param factor_names: the F names.
    :returns: a JSON-ready dict for ``eval.json``: ``mig`` (float), ``dci`` (its three
        scores) and ``disentanglement`` (per-factor gaps, the mutual-information and
        importance matrices, the active dimensions and the estimators' settings); see
        :func:`pyro_vae.disentanglement.disentanglement_metrics`.
    """
    codes = guide_means(vae, images)
    metrics = disentanglement_metrics(codes, factors, factor_names, seed=seed,
                                      max_points=images.shape[0])
    activity = codes.var(0)
    details = {key: value for key, value in metrics.items() if key not in ("mig", "dci")}
    details["activity"] = activity.tolist()
    details["active_dims"] = (activity > ACTIVE_UNIT_THRESHOLD).nonzero().flatten().tolist()
    details["settings"].update(
        split="train", sample="torch.randperm with the evaluation seed, at most "
                            f"{MAX_POINTS} training images",
        informativeness="mean test accuracy of the per-factor classifiers")
    return {"mig": metrics["mig"], "dci": metrics["dci"], "disentanglement": details}


def dimension_labels(details):
    """For each active dimension, ``"z<d>: <factor> (<MI> nats)"``, the factor it carries
    the most information about; from the ``disentanglement`` dict of
    :func:`evaluate_factors`."""
    mi = torch.tensor(details["mutual_information"])
    names = details["factor_names"]
    labels = []
    for d in details["active_dims"]:
        best = int(mi[d].argmax())
        labels.append(f"z{d}: {names[best]} ({float(mi[d, best]):.2f} nats)")
    return labels


def factor_metrics_for(vae, config, seed=0):
    """The disentanglement entries of ``eval.json`` for a run, or ``{}`` when its data set
    has no known factors (:data:`pyro_vae.datasets.FACTOR_DATASETS`) or its model's codes
    are not one continuous layer (:func:`supports_factor_metrics`).

    :param config: the run's :class:`~pyro_vae.config.Config` (its data settings).
    :returns: see :func:`evaluate_factors`.
    """
    from .datasets import FACTOR_DATASETS, keep_classes, load_dataset

    if config.data.name not in FACTOR_DATASETS or not supports_factor_metrics(vae):
        return {}
    data = keep_classes(load_dataset(config.data.name, config.data.data_dir,
                                     config.data.download), config.data.classes)
    images, factors = factor_sample(data, seed=seed)
    return evaluate_factors(vae, images, factors, data.factor_names, seed=seed)


def write_factor_figures(vae, details, image, image_shape, run_dir):
    """Write ``mutual_information.png`` (latent dimension x factor) and
    ``factor_traversals.png`` (one row per active dimension, labelled by
    :func:`dimension_labels`) into ``run_dir``.

    :param image: one image ``(D_x,)`` whose code the traversals start from.
    """
    from pathlib import Path

    from . import plots
    from .latent_plots import plot_traversal

    run_dir = Path(run_dir)
    plots.save_figure(plots.plot_mutual_information(details["mutual_information"],
                                                    details["factor_names"]),
                      run_dir / "mutual_information.png")
    dims = details["active_dims"]
    if dims:
        device = next(vae.parameters()).device
        ax = plot_traversal(vae, image.to(device), image_shape, dims=dims, steps=9, span=2.5,
                            row_labels=dimension_labels(details))
        plots.save_figure(ax, run_dir / "factor_traversals.png")
