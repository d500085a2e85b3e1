"""Data sets, splits and the binarization protocol.

Every data set is returned as :class:`ImageData`: float32 tensors with values in [0, 1],
one row per image, flattened to ``(N, C*H*W)``, plus the image shape for figures.

Sources (see :data:`DATASETS`):

- ``digits``: scikit-learn's bundled 8x8 handwritten digits (1797 images, grey levels
  0..16 scaled to [0, 1]); always available. Split with a fixed permutation (seed 0)
  into 1200 train, 300 validation and 297 test images.
- ``fashion-mnist`` and ``mnist``: the IDX files (``train-images-idx3-ubyte[.gz]``,
  ``t10k-images-idx3-ubyte[.gz]``). Split as in the published tables (VampPrior,
  Tomczak & Welling 2018, arXiv:1705.07120): train = first 50,000 training images,
  validation = last 10,000, test = the 10,000 test images.
- a path to a ``.npz`` file holding arrays ``train`` and ``test`` (and optionally
  ``validation``; without it the last 10% of ``train`` is held out), each of shape
  ``(N, H, W)``, ``(N, C, H, W)`` or ``(N, D)``, uint8 in 0..255 or float in [0, 1].

Where IDX files are looked for, in order: the explicit ``data_dir``, ``$PYRO_VAE_DATA``,
the cache folder (``$XDG_CACHE_HOME/pyro_vae`` or ``~/.cache/pyro_vae``) and, for
Fashion-MNIST, Debian's ``/usr/share/datasets/fashion-mnist``. In each folder the files
may lie directly, under the data set's name, or in torchvision's ``<Class>/raw`` layout.
Nothing is downloaded unless ``download=True`` (then torchvision fetches the files into
the cache folder).

Binarization (the protocol of the published tables): training batches are binarized
afresh each epoch by sampling each pixel from Bernoulli(intensity) (dynamic
binarization); the test set is binarized once with seed 777 and the validation set once
with seed 778, so every model is evaluated on the same binary images.
"""

import dataclasses
import gzip
import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import DataError

#: Seed of the one-off binarization of the test set (the published protocol).
TEST_BINARIZATION_SEED = 777
#: Seed of the one-off binarization of the validation set.
VALIDATION_BINARIZATION_SEED = 778
#: Binarization settings: how training, validation and test images are made binary.
BINARIZATIONS = ("dynamic", "static", "none")
#: Debian's package ``dataset-fashion-mnist`` puts the IDX files here.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

_IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions


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


def _as_unit_float(array, what):
    """uint8 0..255 -> float32 /255; float -> float32 (checked later)."""
    array = np.asarray(array)
    if array.dtype == np.uint8:
        return torch.from_numpy(array.astype(np.float32) / 255.0)
    if np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer) \
            or array.dtype == np.bool_:
        return torch.from_numpy(array.astype(np.float32))
    raise DataError(f"{what}: expected uint8 or float images, got dtype {array.dtype}")


def _image_shape(shape, what):
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


# --------------------------------------------------------------------------------------
# scikit-learn's 8x8 digits


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


# --------------------------------------------------------------------------------------
# IDX files (MNIST, Fashion-MNIST)


def read_idx_images(path):
    """Read an IDX image file (``.gz`` or raw) into a uint8 array of shape ``(N, H, W)``.

    Format: a 4-byte big-endian magic number ``0x00000803`` (unsigned bytes, 3 dims),
    three 4-byte big-endian sizes, then ``N*H*W`` bytes (LeCun et al., the MNIST format).

    :param path: the file.
    :raises DataError: if the file cannot be decompressed, has a wrong magic number,
        zero sizes, or fewer or more bytes than its header says.
    """
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: cannot read the file ({e}); it may be truncated or corrupt. "
                        "Delete it and fetch it again") from None
    if len(raw) < 16:
        raise DataError(f"{path}: only {len(raw)} bytes, too short for an IDX image header; "
                        "the file is truncated. Delete it and fetch it again")
    magic, n, rows, cols = (int.from_bytes(raw[i:i + 4], "big") for i in range(0, 16, 4))
    if magic != _IDX_IMAGES_MAGIC:
        raise DataError(f"{path}: magic number 0x{magic:08x}, expected 0x{_IDX_IMAGES_MAGIC:08x} "
                        "(IDX, unsigned bytes, 3 dimensions); this is not an IDX image file")
    if n == 0 or rows == 0 or cols == 0:
        raise DataError(f"{path}: header gives sizes {n}x{rows}x{cols}; expected non-zero sizes")
    expected = 16 + n * rows * cols
    if len(raw) != expected:
        raise DataError(f"{path}: header promises {n} images of {rows}x{cols} = {expected} bytes, "
                        f"the file has {len(raw)}; it is truncated or corrupt. "
                        "Delete it and fetch it again")
    return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(n, rows, cols)


_IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension


def read_idx_labels(path):
    """Read an IDX label file (``.gz`` or raw) into an int64 tensor of shape ``(N,)``.

    Format: magic number ``0x00000801``, one 4-byte big-endian size, then ``N`` bytes.

    :raises DataError: if the file cannot be read, has a wrong magic number or a length
        that disagrees with its header.
    """
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: cannot read the file ({e}); it may be truncated or corrupt") from None
    if len(raw) < 8:
        raise DataError(f"{path}: only {len(raw)} bytes, too short for an IDX label header")
    magic, n = (int.from_bytes(raw[i:i + 4], "big") for i in (0, 4))
    if magic != _IDX_LABELS_MAGIC:
        raise DataError(f"{path}: magic number 0x{magic:08x}, expected 0x{_IDX_LABELS_MAGIC:08x} "
                        "(IDX labels); this is not an IDX label file")
    if len(raw) != 8 + n:
        raise DataError(f"{path}: header promises {n} labels, the file has {len(raw) - 8}; it is "
                        "truncated or corrupt")
    return torch.from_numpy(np.frombuffer(raw, dtype=np.uint8, offset=8).astype(np.int64))


@dataclass(frozen=True)
class IDXSource:
    """Where and how to find one IDX data set.

    :ivar str name: the data set's name on the command line.
    :ivar tuple folders: sub-folder names tried inside each search folder.
    :ivar str torchvision_class: the torchvision dataset class used for ``download=True``.
    :ivar tuple system_dirs: extra folders where a system package installs the files.
    :ivar str how_to_get: a hint printed when the files are missing.
    """

    name: str
    folders: tuple
    torchvision_class: str
    system_dirs: tuple = ()
    how_to_get: str = ""


IDX_SOURCES = {
    "fashion-mnist": IDXSource(
        "fashion-mnist", ("", "fashion-mnist", "FashionMNIST/raw"), "FashionMNIST",
        (DEBIAN_FASHION_MNIST,),
        "on Debian/Ubuntu: apt-get install dataset-fashion-mnist; elsewhere pass --download "
        "to fetch it with torchvision, or put the IDX files in --data-dir"),
    "mnist": IDXSource(
        "mnist", ("", "mnist", "MNIST/raw"), "MNIST", (),
        "pass --download to fetch it with torchvision, or put the IDX files "
        "(train-images-idx3-ubyte, t10k-images-idx3-ubyte, optionally .gz) in --data-dir"),
}


def cache_dir():
    """The cache folder: ``$XDG_CACHE_HOME/pyro_vae`` or ``~/.cache/pyro_vae``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pyro_vae"


def search_dirs(source, data_dir=None):
    """The folders searched for ``source``'s files, in order (see the module docstring).

    An explicit ``data_dir`` is the only place looked in (with its sub-folder layouts):
    the user named it, so files elsewhere are never read instead."""
    if data_dir is not None:
        root = Path(data_dir)
        return [root / sub if sub else root for sub in source.folders]
    roots = []
    if os.environ.get("PYRO_VAE_DATA"):
        roots.append(Path(os.environ["PYRO_VAE_DATA"]))
    roots.append(cache_dir())
    dirs = [root / sub if sub else root for root in roots for sub in source.folders]
    return dirs + [Path(d) for d in source.system_dirs]


def _find_idx(folder, stem):
    for candidate in (folder / stem, folder / (stem + ".gz")):
        if candidate.is_file():
            return candidate
        if candidate.exists():
            raise DataError(f"{candidate} is not a file (a folder or a device where the IDX file "
                            "should be); move it aside or give another --data-dir")
    return None


def find_idx_files(source, data_dir=None):
    """Return ``(train_images_path, test_images_path)`` of the first folder holding both.

    :raises DataError: listing every folder looked in and how to get the files.
    """
    looked = search_dirs(source, data_dir)
    if data_dir is not None and not Path(data_dir).is_dir():
        raise DataError(f"{source.name}: --data-dir {data_dir} " +
                        ("is not a folder" if Path(data_dir).exists() else "does not exist") +
                        "; it is the only place looked in when given. Give the folder that "
                        f"holds train-images-idx3-ubyte[.gz] and t10k-images-idx3-ubyte[.gz] "
                        f"({source.how_to_get})")
    for folder in looked:
        train = _find_idx(folder, "train-images-idx3-ubyte")
        test = _find_idx(folder, "t10k-images-idx3-ubyte")
        if train is not None and test is not None:
            return train, test
    places = "\n  ".join(str(d) for d in looked)
    if data_dir is not None:
        places += "\n(only --data-dir is searched when it is given)"
    raise DataError(f"{source.name}: no train-images-idx3-ubyte[.gz] and t10k-images-idx3-ubyte[.gz] "
                    f"found. Looked in:\n  {places}\nTo get them: {source.how_to_get}")


def download_idx(source, root=None):
    """Fetch ``source`` with torchvision into ``root`` (default the cache folder; only on
    explicit request)."""
    import torchvision.datasets

    root = Path(root) if root is not None else cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    cls = getattr(torchvision.datasets, source.torchvision_class)
    try:
        cls(str(root), train=True, download=True)
        cls(str(root), train=False, download=True)
    except Exception as e:  # network errors come in many types
        raise DataError(f"{source.name}: download with torchvision failed ({e}); "
                        f"{source.how_to_get}") from None


def load_idx_dataset(name, data_dir=None, download=False):
    """Load ``fashion-mnist`` or ``mnist`` from IDX files with the 50k/10k/10k split.

    :raises DataError: files missing (listing where it looked), truncated or corrupt.
    """
    source = IDX_SOURCES[name]
    try:
        train_path, test_path = find_idx_files(source, data_dir)
    except DataError:
        if not download:
            raise
        download_idx(source, data_dir)
        train_path, test_path = find_idx_files(source, data_dir)
    train = read_idx_images(train_path)
    test = read_idx_images(test_path)
    if train.shape[0] <= 10000:
        raise DataError(f"{train_path}: {train.shape[0]} training images; the protocol holds out "
                        "the last 10,000 for validation, so more than 10,000 are needed")
    if train.shape[1:] != test.shape[1:]:
        raise DataError(f"{name}: training images are {train.shape[1:]}, test images "
                        f"{test.shape[1:]}; the files do not belong together")
    h, w = train.shape[1:]
    train_t = _as_unit_float(train, name).reshape(train.shape[0], -1)
    test_t = _as_unit_float(test, name).reshape(test.shape[0], -1)
    # labels when their files lie beside the images (they are optional)
    train_labels = _find_idx(train_path.parent, "train-labels-idx1-ubyte")
    test_labels = _find_idx(test_path.parent, "t10k-labels-idx1-ubyte")
    labels = (None, None, None)
    if train_labels is not None and test_labels is not None:
        train_y, test_y = read_idx_labels(train_labels), read_idx_labels(test_labels)
        if train_y.shape[0] != train.shape[0] or test_y.shape[0] != test.shape[0]:
            raise DataError(f"{name}: {train_y.shape[0]} and {test_y.shape[0]} labels for "
                            f"{train.shape[0]} and {test.shape[0]} images; the files do not "
                            "belong together")
        labels = (train_y[:-10000], train_y[-10000:], test_y)
    return ImageData(name, train_t[:-10000], train_t[-10000:], test_t, (1, h, w),
                     f"{train_path.parent}", *labels)


# --------------------------------------------------------------------------------------
# A user's .npz


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
    image_shape = _image_shape(arrays["train"].shape, f"{path} 'train'")
    for k, shape in shapes.items():
        if _image_shape(shape, f"{path} {k!r}") != image_shape:
            raise DataError(f"{path}: array {k!r} has images of shape {shape[1:]}, "
                            f"'train' has {arrays['train'].shape[1:]}")
    for k in ("train", "validation", "test"):
        a = arrays.get(k)
        if a is not None and a.dtype == np.uint8 and a.size and int(a.max()) <= 1:
            raise DataError(f"{path}: {k!r} is uint8 holding only 0 and 1; uint8 images are read "
                            "as grey levels 0..255 (1 would be nearly black). Save binary images "
                            "as floats (images.astype(np.float32)) or as 0/255")
    size = int(np.prod(image_shape))
    splits = {k: _as_unit_float(arrays[k], f"{path} {k!r}").reshape(shapes[k][0], size)
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
}


def load_dataset(name, data_dir=None, download=False):
    """Load a data set by name (a key of :data:`DATASETS`) or a path to a ``.npz`` file.

    :param str name: ``digits``, ``fashion-mnist``, ``mnist`` or ``path/to/file.npz``.
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
    """``data`` with its training and validation splits restricted to ``classes`` (the
    test split and its labels unchanged).

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
        splits[split] = (getattr(data, split)[keep], labels[keep])
    return dataclasses.replace(data, train=splits["train"][0], train_labels=splits["train"][1],
                               validation=splits["validation"][0],
                               validation_labels=splits["validation"][1])


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


def binarize(x, seed=None, generator=None):
    """Sample binary images: each pixel ~ Bernoulli(intensity).

    :param torch.Tensor x: intensities in [0, 1], any shape.
    :param int seed: seed of a fresh generator (ignored when ``generator`` is given).
    :param torch.Generator generator: a generator to draw from (its state advances).
    :returns: a float tensor of 0s and 1s, the shape of ``x``.
    """
    if generator is None:
        generator = torch.Generator(device=x.device)
        generator.manual_seed(int(seed if seed is not None else 0))
    return torch.bernoulli(x, generator=generator)


def prepare_eval_splits(data, binarization):
    """The validation and test sets as the model sees them under ``binarization``.

    ``"dynamic"`` and ``"static"``: binarized once with :data:`VALIDATION_BINARIZATION_SEED`
    and :data:`TEST_BINARIZATION_SEED`; ``"none"``: unchanged.

    :returns: ``(validation, test)`` tensors.
    :raises DataError: for an unknown binarization.
    """
    check_binarization(binarization)
    if binarization == "none":
        return data.validation, data.test
    return (binarize(data.validation, VALIDATION_BINARIZATION_SEED),
            binarize(data.test, TEST_BINARIZATION_SEED))


def check_binarization(binarization):
    """:raises DataError: unless ``binarization`` is one of :data:`BINARIZATIONS`."""
    if binarization not in BINARIZATIONS:
        raise DataError(f"unknown binarization {binarization!r}; choose one of {list(BINARIZATIONS)}")


class EpochBatches:
    """Minibatches of the training set, shuffled and (optionally) binarized each epoch.

    With ``"dynamic"`` binarization every epoch draws fresh binary images; with
    ``"static"`` the training set is binarized once (seed 0 of the data generator) and only
    shuffled; with ``"none"`` images are used as they are. All randomness comes from one
    :class:`torch.Generator` whose state is saved in checkpoints, so a resumed run sees
    the same batches.

    :param torch.Tensor train: ``(N, D)`` intensities in [0, 1] (on the training device).
    :param int batch_size: images per batch; the last batch of an epoch may be smaller.
    :param str binarization: one of :data:`BINARIZATIONS`.
    :param int seed: seed of the data generator.
    :param int rank: this process's rank in a data-parallel job (see
        :mod:`pyro_vae.distributed`).
    :param int world_size: the number of processes. Every rank draws the same global
        batches of ``batch_size`` images (same permutation, same binarization: the
        generators of all ranks stay equal, so one checkpointed state serves them all) and
        keeps the images ``rank, rank + world_size, ...`` of each: the ranks' shards are
        disjoint and together make the batch one process would train on. A last batch of
        fewer than ``world_size`` images is filled up by repeating its images, so that
        every rank has at least one.
    :param labels: ``(N,)`` labels of ``train``: each batch is then ``(x, y)`` (a conditional
        VAE).
    :param labelled: ``(x_l, y_l)``, a labelled subset (M2): each batch is then
        ``(x, x_l_batch, y_l_batch)``, the labelled batches of ``labelled_batch_size``
        drawn by cycling through shuffles of the subset (it is usually much smaller than
        the training set, so it is seen many times an epoch).
    :param int labelled_batch_size: default ``min(batch_size, len(x_l))``.
    :raises DataError: for ``batch_size < world_size`` or a bad binarization.
    """

    def __init__(self, train, batch_size, binarization, seed, rank=0, world_size=1, labels=None,
                 labelled=None, labelled_batch_size=None):
        check_binarization(binarization)
        if batch_size < 1:
            raise DataError(f"batch_size must be at least 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise DataError(f"rank {rank} is outside a world of {world_size} processes")
        if batch_size < world_size:
            raise DataError(f"train.batch_size ({batch_size}) is the global batch, split among "
                            f"{world_size} processes: it must be at least the number of "
                            "processes")
        self.rank, self.world_size = int(rank), int(world_size)
        self.labels = labels
        self.labelled = labelled
        if labelled is not None and binarization == "static":
            self.labelled = (binarize(labelled[0], generator=self.generator), labelled[1])
        if labelled is not None:
            n_l = labelled[0].shape[0]
            if n_l == 0:
                raise DataError("the labelled subset is empty")
            self.labelled_batch_size = min(int(labelled_batch_size or batch_size), n_l)
            if self.labelled_batch_size < world_size:
                raise DataError(f"the labelled batch ({self.labelled_batch_size}) must be at "
                                f"least the number of processes ({world_size})")
        self.train = train
        self.batch_size = int(batch_size)
        self.binarization = binarization
        self.generator = torch.Generator(device=train.device)
        self.generator.manual_seed(int(seed))
        if binarization == "static":
            self.train = binarize(train, generator=self.generator)

    def __len__(self):
        return -(-self.train.shape[0] // self.batch_size)

    def epoch(self, skip=0):
        """Yield the batches of one epoch, each ``(b, D)``: one permutation, one binarization
        (this rank's shard of each global batch when ``world_size > 1``).

        :param int skip: leave out the first ``skip`` batches (resuming inside an epoch:
            restore :meth:`get_state` as it was at the epoch's start, then skip the batches
            already trained on).
        """
        self.epoch_start_state = self.generator.get_state()
        n = self.train.shape[0]
        perm = torch.randperm(n, generator=self.generator, device=self.train.device)
        if self.labelled is not None:
            x_l, y_l = self.labelled
            b_l = self.labelled_batch_size
            cycles = -(-len(self) * b_l // x_l.shape[0])
            perm_l = torch.cat([torch.randperm(x_l.shape[0], generator=self.generator,
                                               device=x_l.device) for _ in range(cycles)])
        # batch by batch (gather, then binarize): a batch stays in cache, where binarizing
        # the whole permuted set at once streamed it through memory twice (about 0.08 s an
        # epoch on Fashion-MNIST); skipped batches still draw their noise, so the generator
        # ends where an uninterrupted epoch leaves it
        for i, start in enumerate(range(0, n, self.batch_size)):
            x = self.train[perm[start:start + self.batch_size]]
            if self.binarization == "dynamic":
                x = torch.bernoulli(x, generator=self.generator)
            batch = x
            if self.labels is not None:
                batch = (x, self.labels[perm[start:start + self.batch_size]])
            elif self.labelled is not None:
                pick = perm_l[i * b_l:(i + 1) * b_l]
                xl = x_l[pick]
                if self.binarization == "dynamic":
                    xl = torch.bernoulli(xl, generator=self.generator)
                batch = (x, xl, y_l[pick])
            if i >= skip:
                yield tuple(map(self._shard, batch)) if isinstance(batch, tuple) else \
                    self._shard(batch)

    def example(self, n=2):
        """A small batch in the form :meth:`epoch` yields (the first ``n`` images, not
        binarized; the generator is not touched), e.g. to trace the model once."""
        if self.labels is not None:
            return (self.train[:n], self.labels[:n])
        if self.labelled is not None:
            return (self.train[:n], self.labelled[0][:n], self.labelled[1][:n])
        return self.train[:n]

    def _shard(self, x):
        if self.world_size == 1:
            return x
        if x.shape[0] < self.world_size:
            x = x.repeat(-(-self.world_size // x.shape[0]), *([1] * (x.dim() - 1)))
        return x[self.rank::self.world_size]

    def get_state(self):
        """The generator state (a uint8 tensor), for checkpoints."""
        return self.generator.get_state()

    def set_state(self, state):
        """Restore a state from :meth:`get_state`."""
        self.generator.set_state(state)
