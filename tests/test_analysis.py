"""Every script in analysis/ and every recipe in models/ is smoke-run with tiny settings."""

import json
import importlib.util
from pathlib import Path

import pytest

from pyro_vae import cli

ROOT = Path(__file__).resolve().parent.parent


def load_script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "analysis" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_training_smoke(tmp_path):
    bench = load_script("benchmark_training")
    out = tmp_path / "bench.json"
    results = bench.main(["--data", "digits", "--blocks", "2", "--steps", "2", "--epochs", "1",
                          "--train-size", "600", "--json", str(out), "--no-compile",
                          "--particles", "3"])
    assert out.exists()
    for label in ("steps", "epochs"):
        ips = results[label]["images_per_second"]
        assert {"project", "plain", "plain_fused_adam"} <= set(ips)
        assert results[label]["ratios"]["project_vs_plain"] == \
            pytest.approx(ips["project"] / ips["plain"])
    assert 3 in results["iwae_step_cost_vs_one_particle"]


def test_plain_loss_is_the_same_estimator_as_trace_elbo():
    """The benchmark's plain loop computes the ELBO Pyro's Trace_ELBO computes."""
    import torch
    from pyro.infer import Trace_ELBO

    from pyro_vae.config import ModelConfig
    from pyro_vae.registries import build_vae

    bench = load_script("benchmark_training")
    vae = build_vae(ModelConfig(latent_dim=3, hidden=[8]), (10,))
    plain = bench.PlainVAE.from_vae(vae)
    x = torch.bernoulli(torch.full((4, 10), 0.5))
    torch.manual_seed(3)
    a = plain.loss(x)
    torch.manual_seed(3)
    b = Trace_ELBO().differentiable_loss(vae.model, vae.guide, x)
    assert torch.allclose(a, b, atol=1e-4)


@pytest.mark.parametrize("recipe", sorted(p.stem for p in (ROOT / "models").glob("*.toml")))
def test_every_recipe_trains_one_epoch_and_evaluates(recipe, tmp_path):
    from pyro_vae.recipes import resolve_recipe

    out = tmp_path / recipe
    extra = []
    config = resolve_recipe(recipe)
    if config.data.binarization == "none" and config.model.likelihood == "bernoulli":
        extra = ["--set", 'data.binarization="dynamic"']  # a binary data set's recipe (shapes)
    assert cli.main(["train", recipe, "--epochs", "1", "--quiet", "--device", "cpu",
                     "--data", "digits", "--set", "eval.k=10", *extra, "--out", str(out)]) == 0
    assert cli.main(["evaluate", str(out), "--device", "cpu", "--k", "10", "--quiet"]) == 0
    assert (out / "samples.png").exists()


def test_readme_python_example_runs():
    """The script in the README works as written (with fewer epochs)."""
    import re

    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) >= 2 and "range(50)" in blocks[0]
    namespace = {}
    for code in blocks:  # in order, in one namespace, as a reader would paste them
        code = code.replace("range(50)", "range(1)").replace("num_particles=1000", "num_particles=50")
        exec(compile(code, "README.md", "exec"), namespace)


def test_benchmark_loglik_workers_estimate_the_same_thing(capsys):
    """Each estimator of the benchmark runs (in-process here; the script runs them in
    subprocesses), and the two agree within Monte Carlo error: same weights, same images,
    independent particles. One image's estimate has a delta-method standard error of
    sqrt(1/ESS - 1/k) <= sqrt(1 - 1/k) nats, so the difference of two means over N images
    has a standard error of at most sqrt(2 (1 - 1/k) / N); allowed: 4 of those (1.0 nats
    here, against about 54 nats estimated and log k = 3.7 for a forgotten -log k)."""
    import json
    import math

    bench = load_script("benchmark_loglik")
    out = {}
    for estimator in ("project", "plain"):
        bench.main(["--data", "digits", "--num-test", "30", "--k", "40", "--batch-size", "16",
                    "--particle-batch", "16", "--worker", estimator])
        out[estimator] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert out[estimator]["estimator"] == estimator
        assert out[estimator]["num_test"] == 30 and out[estimator]["k"] == 40
    tolerance = 4 * math.sqrt(2 * (1 - 1 / 40) / 30)
    assert abs(out["project"]["mean_log_likelihood"] -
               out["plain"]["mean_log_likelihood"]) < tolerance


@pytest.mark.slow
def test_compare_recipes_smoke(tmp_path):
    import json

    bench = load_script("compare_recipes")
    results = tmp_path / "compare_recipes.md"
    argv = ["vae", "vae_mog", "--data", "digits", "--epochs", "1", "--k", "30",
            "--out", str(tmp_path / "runs"), "--set", "model.hidden=[16]"]
    rows = bench.main([*argv, "--results", str(results)])
    assert [r["recipe"] for r in rows] == ["vae", "vae_mog"]
    assert "difference" in rows[1] and "difference" not in rows[0]
    text = results.read_text()
    assert "| `vae_mog` |" in text and "paired difference" in text
    assert json.loads(results.with_suffix(".json").read_text()) == rows
    # a second call reuses the finished runs and their estimates
    again = bench.main(argv)
    assert again[1]["log_likelihood"] == rows[1]["log_likelihood"]
    # an existing results file is kept unless --overwrite
    before = results.read_text()
    with pytest.raises(SystemExit, match="exists; pass --overwrite"):
        bench.main([*argv, "--results", str(results)])
    assert results.read_text() == before
    bench.main([*argv, "--results", str(results), "--overwrite"])
    assert "--overwrite" in results.read_text()  # the command, in the new table


def test_compare_recipes_never_writes_over_the_hand_written_results(tmp_path):
    """The documented command writes a file of its own, and an existing file (such as the
    hand-written analysis/RESULTS.md) is refused before any training unless --overwrite."""
    import re

    script = load_script("compare_recipes")
    assert re.findall(r"--results (analysis/\S+)", script.__doc__) == \
        ["analysis/compare_recipes.md"]
    hand_written = tmp_path / "RESULTS.md"
    hand_written.write_text("# written by hand\n")
    with pytest.raises(SystemExit, match="RESULTS.md exists; pass --overwrite"):
        script.main(["vae", "--data", "digits", "--epochs", "1", "--out", str(tmp_path / "runs"),
                     "--results", str(hand_written)])
    assert hand_written.read_text() == "# written by hand\n"
    assert not (tmp_path / "runs").exists() and not hand_written.with_suffix(".json").exists()


def test_estimate_figures_smoke(tmp_path):
    runs = []
    for seed in (0, 1):
        out = tmp_path / f"r{seed}"
        assert cli.main(["train", "--epochs", "1", "--quiet", "--device", "cpu", "--out", str(out),
                         "--seed", str(seed), "--set", "eval.k=30"]) == 0
        runs.append(str(out))
    script = load_script("estimate_figures")
    png = script.main([*runs, "--k", "30", "--out", str(tmp_path / "fig" / "est.png")])
    assert png.stat().st_size > 10_000
    with pytest.raises(SystemExit, match="no saved estimates for k = 99"):
        script.main([*runs, "--k", "99", "--out", str(tmp_path / "x.png")])


def test_anomaly_detection_finds_a_separable_class(tmp_path):
    """The script's smoke run, on a toy .npz: trained on dark images only, the model gives
    the held-out bright ones far lower likelihood, so both scores rank every bright test
    image above every dark one (AUROC 1; a score of the wrong sign or labels out of line
    with their images would give about 0)."""
    import json

    import numpy as np

    rng = np.random.default_rng(0)

    def images(n, label):  # 8x8 grey levels, dark (0) or bright (1), a little noise
        base = 0.05 if label == 0 else 0.95
        x = np.clip(base + 0.03 * rng.standard_normal((n, 8, 8)), 0, 1).astype(np.float32)
        return x, np.full(n, label)

    parts = {split: [images(n, 0), images(n, 1)] for split, n in
             (("train", 200), ("validation", 40), ("test", 50))}
    arrays = {}
    for split, ((x0, y0), (x1, y1)) in parts.items():
        arrays[split] = np.concatenate([x0, x1])
        arrays[f"{split}_labels"] = np.concatenate([y0, y1])
    np.savez(tmp_path / "toy.npz", **arrays)
    result = load_script("anomaly_detection").main(
        ["--data", str(tmp_path / "toy.npz"), "--held-out", "1", "--num-classes", "2",
         "--epochs", "3", "--k", "10", "--out", str(tmp_path / "a"), "--device", "cpu",
         "--set", "model.hidden=[16]", "--set", "model.latent_dim=2",
         "--set", "train.batch_size=20", "--set", "train.lr=0.01"])
    assert result["num_test"] == 100 and result["num_held_out"] == 50
    assert result["auroc_neg_log_likelihood"] > 0.99 and result["auroc_neg_elbo"] > 0.99
    assert (tmp_path / "a" / "auroc.json").exists()
    config = json.loads((tmp_path / "a" / "run" / "config.json").read_text())
    assert config["data"]["classes"] == [0]


def test_ae_vs_vae_smoke(tmp_path):
    import json

    script = load_script("ae_vs_vae")
    script.main(["--data", "digits", "--epochs", "1", "--k", "3", "--num-codes", "100",
                 "--out", str(tmp_path / "runs")])
    summary = json.loads((tmp_path / "runs" / "ae_vs_vae.json").read_text())
    assert set(summary) == {"vae", "ae", "dae"}
    assert (tmp_path / "runs" / "ae_vs_vae.png").read_bytes()[:4] == b"\x89PNG"
    # the VAE's codes fill its prior; the autoencoders' leave holes, even after one epoch
    assert summary["vae"]["hole_ratio"] < 2 < summary["ae"]["hole_ratio"]
    assert summary["dae"]["hole_ratio"] > 2


def test_hole_ratio_separates_covered_from_uncovered_latents():
    import numpy as np

    script = load_script("ae_vs_vae")
    rng = np.random.default_rng(0)
    draws = rng.standard_normal((500, 5))
    covered = script.hole_statistics(rng.standard_normal((500, 5)), draws)[0]
    shrunk = script.hole_statistics(0.1 * rng.standard_normal((500, 5)), draws)[0]
    assert 0.7 < covered < 1.5 and shrunk > 5


def test_benchmark_distributed_reads_epoch_speeds(tmp_path, monkeypatch):
    """The benchmark's runner, with the training replaced by a metrics file."""
    import json

    bench = load_script("benchmark_distributed")

    def fake_run(command, env, check, stdout):
        out = Path(command[command.index("--out") + 1])
        out.mkdir(parents=True)
        lines = [{"epoch": e, "images_per_second": v} for e, v in ((1, 5.0), (2, 10.0), (3, 12.0))]
        (out / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))
        assert env["OMP_NUM_THREADS"] == ("1" if "torch.distributed.run" in command else "2")

    monkeypatch.setattr(bench.subprocess, "run", fake_run)
    out = tmp_path / "b.json"
    bench.main(["--data", "digits", "--epochs", "3", "--threads", "2", "--json", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert [(r["nproc"], r["images_per_second"]) for r in rows] == [(1, 11.0), (2, 11.0)]


def test_semi_supervised_smoke(tmp_path):
    script = load_script("semi_supervised")
    rows = script.main(["--data", "digits", "--labels", "20", "50", "--epochs", "1", "--k", "3",
                        "--out", str(tmp_path / "m2")])
    assert [r["num_labelled"] for r in rows] == [20, 50]
    # ten classes, 297 test images: chance is 10% (+- 1.7%); one epoch is already above it
    assert all(r["test_accuracy"] > 0.2 for r in rows)
    assert (tmp_path / "m2" / "table.md").read_text().count("\n") == 4
    assert (tmp_path / "m2" / "accuracy.png").exists()


def test_conditional_samples_smoke(tmp_path):
    run = tmp_path / "cvae"
    assert cli.main(["train", "cvae", "--epochs", "1", "--quiet", "--device", "cpu",
                     "--set", "eval.k=2", "--out", str(run)]) == 0
    script = load_script("conditional_samples")
    result = script.main([str(run), "--per-class", "5", "--train-images", "500",
                          "--columns", "4"])
    assert set(result["per_class"]) == set(range(10))
    assert result["overall"] == pytest.approx(sum(result["per_class"].values()) / 10)
    # the classifier that judges the samples reads real digits (chance: 10%)
    assert result["classifier_test_accuracy"] > 0.8
    assert (run / "samples-by-label.png").exists()


def test_cuda_check_without_a_gpu_says_so_and_exits_0(capsys, monkeypatch):
    script = load_script("cuda_check")
    monkeypatch.setattr(script.torch.cuda, "is_available", lambda: False)
    assert script.main([]) == 0
    assert "no CUDA device" in capsys.readouterr().out


@pytest.mark.parametrize("shift, status", [(0.1, 0), (2.0, 1)])
def test_cuda_check_compares_within_its_tolerances(shift, status, capsys, monkeypatch):
    """The comparison and its exit status, with the two trainings replaced by numbers: the
    CUDA run's validation ELBO of epoch 2 moved by ``shift`` nats (tolerance 0.9)."""
    script = load_script("cuda_check")
    monkeypatch.setattr(script.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(script.torch.cuda, "get_device_name", lambda i: "a test double")

    def fake(device, seed, out, args):
        assert seed == 0 and args.epochs == 2 and args.k == 100
        return {"validation_elbo": [-30.0, -28.0 + (shift if device == "cuda" else 0.0)],
                "test_log_likelihood": -27.5, "seconds": 1.0}

    monkeypatch.setattr(script, "train_and_evaluate", fake)
    assert script.main([]) == status
    out = capsys.readouterr().out
    assert "validation ELBO, epoch 2" in out and "test log p(x), IWAE k=100" in out
    assert ("DISAGREE" in out) == bool(status)


@pytest.mark.slow
def test_reliability_pass_smoke(tmp_path):
    """The adversarial pass runs (a few cases, in its own process: it changes folders and
    the environment) and writes its table; a case that loses data would be counted."""
    import subprocess
    import sys

    out = tmp_path / "R.md"
    done = subprocess.run([sys.executable, str(ROOT / "analysis" / "reliability.py"),
                           "--only", "name-0", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    text = out.read_text()
    assert "| verdict | cases |" in text and "| ok | 7 |" in text
    assert "| DATA LOSS | 0 |" in text


def test_reproduction_table_compares_a_run_with_its_published_row(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "vae", "--epochs", "1", "--quiet", "--device", "cpu",
                     "--data", "digits", "--set", "eval.k=5", "--set", "model.hidden=[16]",
                     "--out", str(out)]) == 0
    capsys.readouterr()
    script = load_script("reproduction")
    figure = tmp_path / "curves.png"
    with pytest.raises(SystemExit):  # a run of recipe vae is not the paper_vae row
        script.main(["--run", f"paper_vae={out}"])
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "name": "paper_vae"}))
    assert script.main(["--run", f"paper_vae={out}", "--run", f"record={out}",
                        "--figure", str(figure)]) == 0
    table = capsys.readouterr().out
    nll = -json.loads((out / "eval.json").read_text())["test_log_likelihood"]
    assert f"| VAE (gated MLP) | {nll:.2f} +- " in table
    assert f"{nll - 228.70:+.2f} nats ({(nll - 228.70) / 0.15:+.1f})" in table
    assert f"{nll - 227.35:+.2f} nats ({(nll - 227.35) / 0.05:+.1f})" in table  # the record
    assert "| 1 (1) | epoch budget |" in table and figure.stat().st_size > 0
    with pytest.raises(SystemExit):  # an existing figure is kept
        script.main(["--run", f"paper_vae={out}", "--figure", str(figure)])
    with pytest.raises(SystemExit):
        script.main(["--run", f"paper_vamp={tmp_path / 'missing'}"])


def test_discrete_vaes_smoke(tmp_path, capsys):
    """Paired bounds against the baseline (a VQ-VAE at its own k = 1), sharpness, figures."""
    runs = {}
    for recipe, k in (("vae", 5), ("discrete", 5), ("vqvae", 1)):
        runs[recipe] = tmp_path / recipe
        assert cli.main(["train", recipe, "--epochs", "1", "--quiet", "--device", "cpu",
                         "--set", f"eval.k={k}", "--out", str(runs[recipe])]) == 0
    script = load_script("discrete_vaes")
    rows = script.main([*[a for name, folder in runs.items() for a in ("--run", f"{name}={folder}")],
                        "--k", "5", "--samples", "100", "--train-images", "500",
                        "--figure-dir", str(tmp_path / "fig"), "--json", str(tmp_path / "t.json")])
    assert [r["k"] for r in rows] == [5, 5, 1] and "difference" in rows[2]
    assert all(r["frechet_distance"] >= 0 and 0 < r["sample_confidence"] <= 1 for r in rows)
    assert (tmp_path / "fig" / "discrete_vaes_traversal_discrete.png").exists()
    assert json.loads((tmp_path / "t.json").read_text())["baseline"] == "vae"
    assert "| vqvae | vqvae |" in capsys.readouterr().out


def _fake_shapes_eval(folder, mig, disentanglement, elbo):
    folder.mkdir(parents=True)
    (folder / "eval.json").write_text(json.dumps({
        "mig": mig, "dci": {"disentanglement": disentanglement, "completeness": 0.5,
                            "informativeness": 0.9},
        "test_elbo": elbo, "test_log_likelihood": elbo + 2, "kl": {"z": 10.0},
        "active_units": {"z": 4}}))


def test_disentanglement_table_pairs_seeds_against_the_baseline(tmp_path, capsys):
    """The table's spread across seeds and the differences paired by seed, exactly."""
    for seed, (mig_a, mig_b) in enumerate(((0.1, 0.3), (0.2, 0.5))):
        _fake_shapes_eval(tmp_path / f"vae-s{seed}", mig_a, 0.2, -80.0 - seed)
        _fake_shapes_eval(tmp_path / f"beta_vae-s{seed}", mig_b, 0.4, -90.0 - 2 * seed)
    (tmp_path / "notes").mkdir()  # folders not named NAME-sSEED are ignored
    rows = {r["objective"]: r for r in load_script("disentanglement").main(
        ["--runs", str(tmp_path), "--baseline", "vae"])}
    assert rows["vae"]["mig"]["mean"] == pytest.approx(0.15)
    assert rows["beta_vae"]["mig"]["max"] == pytest.approx(0.5)
    assert rows["beta_vae"]["mig_vs_vae"]["mean"] == pytest.approx(0.25)  # (0.2 + 0.3) / 2
    assert rows["beta_vae"]["test_elbo_vs_vae"]["mean"] == pytest.approx(-10.5)
    assert "paired by seed against vae" in capsys.readouterr().out


@pytest.mark.slow
def test_disentanglement_figures_smoke(tmp_path):
    runs = tmp_path / "runs"
    assert cli.main(["train", "beta_vae", "--epochs", "1", "--quiet", "--device", "cpu",
                     "--set", "model.hidden=[16]", "--set", "eval.k=2",
                     "--out", str(runs / "beta_vae-s0")]) == 0
    load_script("disentanglement").main(["--runs", str(runs), "--figure-dir",
                                         str(tmp_path / "fig"), "--json", str(tmp_path / "t.json")])
    for name in ("disentanglement", "traversals", "mutual_information"):
        assert (tmp_path / "fig" / f"shapes_{name}.png").exists()
    assert json.loads((tmp_path / "t.json").read_text())["rows"][0]["objective"] == "beta_vae"
