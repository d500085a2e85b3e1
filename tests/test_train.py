import json

import pytest
import torch
from pyro.infer import Trace_ELBO

from pyro_vae import config, recipes
from pyro_vae.checkpoint import load_checkpoint
from pyro_vae.errors import ConfigError, RunFolderError, TrainingDiverged
from pyro_vae.runfolder import prepare_run_folder
from pyro_vae.distributed import resolve_device
from pyro_vae.runs import load_run
from pyro_vae.run import Run


def tiny_config(**train):
    cfg = config.Config()
    return recipes.apply_overrides(cfg, {"model.hidden": [16], "model.latent_dim": 4,
                                   "train.batch_size": 200, "train.epochs": 2,
                                   **{f"train.{k}": v for k, v in train.items()}})


class NaNAfter(Trace_ELBO):
    """Trace_ELBO whose loss becomes NaN from a given call on."""

    def __init__(self, after):
        super().__init__()
        self.after, self.calls = after, 0

    def differentiable_loss(self, model, guide, *args):
        self.calls += 1
        loss = super().differentiable_loss(model, guide, *args)
        return loss * float("nan") if self.calls > self.after else loss


@pytest.mark.slow
def test_training_improves_elbo(tmp_path):
    run = Run(tiny_config(epochs=5), prepare_run_folder(tmp_path / "r"), device="cpu", quiet=True)
    records = run.fit()
    assert [r["epoch"] for r in records] == [1, 2, 3, 4, 5]
    assert records[-1]["train_elbo"] > records[0]["train_elbo"]
    assert records[-1]["validation_elbo"] > records[0]["validation_elbo"]
    assert records[-1]["step"] == 5 * 6  # 1200 digits / 200 per batch


@pytest.mark.slow
def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    out = prepare_run_folder(tmp_path / "r")
    run = Run(tiny_config(epochs=3), out, device="cpu", quiet=True, loss=NaNAfter(after=8))
    with pytest.raises(TrainingDiverged, match=r"loss became nan at epoch 2, step 9.*last good "
                                               r"checkpoint \(epoch 1\)") as e:
        run.fit()
    assert (e.value.epoch, e.value.step) == (2, 9)
    state = load_checkpoint(out)
    assert state["epoch"] == 1 and state["step"] == 6
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1


def test_nan_in_first_epoch_says_no_checkpoint(tmp_path):
    run = Run(tiny_config(), prepare_run_folder(tmp_path / "r"), device="cpu", quiet=True,
              loss=NaNAfter(after=0))
    with pytest.raises(TrainingDiverged, match="no epoch had completed"):
        run.fit()


@pytest.mark.slow
def test_resume_is_bit_identical_on_cpu(tmp_path):
    straight = Run(tiny_config(epochs=3), prepare_run_folder(tmp_path / "a"), "cpu", quiet=True)
    straight.fit()
    interrupted = Run(tiny_config(epochs=3), prepare_run_folder(tmp_path / "b"), "cpu", quiet=True)
    interrupted.fit(epochs=1)
    resumed = Run(load_run(tmp_path / "b", "cpu")[1], tmp_path / "b", "cpu", quiet=True)
    resumed.resume()
    resumed.fit()
    a, b = load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "b")
    assert a["step"] == b["step"] == 18
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    ma = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    mb = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    for ra, rb in zip(ma, mb, strict=True):
        assert (ra["train_elbo"], ra["validation_elbo"]) == (rb["train_elbo"], rb["validation_elbo"])


def test_bernoulli_on_grey_levels_without_binarization(tmp_path):
    cfg = recipes.apply_overrides(tiny_config(), {"data.binarization": "none"})
    with pytest.raises(ConfigError, match="needs binary data.*binarization"):
        Run(cfg, tmp_path, device="cpu")


def test_run_folder_rules(tmp_path):
    out = tmp_path / "run"
    prepare_run_folder(out)
    (out / "config.json").write_text("{}")
    with pytest.raises(RunFolderError, match="already exists and is not empty; pass --overwrite"):
        prepare_run_folder(out)
    assert (out / "config.json").exists()
    prepare_run_folder(out, overwrite=True)
    assert [p.name for p in out.iterdir()] == [".pyro_vae-run.json"]
    other = tmp_path / "precious"
    other.mkdir()
    (other / "thesis.tex").write_text("years of work")
    with pytest.raises(RunFolderError, match="not a run folder made by pyro_vae"):
        prepare_run_folder(other, overwrite=True)
    assert (other / "thesis.tex").read_text() == "years of work"
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunFolderError, match="is not a folder"):
        prepare_run_folder(tmp_path / "file")


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="unknown device"):
        resolve_device("tpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device"):
            resolve_device("cuda")
