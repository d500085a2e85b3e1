"""Whether a model and a data set go together, checked before any training.

A likelihood must match the data's support (binary or grey levels); a model of labels
needs labels that are the classes 0..K-1.
"""

import dataclasses

import torch

from .errors import ConfigError


def check_compatible(likelihood, data, binarization):
    """Refuse a likelihood on data outside its support, before any training.

    :raises ConfigError: e.g. a Bernoulli likelihood on grey-level data without
        binarization, or a discretized logistic on binarized data or off its grid.
    """
    kind = getattr(likelihood, "data_kind", None)
    name = type(likelihood).__name__
    if kind == "binary" and binarization == "none" and not data.is_binary:
        raise ConfigError(
            f"the {name} needs binary data, but {data.name} has grey levels in [0, 1] and "
            "data.binarization is 'none'; set data.binarization to 'dynamic' (the published "
            "protocol) or 'static', or choose a likelihood for grey-level data "
            "(continuous_bernoulli, gaussian, discretized_logistic)")
    if kind == "discrete grey levels" and binarization != "none":
        raise ConfigError(f"the {name} models grey levels, but data.binarization is "
                          f"{binarization!r}; set data.binarization = 'none'")
    if binarization == "none" and hasattr(likelihood, "check_data"):
        try:
            likelihood.check_data(data.train)
        except ValueError as e:
            raise ConfigError(f"{data.name}: {e}") from None


def with_num_classes(config, data):
    """``config`` with ``model.num_classes`` resolved from the data's labels when it is 0.

    :raises ConfigError: for data without labels, or labels outside the number given.
    """
    if data.train_labels is None:
        raise ConfigError(f"{data.name} has no labels, which a conditional or semi-supervised "
                          "model needs (digits has them, and IDX files whose label files lie "
                          "beside the images)")
    labels = [y for y in (data.train_labels, data.validation_labels, data.test_labels)
              if y is not None]
    found = int(max(int(y.max()) for y in labels)) + 1
    if min(int(y.min()) for y in labels) < 0:
        raise ConfigError(f"{data.name} has negative labels; a model of labels needs classes "
                          "0, 1, ..., K-1")
    m = config.model
    present = torch.cat(labels).unique()
    if not m.num_classes and present.numel() < found:
        missing = sorted(set(range(found)) - set(present.tolist()))
        raise ConfigError(
            f"{data.name} has labels up to {found - 1}, but only {present.numel()} distinct "
            f"values ({_short(present.tolist())}); labels {_short(missing)} never occur, so "
            f"the model would have {found} classes. Relabel the data as 0..K-1, or set "
            f"model.num_classes = {found} if that many classes are meant")
    if m.num_classes and m.num_classes < found:
        raise ConfigError(f"model.num_classes is {m.num_classes} but {data.name} has labels up "
                          f"to {found - 1}")
    if m.num_classes:
        return config
    return dataclasses.replace(config, model=dataclasses.replace(m, num_classes=found))


def _short(values, n=12):
    values = list(values)
    return ", ".join(map(str, values[:n])) + (f", ... ({len(values)} in all)" if len(values) > n
                                              else "")
