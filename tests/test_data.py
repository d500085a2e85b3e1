import gzip

import numpy as np
import pytest
import torch

from pyro_vae import batches, datasets, idx
from pyro_vae.errors import DataError


def write_idx(path, images, magic=0x00000803, truncate=0, gz=False):
    images = np.asarray(images, dtype=np.uint8)
    header = b"".join(int(v).to_bytes(4, "big") for v in (magic, *images.shape))
    raw = header + images.tobytes()
    if truncate:
        raw = raw[:-truncate]
    if gz:
        with gzip.open(path, "wb") as f:
            f.write(raw)
    else:
        path.write_bytes(raw)
    return path


def fake_idx_folder(folder, n_train=10005, n_test=7, gz=True):
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    write_idx(folder / f"train-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n_train, 4, 3)), gz=gz)
    write_idx(folder / f"t10k-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n_test, 4, 3)), gz=gz)
    return folder


def test_digits_splits():
    d = datasets.load_dataset("digits")
    assert d.train.shape == (1200, 64) and d.validation.shape == (300, 64) and d.test.shape == (297, 64)
    assert d.image_shape == (1, 8, 8) and d.event_shape == (64,)
    assert float(d.train.min()) == 0.0 and float(d.train.max()) == 1.0
    assert not d.is_binary
    # the split is fixed
    assert torch.equal(datasets.load_dataset("digits").test, d.test)


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(DataError, match=r"unknown data set 'cifar'.*digits.*fashion-mnist.*mnist"):
        datasets.load_dataset("cifar")


@pytest.mark.parametrize("gz", [True, False])
def test_idx_roundtrip_and_protocol_split(tmp_path, gz):
    fake_idx_folder(tmp_path, gz=gz)
    d = datasets.load_dataset("mnist", data_dir=tmp_path)
    assert d.train.shape == (5, 12) and d.validation.shape == (10000, 12) and d.test.shape == (7, 12)
    assert d.image_shape == (1, 4, 3)
    raw = idx.read_idx_images(tmp_path / ("train-images-idx3-ubyte" + (".gz" if gz else "")))
    assert torch.allclose(d.train, torch.from_numpy(raw[:5].reshape(5, -1) / 255.0).float())
    assert torch.allclose(d.validation, torch.from_numpy(raw[5:].reshape(10000, -1) / 255.0).float())


def test_search_order_env_and_torchvision_layout(tmp_path, monkeypatch):
    fake_idx_folder(tmp_path / "env" / "FashionMNIST" / "raw")
    monkeypatch.setenv("PYRO_VAE_DATA", str(tmp_path / "env"))
    train, test = idx.find_idx_files(idx.IDX_SOURCES["fashion-mnist"])
    assert train.parent == tmp_path / "env" / "FashionMNIST" / "raw"
    # an explicit data_dir comes first
    fake_idx_folder(tmp_path / "explicit")
    train, _ = idx.find_idx_files(idx.IDX_SOURCES["fashion-mnist"], tmp_path / "explicit")
    assert train.parent == tmp_path / "explicit"


def test_missing_files_say_where_and_how(tmp_path, monkeypatch):
    monkeypatch.setattr(idx, "IDX_SOURCES", {**idx.IDX_SOURCES, "fashion-mnist": idx.IDXSource(
        "fashion-mnist", ("", "fashion-mnist"), "FashionMNIST", (tmp_path / "debian",),
        idx.IDX_SOURCES["fashion-mnist"].how_to_get)})
    (tmp_path / "mine").mkdir()
    with pytest.raises(DataError) as e:
        datasets.load_dataset("fashion-mnist")
    msg = str(e.value)
    assert str(idx.cache_dir()) in msg and str(tmp_path / "debian") in msg
    assert "apt-get install dataset-fashion-mnist" in msg and "--download" in msg
    with pytest.raises(DataError, match="Looked in") as e:
        datasets.load_dataset("mnist", data_dir=tmp_path / "mine")
    assert str(tmp_path / "mine") in str(e.value) and "only --data-dir" in str(e.value)


def test_idx_wrong_magic(tmp_path):
    p = write_idx(tmp_path / "x-idx3-ubyte", np.zeros((2, 3, 3)), magic=0x00000801)
    with pytest.raises(DataError, match="magic number 0x00000801"):
        idx.read_idx_images(p)


def test_idx_truncated(tmp_path):
    p = write_idx(tmp_path / "x-idx3-ubyte", np.zeros((2, 3, 3)), truncate=5)
    with pytest.raises(DataError, match="truncated"):
        idx.read_idx_images(p)
    short = tmp_path / "short"
    short.write_bytes(b"\x00\x00\x08")
    with pytest.raises(DataError, match="too short"):
        idx.read_idx_images(short)


def test_idx_zero_sizes(tmp_path):
    p = tmp_path / "zero"
    p.write_bytes(b"".join(int(v).to_bytes(4, "big") for v in (0x803, 0, 28, 28)))
    with pytest.raises(DataError, match="non-zero sizes"):
        idx.read_idx_images(p)


def test_idx_corrupt_gzip(tmp_path):
    p = tmp_path / "train-images-idx3-ubyte.gz"
    raw = gzip.compress(b"\x00" * 1000)
    p.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="truncated or corrupt"):
        idx.read_idx_images(p)


def test_idx_gzip_with_corrupt_deflate_data(tmp_path):
    p = tmp_path / "train-images-idx3-ubyte.gz"
    raw = bytearray(gzip.compress(bytes(range(256)) * 40))
    raw[20:40] = b"\xff" * 20  # inside the deflate stream
    p.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="cannot read the file"):
        idx.read_idx_images(p)


def test_idx_too_few_training_images(tmp_path):
    fake_idx_folder(tmp_path, n_train=100)
    with pytest.raises(DataError, match="more than 10,000"):
        datasets.load_dataset("mnist", data_dir=tmp_path)


def test_npz_loading(tmp_path):
    rng = np.random.default_rng(0)
    p = tmp_path / "mine.npz"
    np.savez(p, train=rng.integers(0, 256, (20, 5, 5), dtype=np.uint8),
             test=rng.integers(0, 256, (4, 5, 5), dtype=np.uint8))
    d = datasets.load_dataset(str(p))
    assert d.train.shape == (18, 25) and d.validation.shape == (2, 25) and d.test.shape == (4, 25)
    assert d.image_shape == (1, 5, 5) and d.name == "mine"
    np.savez(p, train=rng.random((6, 3)), validation=rng.random((2, 3)), test=rng.random((2, 3)))
    d = datasets.load_dataset(str(p))
    assert d.validation.shape == (2, 3) and d.train.dtype == torch.float32
    assert d.image_shape == (1, 1, 3)
    np.savez(p, train=rng.random((6, 16)), test=rng.random((2, 16)))  # square: shown as 4x4
    assert datasets.load_dataset(str(p)).image_shape == (1, 4, 4)


def test_npz_missing_arrays(tmp_path):
    p = tmp_path / "bad.npz"
    np.savez(p, images=np.zeros((3, 4)))
    with pytest.raises(DataError, match=r"missing array\(s\) \['train', 'test'\]; found \['images'\]"):
        datasets.load_dataset(str(p))


def test_npz_not_a_zip(tmp_path):
    p = tmp_path / "bad.npz"
    p.write_bytes(b"not a zip file at all")
    with pytest.raises(DataError, match="not a .npz file .a .npz is a zip archive"):
        datasets.load_dataset(str(p))
    with pytest.raises(DataError, match="no such file"):
        datasets.load_dataset(str(tmp_path / "absent.npz"))


def test_npz_mismatched_shapes(tmp_path):
    p = tmp_path / "bad.npz"
    np.savez(p, train=np.zeros((5, 4, 4)), test=np.zeros((2, 3, 3)))
    with pytest.raises(DataError, match="'test' has images of shape"):
        datasets.load_dataset(str(p))


@pytest.mark.parametrize("bad, match", [
    (np.full((5, 4), 1.5), "values must lie in \\[0, 1\\].*max 1.5"),
    (np.full((5, 4), -0.1), "values must lie in \\[0, 1\\].*min -0.1"),
    (np.array([[0.1, np.nan]] * 5), "NaN"),
])
def test_values_outside_unit_interval_or_nan(tmp_path, bad, match):
    p = tmp_path / "bad.npz"
    np.savez(p, train=bad, test=np.zeros((2, bad.shape[1])))
    with pytest.raises(DataError, match=match):
        datasets.load_dataset(str(p))


def test_empty_split(tmp_path):
    p = tmp_path / "empty.npz"
    np.savez(p, train=np.zeros((5, 4)), test=np.zeros((0, 4)))
    with pytest.raises(DataError, match="non-empty"):
        datasets.load_dataset(str(p))


def test_test_binarization_is_fixed_by_seed_777():
    d = datasets.load_dataset("digits")
    _, test1 = batches.prepare_eval_splits(d, "dynamic")
    _, test2 = batches.prepare_eval_splits(d, "static")
    assert torch.equal(test1, test2)
    assert torch.equal(test1, torch.bernoulli(d.test, generator=torch.Generator().manual_seed(777)))
    assert set(test1.unique().tolist()) == {0.0, 1.0}
    val, test = batches.prepare_eval_splits(d, "none")
    assert torch.equal(test, d.test)
    with pytest.raises(DataError, match="unknown binarization 'otsu'"):
        batches.prepare_eval_splits(d, "otsu")


def test_dynamic_binarization_changes_each_epoch_and_is_seeded():
    x = torch.full((50, 10), 0.5)
    b = batches.EpochBatches(x, 20, "dynamic", seed=3)
    e1 = torch.cat(list(b.epoch()))
    e2 = torch.cat(list(b.epoch()))
    assert [t.shape[0] for t in batches.EpochBatches(x, 20, "dynamic", 3).epoch()] == [20, 20, 10]
    assert set(e1.unique().tolist()) == {0.0, 1.0}
    assert not torch.equal(e1, e2)
    b2 = batches.EpochBatches(x, 20, "dynamic", seed=3)
    assert torch.equal(torch.cat(list(b2.epoch())), e1)
    state = b2.get_state()
    after = torch.cat(list(b2.epoch()))
    b2.set_state(state)
    assert torch.equal(torch.cat(list(b2.epoch())), after)


def test_static_binarization_fixed_across_epochs():
    x = torch.rand(30, 6)
    b = batches.EpochBatches(x, 30, "static", seed=1)
    e1, e2 = next(b.epoch()), next(b.epoch())
    # same binary images, only reordered
    assert torch.equal(e1.sum(0), e2.sum(0))


FMNIST = idx.DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz"


@pytest.mark.skipif(not FMNIST.exists(),
                    reason="real Fashion-MNIST absent: apt-get install dataset-fashion-mnist")
def test_real_fashion_mnist_protocol_split():
    d = datasets.load_dataset("fashion-mnist")
    assert d.train.shape == (50000, 784)
    assert d.validation.shape == (10000, 784)
    assert d.test.shape == (10000, 784)
    assert d.image_shape == (1, 28, 28)
    assert 0.0 <= float(d.train.min()) and float(d.train.max()) <= 1.0
    # Debian's package ships the label files beside the images: ten balanced classes
    assert d.test_labels.bincount().tolist() == [1000] * 10
    assert (d.train_labels.bincount() + d.validation_labels.bincount()).tolist() == [6000] * 10


def test_labels_follow_their_images():
    from sklearn.datasets import load_digits as sk_digits

    from pyro_vae.datasets import load_dataset

    data = load_dataset("digits")
    bunch = sk_digits()
    images = torch.from_numpy(bunch.images.reshape(-1, 64).astype("float32") / 16)
    for split in ("train", "validation", "test"):
        x, y = getattr(data, split), getattr(data, f"{split}_labels")
        assert y.shape == (x.shape[0],) and y.dtype == torch.int64
        # each image's label is the label sklearn gives that same image
        for row in range(3):
            match = (images == x[row]).all(1).nonzero().flatten()
            assert int(bunch.target[int(match[0])]) == int(y[row])


def test_idx_labels_are_read_and_checked(tmp_path):
    import gzip

    from pyro_vae.idx import read_idx_labels
    from pyro_vae.errors import DataError

    path = tmp_path / "l.gz"
    with gzip.open(path, "wb") as f:
        f.write((0x801).to_bytes(4, "big") + (3).to_bytes(4, "big") + bytes([7, 0, 9]))
    assert read_idx_labels(path).tolist() == [7, 0, 9]
    bad = tmp_path / "bad"
    bad.write_bytes((0x801).to_bytes(4, "big") + (5).to_bytes(4, "big") + bytes([1]))
    with pytest.raises(DataError, match="promises 5 labels"):
        read_idx_labels(bad)
    bad.write_bytes((0x803).to_bytes(4, "big") + (1).to_bytes(4, "big") + bytes([1]))
    with pytest.raises(DataError, match="not an IDX label file"):
        read_idx_labels(bad)


def test_keep_classes_filters_training_only():
    from pyro_vae.datasets import keep_classes, load_dataset

    data = load_dataset("digits")
    kept = keep_classes(data, [0, 7])
    assert set(kept.train_labels.tolist()) == {0, 7} and set(kept.validation_labels.tolist()) == {0, 7}
    assert kept.train.shape[0] == int(((data.train_labels == 0) | (data.train_labels == 7)).sum())
    assert torch.equal(kept.test, data.test)
    with pytest.raises(DataError, match="no train image has a label in \\[42\\]"):
        keep_classes(data, [42])
    unlabelled = keep_classes.__globals__["dataclasses"].replace(data, train_labels=None)
    with pytest.raises(DataError, match="has no labels"):
        keep_classes(unlabelled, [1])


def test_keep_classes_keeps_each_image_with_its_factors():
    from pyro_vae.datasets import keep_classes, load_dataset

    data = load_dataset("shapes")
    kept = keep_classes(data, [2])  # hearts only
    assert (kept.train_labels == 2).all() and (kept.train_factors[:, 0] == 2).all()
    assert kept.train_factors.shape[0] == kept.train.shape[0]
    assert kept.validation_factors.shape[0] == kept.validation.shape[0]
    assert torch.equal(kept.test_factors, data.test_factors)
