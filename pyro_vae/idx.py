"""MNIST and Fashion-MNIST from IDX files, found where the user or the system put them.

Files: ``train-images-idx3-ubyte[.gz]`` and ``t10k-images-idx3-ubyte[.gz]`` (labels
``*-labels-idx1-ubyte`` beside them, optional). Split as in the published tables
(VampPrior, Tomczak & Welling 2018, arXiv:1705.07120): train = first 50,000 training images,
validation = last 10,000, test = the 10,000 test images.

Where the files are looked for: an explicit ``data_dir`` and nowhere else; without it,
``$PYRO_VAE_DATA``, the cache folder (``$XDG_CACHE_HOME/pyro_vae`` or
``~/.cache/pyro_vae``) and, for Fashion-MNIST, Debian's ``/usr/share/datasets/fashion-mnist``.
In each folder the files may lie directly, under the data set's name, or in torchvision's
``<Class>/raw`` layout. Nothing is downloaded unless ``download=True`` (then torchvision
fetches the files).
"""

import gzip
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import DataError
from .images import ImageData, as_unit_float

#: Debian's package ``dataset-fashion-mnist`` puts the IDX files here.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


_IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions


def _read_bytes(path):
    """The bytes of an IDX file, decompressed when it ends in ``.gz``.

    :raises DataError: if it cannot be read or decompressed."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: cannot read the file ({e}); it may be truncated or corrupt. "
                        "Delete it and fetch it again") from None


def read_idx_images(path):
    """Read an IDX image file (``.gz`` or raw) into a uint8 array of shape ``(N, H, W)``.

    Format: a 4-byte big-endian magic number ``0x00000803`` (unsigned bytes, 3 dims),
    three 4-byte big-endian sizes, then ``N*H*W`` bytes (LeCun et al., the MNIST format).

    :param path: the file.
    :raises DataError: if the file cannot be decompressed, has a wrong magic number,
        zero sizes, or fewer or more bytes than its header says.
    """
    path = Path(path)
    raw = _read_bytes(path)
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
    raw = _read_bytes(path)
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
    train_t = as_unit_float(train, name).reshape(train.shape[0], -1)
    test_t = as_unit_float(test, name).reshape(test.shape[0], -1)
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
