import json
import math
import subprocess
import sys

import numpy as np

import pytest
import torch

from pyro_vae import cli
from tiny_runs import TINY, train_tiny
from pyro_vae.checkpoint import load_checkpoint



@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    return train_tiny(tmp_path_factory)


def test_train_writes_the_run_folder(trained_run, capsys):
    names = {p.name for p in trained_run.iterdir()}
    assert {"config.json", "checkpoint.pt", "metrics.jsonl", "eval.json", "samples.png",
            "reconstructions.png", "curves.png"} <= names
    assert not [n for n in names if n.endswith(".tmp")]
    config = json.loads((trained_run / "config.json").read_text())
    assert config["model"]["hidden"] == [16] and config["train"]["epochs"] == 2
    assert len((trained_run / "metrics.jsonl").read_text().splitlines()) == 2
    state = load_checkpoint(trained_run)
    source = config.pop("data_source")
    assert state["config"] == config and state["epoch"] == 2
    assert source == state["data_source"] and source["name"] == "digits"
    assert len(source["fingerprint"]) == 16
    result = json.loads((trained_run / "eval.json").read_text())
    assert result["test_elbo"] < 0 and result["num_test"] == 297
    assert result["k"] == 100 and result["test_log_likelihood"] >= result["test_elbo"]
    assert (trained_run / "loglik-k100-seed0.pt").exists()


def test_evaluate_reproduces_the_training_summary(trained_run, capsys):
    before = json.loads((trained_run / "eval.json").read_text())
    assert cli.main(["evaluate", str(trained_run), "--device", "cpu", "--quiet"]) == 0
    after = json.loads((trained_run / "eval.json").read_text())
    assert after["test_log_likelihood"] == before["test_log_likelihood"]
    assert after["test_elbo"] == before["test_elbo"]
    assert "validation_elbo" in after  # earlier keys are kept
    assert "log p(x), IWAE k=100" in capsys.readouterr().out


def test_evaluate_with_k(trained_run, capsys):
    assert cli.main(["evaluate", str(trained_run), "--k", "40", "--batch-size", "64",
                     "--particle-batch", "16", "--quiet"]) == 0
    result = json.loads((trained_run / "eval.json").read_text())
    assert result["k"] == 40
    for key in ("test_log_likelihood", "test_log_likelihood_se", "bits_per_dim",
                "khat_above_0.7", "active_units", "kl_per_dim"):
        assert key in result
    # the summary is the fraction of the saved per-image k-hats above 0.7 (fitted: k >= 25)
    from pyro_vae.estimate_files import load_result

    khat = load_result(trained_run, 40, 0).khat
    fitted = khat[~khat.isnan()]
    assert fitted.numel() > 0
    assert result["khat_above_0.7"] == pytest.approx(float((fitted > 0.7).double().mean()))
    assert result["bits_per_dim"] == -result["test_log_likelihood"] / (64 * math.log(2))
    assert set(result["k_sweep"]) == {"1", "10", "40"}
    out = capsys.readouterr().out
    assert "bound at k=10" in out and "active units z" in out
    assert cli.main(["evaluate", str(trained_run), "--k", "0"]) == 2


def test_compare(trained_run, tmp_path, capsys):
    other = tmp_path / "other"
    assert cli.main(["train", "--out", str(other), *TINY, "--set", "model.latent_dim=1"]) == 0
    capsys.readouterr()
    assert cli.main(["compare", str(trained_run), str(other), "--k", "30", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "log p(x), k=30" in out and "paired difference (first - second)" in out
    assert ("has the higher test log-likelihood" in out) or ("no significant difference" in out)
    # the estimates are cached in each run folder and reused
    assert (other / "loglik-k30-seed0.pt").exists()
    assert cli.main(["compare", str(trained_run), str(other), "--k", "30", "--quiet"]) == 0
    assert capsys.readouterr().out == out


def test_compare_refuses_different_test_sets(trained_run, tmp_path, capsys):
    data = tmp_path / "mine.npz"
    np.savez(data, train=np.random.default_rng(0).random((50, 64)),
             test=np.random.default_rng(1).random((297, 64)))
    other = tmp_path / "other"
    assert cli.main(["train", "--out", str(other), *TINY, "--data", str(data)]) == 0
    assert cli.main(["compare", str(trained_run), str(other), "--k", "5", "--quiet"]) == 2
    assert "different data" in capsys.readouterr().err


def test_sample(trained_run, tmp_path, capsys):
    out = tmp_path / "s.png"
    assert cli.main(["sample", str(trained_run), "-n", "16", "-o", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert cli.main(["sample", str(trained_run), "-n", "16", "-o", str(out)]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert cli.main(["sample", str(trained_run), "-n", "0"]) == 2


def test_existing_run_folder_is_refused(trained_run, capsys):
    before = (trained_run / "checkpoint.pt").read_bytes()
    assert cli.main(["train", "--out", str(trained_run), *TINY]) == 2
    assert "already exists and is not empty; pass --overwrite" in capsys.readouterr().err
    assert (trained_run / "checkpoint.pt").read_bytes() == before


def test_resume_extends_a_run(tmp_path, capsys):
    out = tmp_path / "r"
    assert cli.main(["train", "--out", str(out), *TINY]) == 0
    assert cli.main(["train", "--resume", str(out), "--epochs", "3", "--quiet"]) == 0
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2, 3]
    assert load_checkpoint(out)["epoch"] == 3
    assert cli.main(["train", "--resume", str(out), "--lr", "1"]) == 2
    assert "not train.lr" in capsys.readouterr().err
    assert cli.main(["train", "--resume", str(out), "--set", "model.hidden=[8]"]) == 2
    assert "only its budget" in capsys.readouterr().err


def test_resume_grows_a_wall_time_budget(tmp_path):
    """A run stopped by train.max_minutes continues when --resume gives it a larger total;
    a budget already spent trains no further epoch."""
    out = tmp_path / "r"
    assert cli.main(["train", "--out", str(out), *TINY, "--epochs", "4",
                     "--set", "train.max_minutes=1e-9"]) == 0
    assert load_checkpoint(out)["epoch"] == 1
    assert cli.main(["train", "--resume", str(out), "--quiet",
                     "--set", "train.max_minutes=2e-9"]) == 0
    assert load_checkpoint(out)["epoch"] == 1  # the first epoch took longer than the total
    assert cli.main(["train", "--resume", str(out), "--quiet",
                     "--set", "train.max_minutes=60"]) == 0
    state = load_checkpoint(out)
    assert state["epoch"] == 4 and state["config"]["train"]["max_minutes"] == 60
    assert json.loads((out / "config.json").read_text())["train"]["max_minutes"] == 60
    assert [json.loads(x)["epoch"] for x in (out / "metrics.jsonl").read_text().splitlines()] \
        == [1, 2, 3, 4]


def test_overwrite_replaces_only_a_marked_run(tmp_path, capsys):
    out = tmp_path / "r"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"epoch": 99}\n')
    assert cli.main(["train", "--out", str(out), "--overwrite", *TINY]) == 2
    assert "not a run folder made by pyro_vae" in capsys.readouterr().err
    assert (out / "metrics.jsonl").read_text() == '{"epoch": 99}\n'
    (out / "metrics.jsonl").unlink()
    assert cli.main(["train", "--out", str(out), *TINY, "--epochs", "1"]) == 0
    assert cli.main(["train", "--out", str(out), "--overwrite", *TINY]) == 0
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2


@pytest.mark.parametrize("argv, message", [
    (["train", "--data", "cifar"], "unknown data set 'cifar'; choose one of ['digits', "),
    (["train", "--set", "model.prior=wishart"], "unknown prior 'wishart'; choose one of"),
    (["train", "--set", "model.guide_options={num_flow=3}"], "does not take option(s) ['num_flow']"),
    (["train", "--set", "model.likelihood=poisson"], "unknown likelihood 'poisson'"),
    (["train", "--set", "model.guide=iaf9"], "unknown guide 'iaf9'"),
    (["train", "nonexistent_recipe"], "no recipe named 'nonexistent_recipe'"),
    (["train", "--set", "data.binarization=none"], "needs binary data"),
    (["train", "--set", "train.epoch=3"], "unknown key 'epoch'"),
    (["train", "--set", "noequals"], "expected TABLE.KEY=VALUE"),
    (["evaluate", "/nonexistent/run"], "no such run folder"),
])
def test_bad_input_is_a_clear_error(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)  # where a default run folder would appear
    assert cli.main([*argv, "--device", "cpu"] if argv[0] == "train" else argv) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_corrupt_checkpoint_is_refused(trained_run, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "checkpoint.pt").write_bytes((trained_run / "checkpoint.pt").read_bytes()[:300])
    assert cli.main(["evaluate", str(bad)]) == 2
    assert "truncated or corrupt" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_requested_without_cuda(capsys):
    assert cli.main(["train", "--device", "cuda", "--quiet"]) == 2
    assert "no CUDA device" in capsys.readouterr().err


@pytest.mark.parametrize("command", [[], ["train"], ["evaluate"], ["compare"], ["sample"],
                                     ["recipes"]])
def test_every_command_has_help(command, capsys):
    assert cli.main([*command, "--help"]) == 0
    assert "usage: pyro-vae" in capsys.readouterr().out


def test_module_entry_point():
    """One real subprocess: `python -m pyro_vae` runs the CLI."""
    out = subprocess.run([sys.executable, "-m", "pyro_vae", "recipes"],
                         capture_output=True, text=True, check=True).stdout
    assert "vae" in out.split()


def test_overwrite_keeps_the_old_run_when_the_new_one_cannot_start(trained_run, capsys):
    before = (trained_run / "checkpoint.pt").read_bytes()
    assert cli.main(["train", "--out", str(trained_run), "--overwrite", *TINY,
                     "--data", "cifar"]) == 2
    assert "unknown data set" in capsys.readouterr().err
    assert (trained_run / "checkpoint.pt").read_bytes() == before
