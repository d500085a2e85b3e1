"""TensorBoard monitoring of runs (issue 16): scalars per epoch, sample grids every N
epochs, a one-line note without TensorBoard, nothing written by other ranks."""

import json

import pytest

from pyro_vae import cli
from pyro_vae import monitor as M
from tiny_runs import TINY_SETTINGS

TINY = [*TINY_SETTINGS, "--set", "eval.k=5"]


def events(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def test_a_run_writes_its_metrics_and_samples_to_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    out = tmp_path / "r"
    assert cli.main(["train", "--out", str(out), *TINY, "--epochs", "4",
                     "--set", "train.samples_every=2", "--set", "model.latent_dim=[4, 2]"]) == 0
    acc = events(out)
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    train = acc.Scalars("elbo/train")
    assert [e.step for e in train] == [1, 2, 3, 4]
    assert [e.value for e in train] == pytest.approx([m["train_elbo"] for m in metrics])
    for tag in ("elbo/validation", "validation/reconstruction", "kl/z1", "kl/z2",
                "train/lr", "train/kl_weight"):
        assert len(acc.Scalars(tag)) == 4, tag
    assert [e.step for e in acc.Images("samples")] == [2, 4]


def test_a_resumed_run_keeps_one_event_per_epoch(tmp_path):
    pytest.importorskip("tensorboard")
    out = tmp_path / "r"
    assert cli.main(["train", "--out", str(out), *TINY, "--epochs", "2"]) == 0
    assert cli.main(["train", "--resume", str(out), "--epochs", "3", "--quiet"]) == 0
    assert [e.step for e in events(out).Scalars("elbo/train")] == [1, 2, 3]


def test_without_tensorboard_one_line_and_no_files(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(M, "tensorboard_writer", lambda folder, purge_step=None: None)
    monitor = M.Monitor(tmp_path, 1, (1, 8, 8))
    monitor.log_epoch({"epoch": 1, "train_elbo": -3.0})
    monitor.close()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "TensorBoard is not installed" in err
    assert list(tmp_path.iterdir()) == []
    M.Monitor(tmp_path, enabled=False)  # other ranks, or train.tensorboard = false
    assert capsys.readouterr().err == ""


def test_tensorboard_can_be_switched_off(tmp_path):
    out = tmp_path / "r"
    assert cli.main(["train", "--out", str(out), *TINY, "--epochs", "1",
                     "--set", "train.tensorboard=false"]) == 0
    assert not list(out.glob("events.out.tfevents.*"))
