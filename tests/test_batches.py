"""The training batches: binarization settings, labelled subsets (M2), seeding."""

import pytest
import torch
import torch.nn.functional as F

from pyro_vae import cli
from pyro_vae.batches import EpochBatches


def labelled_subset():
    """Six labelled images whose first three pixels (0 or 1, unchanged by binarization)
    spell their label; the other nine are grey (0.5)."""
    y_l = torch.arange(6) % 3
    x_l = torch.cat([F.one_hot(y_l, 3).float(), torch.full((6, 9), 0.5)], 1)
    return x_l, y_l


def test_static_binarization_of_a_labelled_subset():
    """M2 with static binarization: the labelled subset is binarized once, like the
    training set, and each label stays with its image (issue 15: this raised
    AttributeError)."""
    train = torch.full((40, 12), 0.5)
    x_l, y_l = labelled_subset()
    b = EpochBatches(train, 10, "static", seed=2, labelled=(x_l, y_l), labelled_batch_size=4)
    epochs = [list(b.epoch()) for _ in range(2)]
    for epoch in epochs:
        assert len(epoch) == 4
        for x, xl, yl in epoch:
            assert x.shape == (10, 12) and xl.shape == (4, 12) and yl.shape == (4,)
            assert set(xl.unique().tolist()) <= {0.0, 1.0}
            assert torch.equal(xl[:, :3].argmax(1), yl)
    # one binarization: every epoch shows the same binary labelled images, reordered
    seen = [torch.cat([xl for _, xl, _ in epoch]).unique(dim=0) for epoch in epochs]
    assert torch.equal(seen[0], seen[1])
    assert torch.equal(torch.cat([x for x, _, _ in epochs[0]]).sum(0),
                       torch.cat([x for x, _, _ in epochs[1]]).sum(0))
    # seeded: the same seed gives the same batches
    again = EpochBatches(train, 10, "static", seed=2, labelled=(x_l, y_l), labelled_batch_size=4)
    assert all(torch.equal(a, c) for a, c in zip(next(again.epoch()), epochs[0][0]))


def test_dynamic_binarization_of_a_labelled_subset_changes_each_epoch():
    x_l, y_l = labelled_subset()
    b = EpochBatches(torch.full((40, 12), 0.5), 10, "dynamic", seed=2, labelled=(x_l, y_l),
                     labelled_batch_size=6)
    first, second = (next(b.epoch()) for _ in range(2))
    assert set(first[1].unique().tolist()) == {0.0, 1.0}
    assert torch.equal(first[1][:, :3].argmax(1), first[2])
    assert not torch.equal(first[1][first[2].argsort(stable=True)],
                           second[1][second[2].argsort(stable=True)])


@pytest.mark.slow
def test_m2_trains_with_static_binarization(tmp_path):
    out = tmp_path / "m2"
    assert cli.main(["train", "m2", "--labels", "20", "--epochs", "1", "--quiet", "--device",
                     "cpu", "--out", str(out), "--set", 'data.binarization="static"',
                     "--set", "model.hidden=[16]", "--set", "model.classifier_hidden=[16]",
                     "--set", "eval.k=2"]) == 0
    assert (out / "checkpoint.pt").is_file()
