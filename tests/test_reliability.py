"""What the tool promises a user who points it at their own folders (issue 14): no file
it did not write is ever deleted, one process per run, resume that agrees with itself,
no silent fallback, and a clear error (never a traceback) for bad input."""

import json
import os
import shutil
import stat

import numpy as np
import pytest
import torch

from pyro_vae import cli
from pyro_vae import datasets, idx, images
from pyro_vae.checkpoint import load_checkpoint, save_checkpoint
from pyro_vae.errors import ConfigError, DataError
from pyro_vae.lock import LOCK, RunLock
from pyro_vae.runfolder import MARKER
from pyro_vae.compatibility import with_num_classes
from pyro_vae.trainer import diverging
from tiny_runs import TINY_SETTINGS

TINY = [*TINY_SETTINGS, "--epochs", "2", "--set", "eval.k=5"]


def train(out, *extra):
    return cli.main(["train", "--out", str(out), *TINY, *extra])


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("base") / "run"
    assert train(out) == 0
    return out


@pytest.fixture
def run(base_run, tmp_path):
    """A private copy of a trained run."""
    return shutil.copytree(base_run, tmp_path / "run")


def snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def user_project(folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text('{"my": "settings"}')
    (folder / "thesis.tex").write_text("years of work")
    (folder / "sub").mkdir(exist_ok=True)
    (folder / "sub" / "data.csv").write_text("1,2,3")
    return snapshot(folder)


# ---------------------------------------------------------------------------- data loss

def test_overwrite_never_empties_a_folder_that_is_not_a_run(tmp_path, capsys):
    project = tmp_path / "project"
    before = user_project(project)
    assert train(project, "--overwrite") == 2
    assert "not a run folder made by pyro_vae" in capsys.readouterr().err
    assert snapshot(project) == before


def test_out_dot_overwrite_in_a_project_deletes_nothing(tmp_path, monkeypatch, capsys):
    project = tmp_path / "project"
    before = user_project(project)
    monkeypatch.chdir(project)
    assert train(".", "--overwrite") == 2
    assert "not a run folder made by pyro_vae" in capsys.readouterr().err
    assert snapshot(project) == before


def test_a_marked_run_in_the_current_folder_is_not_replaced(run, monkeypatch, capsys):
    before = snapshot(run)
    monkeypatch.chdir(run)
    assert train(".", "--overwrite") == 2
    assert "it is the current folder" in capsys.readouterr().err
    assert snapshot(run) == before


def test_overwrite_refuses_a_run_holding_user_files_and_lists_them(run, capsys):
    (run / "notes.md").write_text("my notes")
    (run / "extra").mkdir()
    before = snapshot(run)
    assert train(run, "--overwrite") == 2
    err = capsys.readouterr().err
    assert "files pyro_vae did not write: extra/, notes.md" in err
    assert snapshot(run) == before


@pytest.mark.slow
def test_overwrite_removes_only_what_the_tool_wrote(run):
    (run / "samples-64-seed0.png").write_bytes(b"png")  # written by pyro-vae sample
    assert train(run, "--overwrite", "--epochs", "1") == 0
    names = {p.name for p in run.iterdir()}
    assert "samples-64-seed0.png" not in names and MARKER in names and LOCK not in names
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1


def test_a_symlinked_out_with_overwrite_is_refused(run, tmp_path, capsys):
    link = tmp_path / "link"
    link.symlink_to(run)
    before = snapshot(run)
    assert train(link, "--overwrite") == 2
    assert "is a symbolic link" in capsys.readouterr().err
    assert snapshot(run) == before


@pytest.mark.slow
def test_a_run_in_use_is_refused_naming_the_holder(run, capsys):
    with RunLock(run, "pyro-vae train (another process)"):
        before = snapshot(run)
        assert train(run, "--overwrite") == 2
        err = capsys.readouterr().err
        assert "is in use: process" in err and str(os.getpid()) in err
        assert cli.main(["train", "--resume", str(run), "--epochs", "3", "--quiet"]) == 2
        assert "is in use" in capsys.readouterr().err
        assert {k: v for k, v in snapshot(run).items() if k != LOCK} == \
            {k: v for k, v in before.items() if k != LOCK}
    assert not (run / LOCK).exists()
    assert cli.main(["train", "--resume", str(run), "--epochs", "3", "--quiet"]) == 0
    epochs = [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3]


@pytest.mark.slow
def test_a_stale_lock_is_taken_over(run, capsys):
    (run / LOCK).write_text(json.dumps({"pid": 999999, "host": "gone", "since": "yesterday",
                                        "command": "pyro-vae train"}))
    assert cli.main(["train", "--resume", str(run), "--epochs", "3", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "took over the lock" in err and "process 999999 on gone" in err
    assert not (run / LOCK).exists()


def test_lock_records_the_holder_and_is_exclusive(tmp_path):
    with RunLock(tmp_path, "cmd") as lock:
        record = json.loads((tmp_path / LOCK).read_text())
        assert record["pid"] == os.getpid() and record["command"] == "cmd"
        with pytest.raises(Exception, match="in use"):
            RunLock(tmp_path).acquire()
        assert lock.held
    RunLock(tmp_path).acquire().release()


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs but ``finally`` blocks."""


@pytest.mark.slow
def test_killed_while_writing_best_then_resumed_agrees_with_the_checkpoint(tmp_path,
                                                                           monkeypatch):
    import pyro_vae.run as T

    out = tmp_path / "r"
    real = T.save_checkpoint

    def dies_before_best(state, path):
        if path.name == "best.pt" and state["epoch"] == 3:
            raise Killed
        return real(state, path)

    monkeypatch.setattr(T, "save_checkpoint", dies_before_best)
    extra = ["--epochs", "3", "--set", "train.patience=5", "--lr", "0.01"]
    with pytest.raises(Killed):
        train(out, *extra)
    monkeypatch.setattr(T, "save_checkpoint", real)
    state = load_checkpoint(out)
    assert state["epoch"] == 3 and state["best"]["epoch"] == 3  # validation improved
    assert load_checkpoint(out / "best.pt")["epoch"] == 2  # the kill left it behind
    assert cli.main(["train", "--resume", str(out), "--quiet"]) == 0
    assert load_checkpoint(out / "best.pt")["epoch"] == 3
    assert json.loads((out / "eval.json").read_text())["evaluated_epoch"] == 3


# ----------------------------------------------------------------------- silently wrong

def test_explicit_data_dir_is_the_only_place_looked_in(tmp_path):
    if not (idx.DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("needs Debian's dataset-fashion-mnist, the folder a fallback would read")
    with pytest.raises(DataError, match="does not exist"):
        datasets.load_dataset("fashion-mnist", data_dir=tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="only --data-dir is searched"):
        datasets.load_dataset("fashion-mnist", data_dir=tmp_path / "empty")
    folder = tmp_path / "dirs"
    (folder / "train-images-idx3-ubyte").mkdir(parents=True)
    with pytest.raises(DataError, match="is not a file"):
        datasets.load_dataset("fashion-mnist", data_dir=folder)


def write_idx(path, images):
    images = np.asarray(images, dtype=np.uint8)
    header = b"".join(int(v).to_bytes(4, "big") for v in (0x803, *images.shape))
    path.write_bytes(header + images.tobytes())


def test_the_run_records_the_folder_read_and_a_fingerprint(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    rng = np.random.default_rng(0)
    write_idx(mine / "train-images-idx3-ubyte", rng.integers(0, 256, (10100, 2, 2)))
    write_idx(mine / "t10k-images-idx3-ubyte", rng.integers(0, 256, (50, 2, 2)))
    out = tmp_path / "r"
    assert train(out, "--data", "fashion-mnist", "--data-dir", str(mine), "--epochs", "1",
                 "--batch-size", "5000") == 0
    source = json.loads((out / "config.json").read_text())["data_source"]
    assert source["source"] == str(mine) and len(source["fingerprint"]) == 16
    # other bytes in the same folder: resuming would mix two data sets, so it is refused
    write_idx(mine / "t10k-images-idx3-ubyte", rng.integers(0, 256, (50, 2, 2)))
    assert cli.main(["train", "--resume", str(out), "--epochs", "2", "--quiet"]) == 2


def test_a_checkpoint_of_another_recipe_is_not_resumed(run, tmp_path, capsys):
    other = tmp_path / "other"
    assert train(other, "--set", "name=other", "--latent-dim", "3", "--epochs", "1") == 0
    shutil.copy(other / "checkpoint.pt", run / "checkpoint.pt")
    metrics = (run / "metrics.jsonl").read_text()
    assert cli.main(["train", "--resume", str(run), "--epochs", "3", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "holds recipe 'other'" in err and "config.json is recipe 'vae'" in err
    assert "model.latent_dim" in err and (run / "metrics.jsonl").read_text() == metrics


@pytest.mark.parametrize("name", ["../evil", "/tmp/abs", "a/b", ".hidden", "..", ""])
def test_a_recipe_name_that_is_a_path_is_refused(tmp_path, monkeypatch, capsys, name):
    monkeypatch.chdir(tmp_path)
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'name = "{name}"\n')
    assert cli.main(["train", str(recipe), "--quiet", "--device", "cpu"]) == 2
    assert "is not a plain name" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["r.toml"]


def test_labels_far_outside_the_classes_are_refused():
    digits = datasets.load_digits()
    labels = digits.train_labels.clone()
    labels[0] = 255
    data = images.ImageData("odd", digits.train, digits.validation, digits.test, (1, 8, 8), "test",
                       labels, digits.validation_labels, digits.test_labels)
    from pyro_vae.config import Config
    from pyro_vae.recipes import apply_overrides

    cfg = apply_overrides(Config(), {"model.conditional": True})
    with pytest.raises(ConfigError, match="labels 10, 11, .* never occur.*num_classes = 256"):
        with_num_classes(cfg, data)
    explicit = apply_overrides(cfg, {"model.num_classes": 256})
    assert with_num_classes(explicit, data).model.num_classes == 256


def test_channels_last_npz_is_refused(tmp_path):
    p = tmp_path / "rgb.npz"
    np.savez(p, train=np.full((20, 8, 8, 3), 7, np.uint8), test=np.full((5, 8, 8, 3), 7, np.uint8))
    with pytest.raises(DataError, match="looks channels-last .N, H, W, C.*np.moveaxis"):
        datasets.load_dataset(str(p))


def test_absurd_eval_k_is_refused(capsys):
    assert cli.main(["train", *TINY, "--set", "eval.k=1000000000"]) == 2
    assert "cannot be meant" in capsys.readouterr().err
    assert cli.main(["evaluate", "somewhere", "--k", "1000000000"]) == 2
    assert "argument --k: must be at most 100,000" in capsys.readouterr().err


def test_a_flipped_bit_in_the_optimizer_state_is_found(run, capsys):
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    moment = next(iter(state["optimizer"]["state"].values()))["exp_avg_sq"]
    moment.view(-1).view(torch.int32)[0] ^= 1 << 29  # one bit of the exponent
    torch.save(state, run / "checkpoint.pt")
    assert cli.main(["train", "--resume", str(run), "--epochs", "3", "--quiet"]) == 2
    assert "does not match the checksum" in capsys.readouterr().err


def test_non_finite_weights_are_refused_even_with_a_valid_checksum(run, capsys):
    state = load_checkpoint(run)
    next(iter(state["model"].values())).view(-1)[0] = float("nan")
    for key in ("format", "version", "digest"):
        state.pop(key)
    save_checkpoint(state, run / "checkpoint.pt")
    assert cli.main(["evaluate", str(run), "--quiet"]) == 2
    assert "hold NaN or infinite values" in capsys.readouterr().err


@pytest.mark.slow
def test_a_diverging_objective_is_loud_and_fails(tmp_path, capsys):
    assert diverging(-4.6e19, -550.0) and not diverging(-100.0, -550.0)
    assert not diverging(-560.0, -550.0) and not diverging(None, -550.0)
    code = train(tmp_path / "r", "--lr", "1000", "--epochs", "3")
    err = capsys.readouterr().err
    assert code == 1
    assert "diverg" in err or "non-finite" in err or "became nan" in err.lower()


@pytest.mark.slow
def test_two_runs_of_one_name_in_a_report_show_their_own_figures(run, tmp_path):
    other = tmp_path / "b" / "run"
    assert train(other, "--epochs", "1") == 0
    assert cli.main(["report", str(run), str(other), "-o", str(tmp_path / "rep")]) == 0
    figures = {p.name for p in (tmp_path / "rep" / "figures").iterdir()}
    assert {f"{tmp_path.name}-run-samples.png", "b-run-samples.png"} <= figures
    md = (tmp_path / "rep" / "report.md").read_text()
    assert f"## {tmp_path.name}-run" in md and "## b-run" in md


@pytest.mark.slow
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_follow_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        assert train(tmp_path / "r", "--epochs", "1") == 0
    finally:
        os.umask(old)
    for name in ("checkpoint.pt", "config.json", "eval.json", "samples.png", MARKER):
        assert stat.S_IMODE((tmp_path / "r" / name).stat().st_mode) == mode, name


def test_resume_cleans_temporary_files_of_a_kill_and_nothing_else(run):
    junk = [run / "checkpoint.pt.a1b2c3.tmp", run / ".checkpoint.pt.x7.pyro_vae.tmp",
            run / "eval.json.tmp"]
    for p in junk:
        p.write_bytes(b"0" * 1000)
    (run / "notes.tmp").write_text("mine")
    assert cli.main(["train", "--resume", str(run), "--epochs", "3", "--quiet"]) == 0
    assert not any(p.exists() for p in junk) and (run / "notes.tmp").read_text() == "mine"


# --------------------------------------------------------------------------- tracebacks

def test_a_recipe_that_is_not_utf8(tmp_path, capsys):
    recipe = tmp_path / "latin.toml"
    recipe.write_bytes('name = "caf\xe9"\n'.encode("latin-1"))
    assert cli.main(["train", str(recipe), "--device", "cpu"]) == 2
    assert "not UTF-8" in capsys.readouterr().err


def test_a_corrupt_metrics_line_on_resume_and_report(run, tmp_path, capsys):
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("{garbage\n" + "\n".join(lines[1:]) + "\n")
    assert cli.main(["train", "--resume", str(run), "--epochs", "3", "--quiet"]) == 2
    assert "line 1 is not a metrics record" in capsys.readouterr().err
    assert cli.main(["report", str(run), "-o", str(tmp_path / "rep")]) == 2
    assert "line 1 is not a metrics record" in capsys.readouterr().err


def test_weights_that_do_not_fit_their_own_config(run, capsys):
    state = load_checkpoint(run)
    state["config"]["model"]["latent_dim"] = 7
    for key in ("format", "version", "digest"):
        state.pop(key)
    save_checkpoint(state, run / "checkpoint.pt")
    assert cli.main(["evaluate", str(run), "--quiet"]) == 2  # config.json says otherwise
    assert "holds recipe 'vae', but this run folder's config.json" in capsys.readouterr().err
    (run / "config.json").write_text(json.dumps({**state["config"], "data_source": {}}))
    assert cli.main(["evaluate", str(run), "--quiet"]) == 2
    assert "weights do not fit the model its own config describes" in capsys.readouterr().err
    assert cli.main(["train", "--resume", str(run), "--epochs", "3", "--quiet"]) == 2
    assert "do not fit" in capsys.readouterr().err


def test_a_corrupt_eval_json_is_reported_before_the_evaluation(run, tmp_path, monkeypatch,
                                                              capsys):
    import pyro_vae.runs as R

    (run / "eval.json").write_text('{"k": 5,')
    monkeypatch.setattr(R, "evaluate_run", lambda *a, **k: pytest.fail("evaluation ran"))
    assert cli.main(["evaluate", str(run), "--quiet"]) == 2
    assert "eval.json is not valid JSON" in capsys.readouterr().err
    assert (run / "eval.json").read_text() == '{"k": 5,'
    assert cli.main(["report", str(run), "-o", str(tmp_path / "rep")]) == 2
    assert "eval.json is not valid JSON" in capsys.readouterr().err


def test_a_latent_size_beyond_memory(tmp_path, capsys):
    assert train(tmp_path / "r", "--latent-dim", "100000000") == 2
    assert "parameters: training needs at least" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("argv, message", [
    (["sample", "RUN", "-n", "10000000"], "argument -n/--num-samples: must be at most 10,000"),
    (["score", "RUN", "--k", "0", "-o", "s.csv"], "argument --k: must be at least 1"),
    (["evaluate", "RUN", "--k", "0"], "argument --k: must be at least 1"),
    (["compare", "RUN", "RUN", "--particle-batch", "-3"], "argument --particle-batch"),
    (["evaluate", "RUN/checkpoint.pt"], "is a file; give its run folder instead"),
    (["train", "--resume", "RUN/checkpoint.pt"], "is a file; give its run folder instead"),
])
def test_flags_are_checked_with_the_users_words(run, capsys, argv, message):
    argv = [a.replace("RUN", str(run)) for a in argv]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "num_particles" not in err


def test_a_full_disk_during_a_checkpoint_write(tmp_path, monkeypatch, capsys):
    def full(obj, f):
        f.write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:783] . PytorchStreamWriter "
                           "failed writing file data/3: file write failed")

    monkeypatch.setattr(torch, "save", full)
    assert train(tmp_path / "r") == 2
    err = capsys.readouterr().err
    assert "could not write" in err and "disk has space" in err
    names = {p.name for p in (tmp_path / "r").iterdir()}
    assert not [n for n in names if n.endswith(".tmp")] and LOCK not in names


@pytest.mark.slow
def test_ctrl_c_during_start_up_and_the_final_evaluation(tmp_path, monkeypatch, capsys):
    import pyro_vae.run as T

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(T, "load_dataset", interrupt)
        assert train(tmp_path / "a") == 130
        assert "interrupted (Ctrl-C) during train" in capsys.readouterr().err
    monkeypatch.setattr(T, "evaluate_run", interrupt)
    assert train(tmp_path / "b") == 130
    err = capsys.readouterr().err
    assert "during the final evaluation" in err and "pyro-vae evaluate" in err
    assert load_checkpoint(tmp_path / "b")["epoch"] == 2 and not (tmp_path / "b" / LOCK).exists()


# ------------------------------------------------------------------------ unclear errors

def test_npz_errors_say_what_the_file_is(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(DataError, match="not a .npz file") as e:
        datasets.load_dataset(str(bad))
    assert "allow_pickle" not in str(e.value)
    upper = tmp_path / "FILE.NPZ"
    with open(upper, "wb") as f:
        np.savez(f, train=np.full((20, 4, 4), 200, np.uint8), test=np.full((5, 4, 4), 9, np.uint8))
    assert datasets.load_dataset(str(upper)).train.shape == (18, 16)
    objects = tmp_path / "objects.npz"
    np.savez(objects, train=np.array([{"a": 1}], dtype=object), test=np.zeros((2, 2)))
    with pytest.raises(DataError, match="holds Python objects"):
        datasets.load_dataset(str(objects))


@pytest.mark.slow
def test_two_processes_never_share_a_run(tmp_path, capsys):
    """One real second process: while it trains, a resume and an overwrite are refused with
    its pid; killed with SIGKILL, its lock is stale and the run resumes."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "r"
    args = [*TINY_SETTINGS, "--set", "eval.k=5", "--epochs", "100000"]
    proc = subprocess.Popen([sys.executable, "-m", "pyro_vae", "train", "--out", str(out), *args],
                            env=dict(os.environ, OMP_NUM_THREADS="1"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (out / "checkpoint.pt").exists() and time.time() < deadline:
            time.sleep(0.05)
        assert cli.main(["train", "--resume", str(out), "--quiet"]) == 2
        assert f"process {proc.pid} on" in capsys.readouterr().err
        assert train(out, "--overwrite") == 2
        assert f"process {proc.pid} on" in capsys.readouterr().err
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert (out / LOCK).exists()  # left behind by the kill
    epoch = load_checkpoint(out)["epoch"]
    assert cli.main(["train", "--resume", str(out), "--epochs", str(epoch + 1), "--quiet"]) == 0
    assert f"left by process {proc.pid}" in capsys.readouterr().err
    epochs = [json.loads(x)["epoch"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(1, epoch + 2))


def test_evaluate_holds_the_lock_too(run, capsys):
    with RunLock(run, "pyro-vae train --resume"):
        assert cli.main(["evaluate", str(run), "--quiet"]) == 2
        assert "is in use" in capsys.readouterr().err
    (run / ".eval.json.abc.pyro_vae.tmp").write_bytes(b"x")
    assert cli.main(["evaluate", str(run), "--quiet"]) == 0
    assert not (run / ".eval.json.abc.pyro_vae.tmp").exists() and not (run / LOCK).exists()


@pytest.mark.slow
def test_two_runs_started_in_one_second_get_their_own_folders(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    import pyro_vae.train_command as TC

    monkeypatch.setattr(TC.time, "strftime", lambda fmt: "20261130-120000")
    argv = ["train", *TINY, "--epochs", "1"]
    assert cli.main(argv) == 0 and cli.main(argv) == 0
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == \
        ["vae-digits-20261130-120000", "vae-digits-20261130-120000-2"]
    assert all((p / "checkpoint.pt").is_file() for p in (tmp_path / "runs").iterdir())
