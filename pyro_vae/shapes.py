"""``shapes``: a generated dSprites-like data set of binary shapes with known factors.

Inspired by dSprites (Matthey et al. 2017, https://github.com/deepmind/dsprites-dataset),
the data set of the beta-VAE paper (Higgins et al. 2017, "beta-VAE: Learning basic visual
concepts with a constrained variational framework", ICLR); drawn here by our own
rasterizer, no file of theirs is read or copied.

Each image is one white shape (value 1) on an empty black 32x32 canvas (value 0),
``image_shape`` ``(1, 32, 32)``. Five factors, every combination exactly once, in grid
order (C order over the factors, ``y`` fastest):

=============  ======  ==============================================================
factor         values  grid
=============  ======  ==============================================================
shape          3       ``square``, ``ellipse``, ``heart``
scale          6       0.5, 0.6, ..., 1.0 (circumradius ``8.5 * scale`` pixels)
orientation    8       ``k * pi / 16`` radians, k = 0..7: a quarter turn only, since the
                       square looks the same after 90 degrees, so a full turn would give
                       two orientations the same image
x              14      centre 9.75, 10.75, ..., 22.75 pixels from the left edge
y              14      centre 9.75, 10.75, ..., 22.75 pixels from the top edge
=============  ======  ==============================================================

N = 3 * 6 * 8 * 14 * 14 = 28,224 images.

Geometry (lengths in pixels; a shape of scale ``s`` has circumradius ``R = 8.5 s``, the
largest distance from its centre to its outline):

- square: side ``sqrt(2) R``, centred;
- ellipse: semi-axes ``R`` and ``R / 2``, the major axis along x before rotation;
- heart: the region ``(u^2 + v^2 - 1)^3 - u^2 v^3 <= 0`` (v up, tip pointing down). Its
  smallest enclosing circle has centre ``(0, 1/4)`` and radius ``5/4`` (the tip at
  ``(0, -1)`` and the two lobes lie on it), so the region is shifted down by 1/4 and
  scaled by ``R / (5/4)``;
- every shape is turned counterclockwise (as seen on screen) by the orientation about
  its centre.

Rasterizing: a pixel is sampled at 4x4 sub-points; it is 1 when at least half of them
(8 of 16) lie inside the shape. The centres lie one pixel apart, so the 144 (shape,
scale, orientation) templates are drawn once on a 19x19 patch and pasted at the 196
positions: images at two positions are exact integer shifts of each other. A shape
reaches at most 8.5 px from its centre, so the outer row and column of the canvas are
never foreground (they can hold at most a quarter-pixel sliver of a shape). The whole
set draws in about 0.05 s on one CPU core.

Why this geometry: every image must be distinct, so that the factors can be recovered
from the images (the tests check all 28,224). With centres on pixel centres the pixel
grid is mirror-symmetric about the shape's centre, and the square or ellipse at
orientation k is the mirror image of the one at 8 - k; together with the coarse pixels
of the smallest shapes this made some orientations of small squares identical (e.g.
k = 2 and 3 at scale 0.5 with R = 8 s). Centres a quarter pixel right of and below a
pixel centre break that symmetry, and R = 8.5 s (the largest circumradius that keeps 14
whole-pixel positions per axis inside the canvas) separates the rest: the closest two
orientations of one shape and scale differ in 2 pixels. 32 px is thus enough for the
smallest shape (R = 4.25 px) to show all 8 orientations. The set takes
28,224 * 1024 * 4 bytes = 116 MB as float32, which fits comfortably in memory, and an
epoch over it takes seconds on 2 CPU cores.

Split (the project's protocol): a fixed permutation (``torch.Generator().manual_seed(
seed)``, seed 0 by default) of all N images, cut into 22,580 train, 2,822 validation and
2,822 test images (validation and test ``N // 10`` each, train the rest: 80/10/10 up to
rounding).

Cache: the drawn arrays are kept in-process and on disk in
``$XDG_CACHE_HOME/pyro_vae/shapes-<hash>.npz`` (``~/.cache/pyro_vae`` without
``XDG_CACHE_HOME``), ``<hash>`` naming the version and geometry. The file is written
atomically and holds a SHA-256 of the arrays; a file that does not read back exactly
(damaged, truncated, wrong shapes or checksum) is drawn again and rewritten. When the
folder cannot be written the set is just drawn.
"""

import functools
import hashlib
import math
import os
import tempfile

import numpy as np
import torch

from .errors import DataError
from .idx import cache_dir
from .images import ImageData

#: The factors' names, in the column order of the factor matrices.
FACTOR_NAMES = ("shape", "scale", "orientation", "x", "y")

#: Side of the square canvas, in pixels.
CANVAS = 32
#: Circumradius in pixels of a shape of scale 1.
RADIUS = 8.5
#: Sub-points per pixel along each axis.
SUPERSAMPLE = 4
#: Pixel index of the first centre along each axis.
FIRST_CENTRE = 9
#: Where a centre lies in its pixel, from the pixel's left (top) edge: a quarter pixel
#: right of (below) the pixel's centre, which breaks the grid's mirror symmetry.
CENTRE_IN_PIXEL = 0.75
#: Number of positions along each axis.
POSITIONS = 14

#: For each factor, the tuple of its values: shape names, scales (unitless), orientations
#: (radians, counterclockwise), x and y of the centre (pixels from the left / top edge).
FACTOR_VALUES = (
    ("square", "ellipse", "heart"),
    tuple(float(s) for s in np.linspace(0.5, 1.0, 6)),
    tuple(k * math.pi / 16 for k in range(8)),
    tuple(FIRST_CENTRE + i + CENTRE_IN_PIXEL for i in range(POSITIONS)),
    tuple(FIRST_CENTRE + i + CENTRE_IN_PIXEL for i in range(POSITIONS)),
)

#: Number of images: one per combination of factor values.
N_IMAGES = math.prod(len(v) for v in FACTOR_VALUES)
#: Images in the validation split and in the test split (train holds the rest).
N_HELD_OUT = N_IMAGES // 10

#: Bumped whenever the drawing changes, so that no stale cache file is read.
VERSION = 1
# a template patch reaches this many pixels either side of the centre's pixel
_HALF = math.ceil(RADIUS + abs(CENTRE_IN_PIXEL - 0.5))
_GEOMETRY = (VERSION, CANVAS, RADIUS, SUPERSAMPLE, FIRST_CENTRE, CENTRE_IN_PIXEL, POSITIONS,
             FACTOR_VALUES)
#: Names the cache file: first 12 hex digits of a SHA-256 of the version and geometry.
GEOMETRY_HASH = hashlib.sha256(repr(_GEOMETRY).encode()).hexdigest()[:12]


def _inside(shape, u, v, radius):
    """Boolean mask: which points ``(u, v)`` (pixels, shape's own frame, v up) lie inside
    ``shape`` of circumradius ``radius``."""
    if shape == "square":
        half = radius / math.sqrt(2.0)
        return (np.abs(u) <= half) & (np.abs(v) <= half)
    if shape == "ellipse":
        return (u / radius) ** 2 + (v / (radius / 2.0)) ** 2 <= 1.0
    if shape == "heart":
        unit = radius / 1.25              # curve units -> pixels
        hu, hv = u / unit, v / unit + 0.25  # the enclosing circle's centre at the origin
        return (hu * hu + hv * hv - 1.0) ** 3 - hu * hu * hv ** 3 <= 0.0
    raise ValueError(f"unknown shape {shape!r}")


def _template(shape, scale, angle):
    """The ``(2 h + 1, 2 h + 1)`` bool patch of one shape whose centre lies in the middle
    pixel at :data:`CENTRE_IN_PIXEL` (rows downward, columns rightward)."""
    side = 2 * _HALF + 1
    sub = (np.arange(SUPERSAMPLE) + 0.5) / SUPERSAMPLE - 0.5
    shift = CENTRE_IN_PIXEL - 0.5   # from the middle pixel's centre to the shape's centre
    offsets = (np.arange(side)[:, None] - _HALF + sub[None, :]).reshape(-1) - shift
    dx = offsets[None, :]        # rightward, one column per sub-point column
    dy = -offsets[:, None]       # upward, one row per sub-point row
    cos, sin = math.cos(angle), math.sin(angle)
    u = cos * dx + sin * dy      # rotate the point by -angle = the shape by +angle
    v = -sin * dx + cos * dy
    mask = _inside(shape, u, v, RADIUS * scale)
    counts = mask.reshape(side, SUPERSAMPLE, side, SUPERSAMPLE).sum(axis=(1, 3))
    return counts * 2 >= SUPERSAMPLE * SUPERSAMPLE


def draw_shapes():
    """Draw every image of the data set afresh, in grid order (no cache).

    :returns: ``(images, factors)``: ``images`` a bool array ``(N, 32, 32)`` (rows from
        the top, True = foreground), ``factors`` an int64 array ``(N, 5)`` of indices into
        :data:`FACTOR_VALUES`, columns as in :data:`FACTOR_NAMES`, rows in C order over
        the factors (``y`` varies fastest); ``N`` = 28,224. The same bytes on every call.
    :raises: nothing for the built-in geometry.

    Source: our own rasterizer of dSprites-like shapes (Matthey et al. 2017,
    https://github.com/deepmind/dsprites-dataset; Higgins et al. 2017, beta-VAE).
    """
    sizes = tuple(len(v) for v in FACTOR_VALUES)
    patches = np.stack([_template(shape, scale, angle) for shape in FACTOR_VALUES[0]
                        for scale in FACTOR_VALUES[1] for angle in FACTOR_VALUES[2]])
    images = np.zeros((patches.shape[0], POSITIONS, POSITIONS, CANVAS, CANVAS), dtype=bool)
    side = patches.shape[-1]
    for ix in range(POSITIONS):
        col = FIRST_CENTRE + ix - _HALF
        for iy in range(POSITIONS):
            row = FIRST_CENTRE + iy - _HALF
            images[:, ix, iy, row:row + side, col:col + side] = patches
    factors = np.stack(np.meshgrid(*[np.arange(n) for n in sizes], indexing="ij"), axis=-1)
    return images.reshape(N_IMAGES, CANVAS, CANVAS), factors.reshape(N_IMAGES, 5).astype(np.int64)


def cache_path():
    """The cache file's path: ``$XDG_CACHE_HOME/pyro_vae/shapes-<GEOMETRY_HASH>.npz``
    (``~/.cache/pyro_vae`` without ``XDG_CACHE_HOME``). It may not exist."""
    return cache_dir() / f"shapes-{GEOMETRY_HASH}.npz"


def _checksum(images, factors):
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(images, dtype=np.uint8).tobytes())
    h.update(np.ascontiguousarray(factors, dtype="<i8").tobytes())
    return np.frombuffer(h.digest(), dtype=np.uint8)


def _read_cache(path):
    """The arrays stored at ``path``, or ``None`` when it is missing or not exactly what
    :func:`_write_cache` wrote (damaged, truncated, other shapes, wrong checksum)."""
    try:
        with np.load(path, allow_pickle=False) as f:
            packed, factors, digest = f["images"], f["factors"], f["sha256"]
        if packed.dtype != np.uint8 or packed.shape != (N_IMAGES, CANVAS * CANVAS // 8) \
                or factors.dtype != np.int64 or factors.shape != (N_IMAGES, 5):
            return None
        images = np.unpackbits(packed, axis=1).reshape(N_IMAGES, CANVAS, CANVAS).astype(bool)
        if not np.array_equal(digest, _checksum(images, factors)):
            return None
        return images, factors
    except Exception:  # noqa: BLE001 - any unreadable file is drawn again
        return None


def _write_cache(path, images, factors):
    """Write the arrays atomically to ``path`` (a temporary file in the same folder, then
    ``os.replace``); return False, and leave nothing behind, when that fails."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            np.savez(f, images=np.packbits(images.reshape(N_IMAGES, -1), axis=1),
                     factors=factors, sha256=_checksum(images, factors))
        os.replace(tmp, path)
        return True
    except OSError:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        return False


@functools.lru_cache(maxsize=1)
def _arrays():
    """:func:`draw_shapes`'s arrays, read-only, from memory, the disk cache or drawn."""
    path = cache_path()
    arrays = _read_cache(path)
    if arrays is None:
        arrays = draw_shapes()
        _write_cache(path, *arrays)
    for a in arrays:
        a.setflags(write=False)
    return arrays


def load_shapes(seed=0):
    """The ``shapes`` data set as :class:`~pyro_vae.images.ImageData`.

    :param int seed: seed of the fixed permutation that splits the images (the project's
        protocol: ``torch.randperm(N, generator=torch.Generator().manual_seed(seed))``).
    :returns: :class:`ImageData` named ``shapes`` with float32 0/1 images flattened to
        ``(n, 1024)``, ``image_shape`` ``(1, 32, 32)``, 22,580 train, 2,822 validation and
        2,822 test images; labels = the shape index (0 square, 1 ellipse, 2 heart);
        factors ``(n, 5)`` int64 indices into ``factor_values`` (:data:`FACTOR_VALUES`),
        named by ``factor_names`` (:data:`FACTOR_NAMES`).
    :raises DataError: if ``seed`` is not an integer.

    The images are drawn by :func:`draw_shapes` (or read from the cache, bit-identical).
    Source: dSprites-like shapes (Matthey et al. 2017,
    https://github.com/deepmind/dsprites-dataset; Higgins et al. 2017, beta-VAE).
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise DataError(f"shapes: the split seed must be an integer, got {seed!r}")
    images, factors = _arrays()
    perm = torch.randperm(N_IMAGES, generator=torch.Generator().manual_seed(int(seed))).numpy()
    n_train = N_IMAGES - 2 * N_HELD_OUT
    parts = (perm[:n_train], perm[n_train:n_train + N_HELD_OUT], perm[n_train + N_HELD_OUT:])
    splits = [torch.from_numpy(images[p].reshape(len(p), -1).astype(np.float32)) for p in parts]
    facts = [torch.from_numpy(factors[p]) for p in parts]
    return ImageData(
        "shapes", *splits, (1, CANVAS, CANVAS), "pyro_vae.shapes (generated)",
        *[f[:, 0].clone() for f in facts], *facts,
        factor_names=FACTOR_NAMES, factor_values=FACTOR_VALUES)
