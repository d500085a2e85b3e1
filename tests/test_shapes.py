"""The generated ``shapes`` data set: grid, determinism, cache, recoverable factors."""

import math

import numpy as np
import pytest
import torch

from pyro_vae import shapes
from pyro_vae.datasets import load_dataset
from pyro_vae.errors import DataError

GRID = (3, 6, 8, 14, 14)


@pytest.fixture(scope="module")
def drawn():
    return shapes.draw_shapes()


@pytest.fixture
def cache_home(monkeypatch, tmp_path):
    """A fresh cache folder and an empty in-process cache, emptied again afterwards."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    shapes._arrays.cache_clear()
    yield tmp_path / "pyro_vae"
    shapes._arrays.cache_clear()


def test_draw_is_deterministic_and_cached_arrays_are_bit_identical(drawn, cache_home,
                                                                   monkeypatch):
    images, factors = drawn
    again = shapes.draw_shapes()
    assert images.tobytes() == again[0].tobytes() and factors.tobytes() == again[1].tobytes()
    first = shapes._arrays()                       # drawn, then written to the disk cache
    path = shapes.cache_path()
    assert path.parent == cache_home and path.is_file()
    assert path.name == f"shapes-{shapes.GEOMETRY_HASH}.npz"
    assert not list(cache_home.glob("*.tmp"))      # the temporary file was renamed
    assert shapes._arrays() is first               # in-process cache
    shapes._arrays.cache_clear()

    def no_drawing():
        raise AssertionError("drew instead of reading the cache")

    monkeypatch.setattr(shapes, "draw_shapes", no_drawing)
    from_disk = shapes._arrays()
    for a, b in zip((images, factors), from_disk):
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    assert not from_disk[0].flags.writeable        # nobody can change the cached arrays


def test_every_factor_combination_once_in_grid_order(drawn):
    images, factors = drawn
    n = math.prod(GRID)
    assert n == shapes.N_IMAGES == 28224
    assert images.shape == (n, 32, 32) and images.dtype == np.bool_
    assert factors.shape == (n, 5) and factors.dtype == np.int64
    assert len(np.unique(factors, axis=0)) == n
    assert np.array_equal(factors, np.indices(GRID).reshape(5, -1).T)
    assert tuple(len(v) for v in shapes.FACTOR_VALUES) == GRID
    assert shapes.FACTOR_NAMES == ("shape", "scale", "orientation", "x", "y")
    assert shapes.FACTOR_VALUES[0] == ("square", "ellipse", "heart")
    assert np.allclose(shapes.FACTOR_VALUES[1], np.linspace(0.5, 1.0, 6))
    assert np.allclose(shapes.FACTOR_VALUES[2], np.arange(8) * np.pi / 16)
    assert max(shapes.FACTOR_VALUES[2]) < np.pi / 2


def test_splits_partition_the_images(cache_home):
    data = shapes.load_shapes()
    assert data.name == "shapes" and data.image_shape == (1, 32, 32)
    assert data.source == "pyro_vae.shapes (generated)"
    sizes = [getattr(data, s).shape[0] for s in ("train", "validation", "test")]
    assert sizes == [22580, 2822, 2822] and sum(sizes) == 28224
    facts = torch.cat([data.train_factors, data.validation_factors, data.test_factors])
    assert len(np.unique(facts.numpy(), axis=0)) == 28224    # disjoint, and all of them
    for split in ("train", "validation", "test"):
        x, f = getattr(data, split), getattr(data, f"{split}_factors")
        assert x.dtype == torch.float32 and x.shape[1] == 1024
        assert torch.equal(getattr(data, f"{split}_labels"), f[:, 0])
    assert data.is_binary and data.has_factors
    assert data.factor_names == shapes.FACTOR_NAMES and data.factor_values == shapes.FACTOR_VALUES
    # each row shows the image of its factors
    images, _ = shapes._arrays()
    flat_index = np.ravel_multi_index(tuple(data.test_factors.numpy().T), GRID)
    assert np.array_equal(data.test.numpy().reshape(-1, 32, 32), images[flat_index])
    # the split is a fixed seeded permutation
    same, other = shapes.load_shapes(0), shapes.load_shapes(1)
    assert torch.equal(same.test_factors, data.test_factors)
    assert not torch.equal(other.test_factors, data.test_factors)
    with pytest.raises(DataError, match="integer"):
        shapes.load_shapes("0")


def test_factors_are_recoverable_from_the_images(drawn):
    images, _ = drawn
    packed = np.packbits(images.reshape(len(images), -1), axis=1)
    assert len(np.unique(packed, axis=0)) == len(images)          # all distinct
    grid = images.reshape(*GRID, 32, 32).astype(np.float64)
    mass = grid.sum(axis=(-1, -2))
    cols = (grid.sum(axis=-2) * np.arange(32)).sum(axis=-1) / mass
    rows = (grid.sum(axis=-1) * np.arange(32)).sum(axis=-1) / mass
    assert np.allclose(np.diff(cols, axis=3), 1.0)    # one pixel right per x step
    assert np.allclose(np.diff(rows, axis=4), 1.0)    # one pixel down per y step
    assert np.allclose(np.diff(cols, axis=4), 0.0) and np.allclose(np.diff(rows, axis=3), 0.0)
    assert (np.diff(mass, axis=1) > 0).all()          # bigger with scale


def test_images_are_binary_inside_the_canvas_with_the_analytic_area(drawn):
    images, factors = drawn
    assert images.reshape(len(images), -1).sum(axis=1).min() > 0
    assert not (images[:, 0].any() or images[:, -1].any()
                or images[:, :, 0].any() or images[:, :, -1].any())
    counts = images.reshape(*GRID, -1).sum(axis=-1)
    area_per_r2 = {"square": 2.0, "ellipse": np.pi / 2, "heart": 3.6608 / 1.25 ** 2}
    for i, name in enumerate(shapes.FACTOR_VALUES[0]):
        for j, scale in enumerate(shapes.FACTOR_VALUES[1]):
            area = area_per_r2[name] * (shapes.RADIUS * scale) ** 2
            c = counts[i, j]
            assert np.abs(c - area).max() <= 0.12 * area + 1, (name, scale, c.min(), c.max())
    # an upright square is a filled block; an upright heart points down
    square = images[np.ravel_multi_index((0, 5, 0, 6, 6), GRID)]
    r, c = np.nonzero(square)
    assert square.sum() == (np.ptp(r) + 1) * (np.ptp(c) + 1)
    heart = images[np.ravel_multi_index((2, 5, 0, 6, 6), GRID)]
    widths = heart.sum(axis=1)
    filled = np.nonzero(widths)[0]
    assert widths.argmax() < filled.mean() and widths[filled[-1]] < widths[filled[0]] + 3


@pytest.mark.parametrize("damage", ["garbage", "truncated", "stale checksum", "wrong shape"])
def test_a_damaged_cache_file_is_redrawn(drawn, cache_home, damage):
    shapes._arrays()
    path = shapes.cache_path()
    if damage == "garbage":
        path.write_bytes(b"not a cache file")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:1000])
    else:
        with np.load(path) as f:
            arrays = {k: f[k] for k in f.files}
        if damage == "stale checksum":
            arrays["images"][123, 4] ^= 1
        else:
            arrays["images"] = arrays["images"][:-1]
        with open(path, "wb") as f:
            np.savez(f, **arrays)
    shapes._arrays.cache_clear()
    images, factors = shapes._arrays()
    assert images.tobytes() == drawn[0].tobytes() and factors.tobytes() == drawn[1].tobytes()
    assert shapes._read_cache(path) is not None        # rewritten, and sound now


def test_an_unwritable_cache_folder_just_draws(drawn, cache_home, monkeypatch):
    blocker = cache_home.parent / "a_file"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))   # pyro_vae/ cannot be made in a file
    images, _ = shapes._arrays()
    assert images.tobytes() == drawn[0].tobytes()
    assert not shapes.cache_path().exists()


def test_load_dataset_by_name(cache_home):
    data = load_dataset("shapes")
    assert data.name == "shapes" and data.train.shape == (22580, 1024)
    assert data.has_factors and data.train_factors.shape == (22580, 5)
