"""``pyro-vae evaluate --method ais``, ``pyro-vae bdmc`` and ``pyro-vae gaps``, in-process."""

import json

import pytest
import torch

from pyro_vae import cli
from tiny_runs import TINY, train_tiny

FAST = ["--num-test", "12", "--num-chains", "3", "--num-steps", "6", "--num-leapfrog", "2",
        "--quiet", "--device", "cpu"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train_tiny(tmp_path_factory)


def test_evaluate_ais_adds_its_numbers_beside_the_iwae_ones(run, capsys):
    before = json.loads((run / "eval.json").read_text())
    assert cli.main(["evaluate", str(run), "--method", "ais", *FAST]) == 0
    out = capsys.readouterr().out
    assert "log p(x), AIS" in out and "AIS - IWAE (k=100), same images" in out
    after = json.loads((run / "eval.json").read_text())
    assert after["test_log_likelihood"] == before["test_log_likelihood"]  # IWAE kept
    assert after["test_log_likelihood_ais_settings"] == {
        "num_chains": 3, "num_steps": 6, "num_leapfrog": 2, "step_size": "pilot",
        "schedule": "sigmoid", "seed": 0}
    assert after["test_log_likelihood_ais_num_test"] == 12
    saved = torch.load(run / "ais-T6-C3-L2-pilot-seed0-n12.pt", weights_only=True)
    assert saved["format"] == "pyro_vae.ais" and saved["log_likelihood"].shape == (12,)
    assert after["test_log_likelihood_ais"] == pytest.approx(float(saved["log_likelihood"].mean()))
    assert after["test_log_likelihood_ais_minus_iwae"] == pytest.approx(
        after["test_log_likelihood_ais"] - after["test_log_likelihood_ais_iwae_same_images"])


def test_compare_on_ais_reuses_the_saved_estimates(run, tmp_path, capsys):
    other = tmp_path / "other"
    assert cli.main(["train", "--out", str(other), *TINY, "--epochs", "1"]) == 0
    assert cli.main(["evaluate", str(run), "--method", "ais", *FAST]) == 0
    saved = (run / "ais-T6-C3-L2-pilot-seed0-n12.pt").stat().st_mtime_ns
    capsys.readouterr()
    assert cli.main(["compare", str(run), str(other), "--method", "ais", *FAST]) == 0
    out = capsys.readouterr().out
    assert out.count("log p(x), AIS") == 1 and "paired difference" in out
    assert (run / "ais-T6-C3-L2-pilot-seed0-n12.pt").stat().st_mtime_ns == saved  # reused
    assert (other / "ais-T6-C3-L2-pilot-seed0-n12.pt").is_file()  # computed and kept


def test_a_saved_ais_estimate_is_reused_only_for_the_same_weights(tmp_path, capsys):
    out = tmp_path / "r"
    assert cli.main(["train", "--out", str(out), *TINY, "--epochs", "1"]) == 0
    assert cli.main(["evaluate", str(out), "--method", "ais", *FAST]) == 0
    path = out / "ais-T6-C3-L2-pilot-seed0-n12.pt"
    first = torch.load(path, weights_only=True)
    stamp = path.stat().st_mtime_ns
    assert cli.main(["evaluate", str(out), "--method", "ais", *FAST]) == 0
    assert path.stat().st_mtime_ns == stamp  # same settings, images, weights: reused
    assert cli.main(["train", "--resume", str(out), "--epochs", "2", "--quiet"]) == 0
    assert cli.main(["evaluate", str(out), "--method", "ais", *FAST]) == 0
    second = torch.load(path, weights_only=True)
    assert second["weights_digest"] != first["weights_digest"]  # trained on: computed anew
    assert not torch.equal(second["log_likelihood"], first["log_likelihood"])


def test_bdmc_and_gaps_keep_one_entry_per_setting(run, capsys):
    assert cli.main(["bdmc", str(run), *FAST]) == 0
    assert "upper bound (reverse AIS)" in capsys.readouterr().out
    assert cli.main(["bdmc", str(run), *FAST, "--num-steps", "3"]) == 0
    assert cli.main(["bdmc", str(run), *FAST, "--num-steps", "3"]) == 0  # replaces its entry
    entries = json.loads((run / "bdmc.json").read_text())["entries"]
    assert [e["bdmc_settings"]["num_steps"] for e in entries] == [6, 3]
    assert all(e["bdmc_num_simulated"] == 12 and e["bdmc_upper"] > e["bdmc_lower"] - 1
               for e in entries)
    assert cli.main(["gaps", str(run), *FAST, "--log-likelihood", "iwae", "--local-steps",
                     "5"]) == 0
    assert "amortization gap" in capsys.readouterr().out
    (entry,) = json.loads((run / "gaps.json").read_text())["entries"]
    assert entry["method"] == "iwae" and entry["settings"]["k"] == 18
    assert entry["inference_gap"] == pytest.approx(
        entry["approximation_gap"] + entry["amortization_gap"])


def test_gaps_take_log_likelihood_from_the_saved_ais_estimate(run, capsys):
    """After evaluate --method ais (above) the gaps of the same settings and images reuse
    its per-image estimates: no second AIS run, the same numbers."""
    saved_path = run / "ais-T6-C3-L2-pilot-seed0-n12.pt"
    stamp = saved_path.stat().st_mtime_ns
    assert cli.main(["gaps", str(run), *FAST, "--local-steps", "5"]) == 0
    entry = [e for e in json.loads((run / "gaps.json").read_text())["entries"]
             if e["method"] == "ais"][0]
    saved = torch.load(saved_path, weights_only=True)
    assert saved_path.stat().st_mtime_ns == stamp
    assert entry["log_likelihood"] == pytest.approx(float(saved["log_likelihood"].double().mean()))
    assert entry["settings"]["num_steps"] == 6 and entry["settings"]["ais_seed"] == 0
    # a new setting computes (and keeps) its own AIS estimate first
    assert cli.main(["gaps", str(run), *FAST, "--local-steps", "5", "--num-steps", "4"]) == 0
    assert (run / "ais-T4-C3-L2-pilot-seed0-n12.pt").is_file()


def test_the_report_shows_every_estimate_against_compute(run, tmp_path):
    """After the tests above the run holds IWAE, AIS (two settings), BDMC (two) and gaps."""
    from pyro_vae.estimate_plots import plot_bound_vs_compute, saved_ais, saved_entries
    from pyro_vae.estimate_files import load_result

    ais, bdmc = saved_ais(run), saved_entries(run, "bdmc")
    assert [a["num_steps"] for a in ais] == [4, 6] and len(bdmc) == 2
    ax = plot_bound_vs_compute(load_result(run, 100, 0), ais, bdmc)
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels[0].startswith("IWAE") and labels[1].startswith("AIS, 3 chains")
    # chains x evaluations: T - 1 transitions of 2 leapfrog steps and one more gradient
    assert list(ax.get_lines()[1].get_xdata()) == [3 * (1 + 3 * 3), 3 * (1 + 5 * 3)]
    assert {"BDMC upper bound (12 simulated images)", "BDMC lower bound (same images)"} \
        <= set(labels)
    assert cli.main(["report", str(run), "-o", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "log p(x), AIS 6 steps x 3 chains" in md and "BDMC, 3 steps" in md
    assert "inference gaps (IWAE)" in md and "digits-compute.png" in md


def test_bad_estimator_input_is_refused(run, capsys):
    assert cli.main(["bdmc", str(run), *FAST, "--num-test", "-1"]) == 2
    assert "--num-test must be at least 0" in capsys.readouterr().err
    assert cli.main(["evaluate", str(run), "--method", "ais", *FAST, "--num-chains", "0"]) == 2
    assert "--num-chains: must be at least 1" in capsys.readouterr().err
    assert cli.main(["gaps", str(run), *FAST, "--step-size", "-0.1"]) == 2
    assert "must be a positive number" in capsys.readouterr().err
    (run / "gaps.json").write_text("[1, 2]")
    assert cli.main(["gaps", str(run), *FAST, "--local-steps", "2"]) == 2
    assert "is damaged" in capsys.readouterr().err
    assert (run / "gaps.json").read_text() == "[1, 2]"  # not overwritten
