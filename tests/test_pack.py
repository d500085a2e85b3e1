"""Pretrained (packed) run folders: the evaluated weights without training state, read by
`evaluate` and `sample` as the run itself (issue 16)."""

import json

import pytest

from pyro_vae import cli
from pyro_vae.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pack") / "run"
    assert cli.main(["train", "vae", "--epochs", "3", "--quiet", "--device", "cpu",
                     "--data", "digits", "--set", "model.hidden=[32]",
                     "--set", "train.patience=1", "--set", "eval.k=20",
                     "--set", "train.tensorboard=false", "--out", str(out)]) == 0
    return out


def test_a_packed_folder_reproduces_the_runs_number(finished_run, tmp_path, capsys):
    dest = tmp_path / "pretrained"
    assert cli.main(["pack", str(finished_run), "--out", str(dest)]) == 0
    names = {p.name for p in dest.iterdir()}
    assert {"best.pt", "config.json", "metrics.jsonl", "eval.json", ".pyro_vae-run.json"} <= names
    assert "checkpoint.pt" not in names and not any(n.startswith("loglik-") for n in names)
    packed = load_checkpoint(dest / "best.pt")
    assert "optimizer" not in packed and "rng" not in packed
    recorded = json.loads((finished_run / "eval.json").read_text())
    assert packed["epoch"] == recorded["evaluated_epoch"]
    last = load_checkpoint(finished_run)
    assert packed["packed_from"]["epochs"] == last["epoch"] == recorded["epochs"]
    assert packed["packed_from"]["training_seconds"] == pytest.approx(last["elapsed"])
    assert (dest / "best.pt").stat().st_size < (finished_run / "checkpoint.pt").stat().st_size / 2
    # the same estimate from the packed weights (same k, seed, test images)
    assert cli.main(["evaluate", str(dest), "--k", "20", "--device", "cpu", "--quiet"]) == 0
    again = json.loads((dest / "eval.json").read_text())
    assert again["test_log_likelihood"] == pytest.approx(recorded["test_log_likelihood"],
                                                         abs=1e-9)
    # the epochs trained and the evaluated epoch survive the re-evaluation
    assert (again["epochs"], again["evaluated_epoch"]) == (recorded["epochs"],
                                                          recorded["evaluated_epoch"])
    assert cli.main(["sample", str(dest), "-n", "4", "--device", "cpu"]) == 0
    assert (dest / "samples-4-seed0.png").exists()
    capsys.readouterr()


def test_a_packed_folder_cannot_be_resumed_or_packed_again(finished_run, tmp_path, capsys):
    dest = tmp_path / "pretrained"
    assert cli.main(["pack", str(finished_run), "--out", str(dest)]) == 0
    before = (dest / "best.pt").read_bytes()
    assert cli.main(["train", "--resume", str(dest), "--epochs", "5", "--quiet",
                     "--device", "cpu"]) == 2
    assert "cannot be resumed" in capsys.readouterr().err
    assert cli.main(["pack", str(dest), "--out", str(tmp_path / "again")]) == 2
    assert "already a packed folder" in capsys.readouterr().err
    assert (dest / "best.pt").read_bytes() == before


def test_pack_refuses_an_existing_folder_and_an_unevaluated_run(finished_run, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    assert cli.main(["pack", str(finished_run), "--out", str(mine)]) == 2
    assert (mine / "notes.txt").read_text() == "keep" and len(list(mine.iterdir())) == 1
    bare = tmp_path / "bare"
    assert cli.main(["train", "vae", "--epochs", "1", "--quiet", "--device", "cpu", "--data",
                     "digits", "--set", "model.hidden=[8]", "--set", "train.tensorboard=false",
                     "--out", str(bare)]) == 0
    (bare / "eval.json").unlink()
    capsys.readouterr()
    assert cli.main(["pack", str(bare), "--out", str(tmp_path / "p")]) == 2
    assert "no test estimate" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize("name, epoch", [("vamp_90min", 319), ("paper_vae", 971),
                                         ("paper_vamp", 409), ("paper_hvae", 674),
                                         ("paper_hvae_vamp", 343)])
def test_the_committed_pretrained_folders_load_and_match_the_published_mlp_vae(tmp_path, name,
                                                                               epoch):
    """models/pretrained/NAME: its weights load into the model its config describes, it
    samples, and the number it records is the k = 5000 estimate on all test images, at
    least the published MLP VAE's 228.70 nats."""
    import shutil
    from pathlib import Path

    from pyro_vae.runs import load_run

    folder = Path(__file__).resolve().parent.parent / "models" / "pretrained" / name
    copy = tmp_path / name
    shutil.copytree(folder, copy)
    vae, config, state = load_run(copy, device="cpu")
    assert config.name == name and state["epoch"] == epoch
    assert vae.sample(4).shape == (4, 784)
    recorded = json.loads((copy / "eval.json").read_text())
    assert recorded["k"] == 5000 and recorded["num_test"] == 10000
    assert recorded["evaluated_epoch"] == epoch <= recorded["epochs"]
    assert recorded["test_log_likelihood"] > -228.70
    assert (folder / "best.pt").stat().st_size < 15e6
