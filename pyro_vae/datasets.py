"""Data sets by name: the embedded digits, IDX files, generated shapes, a user's ``.npz``.

Sources (see :data:`DATASETS`):

- ``digits``: scikit-learn's bundled 8x8 handwritten digits (1797 images, grey levels
  0..16 scaled to [0, 1]); always available. Split with a fixed permutation (seed 0)
  into 1200 train, 300 validation and 297 test images.
- ``fashion-mnist`` and ``mnist``: IDX files (see :mod:`pyro_vae.idx`).
- ``shapes``: dSprites-like binary 32x32 images of one square, ellipse or heart with
  known factors (shape, scale, orientation, x, y), drawn by :mod:`pyro_vae.shapes`; 28,224
  images split with a fixed permutation (seed 0) into 22,580 train, 2,822 validation and
  2,822 test images.
- a path to a ``.npz`` file holding arrays ``train`` and ``test`` (and optionally
  ``validation``; without it the last 10% of ``train`` is held out), each of shape
  ``(N, H, W)``, ``(N, C, H, W)`` or ``(N, D)``, uint8 in 0..255 or float in [0, 1], and
  optionally integer labels ``<split>_labels``.
"""

import dataclasses
from pathlib import Path

import numpy as np
import torch

from .errors import DataError
from .idx import load_idx_dataset
from .images import ImageData, as_unit_float, check_images, image_shape_of
from .shapes import load_shapes


def load_digits():
    """Load scikit-learn's bundled 8x8 digits as :class:`ImageData` (1200/300/297 split).

    Grey levels 0..16 are divided by 16. The split is a fixed permutation (seed 0).
    """
    from sklearn.datasets import load_digits as _sk_load_digits

    bunch = _sk_load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).reshape(-1, 64)
    perm = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(0))
    images, labels = images[perm], torch.from_numpy(bunch.target.astype(np.int64))[perm]
    return ImageData("digits", images[:1200], images[1200:1500], images[1500:], (1, 8, 8),
                     "scikit-learn load_digits", labels[:1200], labels[1200:1500], labels[1500:])


def load_npz(path):
    """Load a user's ``.npz`` of images (see the module docstring for the keys).

    :raises DataError: if the file is unreadable, lacks ``train`` or ``test``, or the
        arrays disagree in image shape.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file" + (" (it is a folder)" if path.is_dir() else ""))
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise DataError(f"{path}: cannot read it ({e.strerror})") from None
    if head != b"PK\x03\x04":
        raise DataError(f"{path}: not a .npz file (a .npz is a zip archive written by np.savez; "
                        "this file does not start like one). Save your arrays with "
                        "np.savez(path, train=..., test=...)")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except ValueError as e:
        if "pickle" in str(e):
            raise DataError(f"{path}: an array holds Python objects (dtype object), which are "
                            "never loaded (unpickling can run code); save plain numeric arrays "
                            "(uint8 0..255 or floats in [0, 1])") from None
        raise DataError(f"{path}: cannot read it as a .npz file ({e})") from None
    except Exception as e:  # noqa: BLE001 - zipfile and format errors of a damaged archive
        raise DataError(f"{path}: cannot read it as a .npz file; it is damaged or truncated "
                        f"({type(e).__name__}: {e})") from None
    missing = [k for k in ("train", "test") if k not in arrays]
    if missing:
        raise DataError(f"{path}: missing array(s) {missing}; found {sorted(arrays)}. "
                        "Save it with np.savez(path, train=..., test=..., validation=...)")
    unknown = sorted(set(arrays) - set(NPZ_ARRAYS))
    if unknown:
        import difflib

        hints = [f"{u!r} (did you mean {m[0]!r}?)" if m else repr(u) for u in unknown
                 for m in [difflib.get_close_matches(u, NPZ_ARRAYS, n=1)]]
        raise DataError(f"{path}: array(s) {', '.join(hints)} are not read; a data .npz holds "
                        f"only {', '.join(NPZ_ARRAYS)}. Rename or remove them")
    shapes = {k: a.shape for k, a in arrays.items() if k in ("train", "validation", "test")}
    image_shape = image_shape_of(arrays["train"].shape, f"{path} 'train'")
    for k, shape in shapes.items():
        if image_shape_of(shape, f"{path} {k!r}") != image_shape:
            raise DataError(f"{path}: array {k!r} has images of shape {shape[1:]}, "
                            f"'train' has {arrays['train'].shape[1:]}")
    for k in ("train", "validation", "test"):
        a = arrays.get(k)
        if a is not None and a.dtype == np.uint8 and a.size and int(a.max()) <= 1:
            raise DataError(f"{path}: {k!r} is uint8 holding only 0 and 1; uint8 images are read "
                            "as grey levels 0..255 (1 would be nearly black). Save binary images "
                            "as floats (images.astype(np.float32)) or as 0/255")
    size = int(np.prod(image_shape))
    splits = {k: as_unit_float(arrays[k], f"{path} {k!r}").reshape(shapes[k][0], size)
              for k in shapes}
    labels = _npz_labels(arrays, shapes, path)
    train = splits["train"]
    if "validation" in splits:
        validation = splits["validation"]
    else:
        n_val = max(1, train.shape[0] // 10)
        if train.shape[0] - n_val < 1:
            raise DataError(f"{path}: 'train' has {train.shape[0]} image(s), too few to hold out "
                            "a validation split; add a 'validation' array")
        train, validation = train[:-n_val], train[-n_val:]
        if labels["train"] is not None:
            labels["validation"] = labels["train"][-n_val:]
            labels["train"] = labels["train"][:-n_val]
    return ImageData(path.stem, train, validation, splits["test"], image_shape, str(path),
                     labels["train"], labels["validation"], labels["test"])


#: The arrays a data ``.npz`` may hold.
NPZ_ARRAYS = ("train", "validation", "test", "train_labels", "validation_labels", "test_labels")


def _npz_labels(arrays, shapes, path):
    """The optional ``<split>_labels`` arrays of a ``.npz`` as int64 tensors (all or none
    of the splits present), each checked against its split."""
    given = {k: arrays.get(f"{k}_labels") for k in shapes}
    if all(v is None for v in given.values()):
        return {"train": None, "validation": None, "test": None}
    absent = [f"{k}_labels" for k, v in given.items() if v is None]
    if absent:
        raise DataError(f"{path}: labels are given for some splits only; add {absent} (or "
                        "remove every *_labels array)")
    out = {"validation": None}
    for k, y in given.items():
        if y.ndim != 1 or y.shape[0] != shapes[k][0] or not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{path}: '{k}_labels' must hold one integer label per image of "
                            f"{k!r} ({shapes[k][0]}), got {y.dtype} of shape {y.shape}")
        out[k] = torch.from_numpy(y.astype(np.int64))
    return out


#: Built-in data sets by name.
DATASETS = {
    "digits": lambda data_dir=None, download=False: load_digits(),
    "fashion-mnist": lambda data_dir=None, download=False: load_idx_dataset(
        "fashion-mnist", data_dir, download),
    "mnist": lambda data_dir=None, download=False: load_idx_dataset("mnist", data_dir, download),
    "shapes": lambda data_dir=None, download=False: load_shapes(),
}


#: The built-in data sets that know their images' factors of variation (``ImageData.
#: train_factors``): runs on them are scored by the disentanglement metrics.
FACTOR_DATASETS = ("shapes",)


def load_dataset(name, data_dir=None, download=False):
    """Load a data set by name (a key of :data:`DATASETS`) or a path to a ``.npz`` file.

    :param str name: ``digits``, ``fashion-mnist``, ``mnist``, ``shapes`` or
        ``path/to/file.npz``.
    :param data_dir: a folder to search first for IDX files.
    :param bool download: allow torchvision to download missing files into the cache.
    :returns: :class:`ImageData` with every split checked (non-empty, no NaN, in [0, 1]).
    :raises DataError: for an unknown name (listing the valid ones), missing or corrupt
        files, or bad values.
    """
    if str(name).lower().endswith(".npz"):
        data = load_npz(name)
    elif name in DATASETS:
        data = DATASETS[name](data_dir=data_dir, download=download)
    else:
        hint = ""
        if Path(str(name)).is_file():
            hint = f" ({name} is a file, but only .npz files are read)"
        raise DataError(f"unknown data set {name!r}{hint}; choose one of {sorted(DATASETS)} "
                        "or give a path to a .npz file")
    for split in ("train", "validation", "test"):
        check_images(getattr(data, split), f"{data.name} {split} split")
    return data


def data_fingerprint(data):
    """SHA-256 of every split's values and labels (hex, first 16 characters): the same
    for the same images whatever folder they were read from, different for any change.

    :param ImageData data: a loaded data set.
    :returns: ``{"source": where it was read, "fingerprint": hex digest}``.
    """
    import hashlib

    h = hashlib.sha256()
    for split in ("train", "validation", "test"):
        for t in (getattr(data, split), getattr(data, f"{split}_labels")):
            if t is not None:
                t = t.contiguous()
                h.update(f"{split}{tuple(t.shape)}{t.dtype}".encode())
                h.update(t.numpy().tobytes())
    return {"name": data.name, "source": str(data.source), "fingerprint": h.hexdigest()[:16]}


def keep_classes(data, classes):
    """``data`` with its training and validation splits (and their known factors, if any)
    restricted to ``classes`` (the test split and its labels unchanged).

    :param classes: class labels to keep; empty keeps everything.
    :raises DataError: if the data set has no labels, or a split would be left empty.
    """
    if not classes:
        return data
    if data.train_labels is None:
        raise DataError(f"{data.name} has no labels, so data.classes cannot select classes "
                        "(labels come with digits, and with IDX files whose label files lie "
                        "beside the images)")
    wanted = torch.tensor(sorted(int(c) for c in classes))
    splits = {}
    for split in ("train", "validation"):
        labels = getattr(data, f"{split}_labels")
        keep = torch.isin(labels, wanted)
        if not keep.any():
            raise DataError(f"{data.name}: no {split} image has a label in {wanted.tolist()}; "
                            f"labels present: {labels.unique().tolist()}")
        factors = getattr(data, f"{split}_factors")
        splits[split] = (getattr(data, split)[keep], labels[keep],
                         None if factors is None else factors[keep])
    return dataclasses.replace(data, train=splits["train"][0], train_labels=splits["train"][1],
                               train_factors=splits["train"][2],
                               validation=splits["validation"][0],
                               validation_labels=splits["validation"][1],
                               validation_factors=splits["validation"][2])


def labelled_subset(labels, num_labelled, seed):
    """Indices of ``num_labelled`` training images that keep their label, the same number
    from every class (the first classes take one more when it does not divide), drawn at
    random with ``seed``: the usual protocol of semi-supervised benchmarks (Kingma et al.
    2014, arXiv:1406.5298).

    :param torch.Tensor labels: ``(N,)`` integer labels.
    :param int num_labelled: how many; 0 or ``N``: all.
    :returns: a sorted int64 tensor of indices.
    :raises DataError: for a number outside ``[0, N]``, fewer than one per class, or a class
        with too few images.
    """
    n = labels.shape[0]
    if num_labelled == 0 or num_labelled == n:
        return torch.arange(n)
    classes = labels.unique().tolist()
    if not len(classes) <= num_labelled <= n:
        raise DataError(f"data.labels must lie between the number of classes ({len(classes)}) "
                        f"and the number of training images ({n}), or be 0 for all; got "
                        f"{num_labelled}")
    generator = torch.Generator().manual_seed(int(seed))
    chosen = []
    for i, c in enumerate(classes):
        want = num_labelled // len(classes) + (i < num_labelled % len(classes))
        members = (labels == c).nonzero().flatten()
        if members.shape[0] < want:
            raise DataError(f"class {c} has {members.shape[0]} training images, fewer than the "
                            f"{want} labelled ones asked for")
        chosen.append(members[torch.randperm(members.shape[0], generator=generator)[:want]])
    return torch.cat(chosen).sort().values
