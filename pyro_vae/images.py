"""Images as the models see them: :class:`ImageData` and its checks.

Every data set is returned as :class:`ImageData`: float32 tensors with values in [0, 1],
one row per image, flattened to ``(N, C*H*W)``, plus the image shape for figures and
labels where the source has them.
"""

import math
from dataclasses import dataclass

import numpy as np
import torch

from .errors import DataError


@dataclass
class ImageData:
    """Train/validation/test images of one data set, values in [0, 1].

    :ivar str name: the data set's name.
    :ivar torch.Tensor train: ``(N_train, D)`` float32.
    :ivar torch.Tensor validation: ``(N_val, D)`` float32.
    :ivar torch.Tensor test: ``(N_test, D)`` float32.
    :ivar tuple image_shape: ``(C, H, W)`` of one image, ``C*H*W == D``.
    :ivar str source: where the data came from, for the run's record.
    :ivar train_labels: ``(N_train,)`` int64 class labels, or ``None`` when the source has
        none (likewise ``validation_labels``, ``test_labels``); for figures and
        evaluations by class, never used in training.
    :ivar train_factors: ``(N_train, F)`` int64 indices of each image's known factors of
        variation into ``factor_values`` (likewise ``validation_factors``,
        ``test_factors``), or ``None`` when the data set has no known factors; for the
        disentanglement metrics (:mod:`pyro_vae.disentanglement`), never used in training.
    :ivar tuple factor_names: the F factors' names (``None`` without factors).
    :ivar tuple factor_values: for each factor, the tuple of its values (the grid).
    """

    name: str
    train: torch.Tensor
    validation: torch.Tensor
    test: torch.Tensor
    image_shape: tuple
    source: str
    train_labels: torch.Tensor = None
    validation_labels: torch.Tensor = None
    test_labels: torch.Tensor = None
    train_factors: torch.Tensor = None
    validation_factors: torch.Tensor = None
    test_factors: torch.Tensor = None
    factor_names: tuple = None
    factor_values: tuple = None

    @property
    def has_factors(self):
        """True when the data set knows its images' factors of variation."""
        return self.train_factors is not None

    @property
    def event_shape(self):
        """Shape of one datapoint as the networks see it: ``(D,)``."""
        return (self.train.shape[1],)

    @property
    def is_binary(self):
        """True when every value in every split is 0 or 1."""
        return all(bool(((t == 0) | (t == 1)).all()) for t in (self.train, self.validation, self.test))


def check_images(x, what):
    """Check that ``x`` is a non-empty float tensor of shape ``(N, D)`` with values in [0, 1].

    :param torch.Tensor x: the images.
    :param str what: a name for the error message, e.g. ``"digits train split"``.
    :raises DataError: for an empty set, NaN, or values outside [0, 1].
    """
    if x.dim() != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise DataError(f"{what}: expected a non-empty array of images, got shape {tuple(x.shape)}")
    if torch.isnan(x).any():
        raise DataError(f"{what}: {int(torch.isnan(x).sum())} values are NaN; clean the data first")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise DataError(
            f"{what}: values must lie in [0, 1], found min {lo:g} and max {hi:g}; "
            "scale the images (uint8 images are divided by 255 automatically)"
        )
    return x


def as_unit_float(array, what):
    """uint8 0..255 -> float32 /255; float -> float32 (checked later)."""
    array = np.asarray(array)
    if array.dtype == np.uint8:
        return torch.from_numpy(array.astype(np.float32) / 255.0)
    if np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer) \
            or array.dtype == np.bool_:
        return torch.from_numpy(array.astype(np.float32))
    raise DataError(f"{what}: expected uint8 or float images, got dtype {array.dtype}")


def image_shape_of(shape, what):
    """(N, H, W) -> (1, H, W); (N, C, H, W) -> (C, H, W); (N, D) -> (1, s, s) when D = s^2,
    else (1, 1, D)."""
    if len(shape) == 3:
        return (1, int(shape[1]), int(shape[2]))
    if len(shape) == 4:
        if shape[3] <= 4 < shape[1]:
            raise DataError(f"{what}: shape {tuple(shape)} looks channels-last (N, H, W, C) with "
                            f"{shape[3]} channel(s); pyro_vae reads 4-dimensional images as "
                            "channels-first (N, C, H, W). Save np.moveaxis(images, -1, 1)")
        return tuple(int(s) for s in shape[1:])
    if len(shape) == 2:
        side = math.isqrt(int(shape[1]))
        return (1, side, side) if side * side == shape[1] else (1, 1, int(shape[1]))
    raise DataError(f"{what}: expected images of shape (N, H, W), (N, C, H, W) or (N, D), "
                    f"got {tuple(shape)}")
