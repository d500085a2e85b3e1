"""Every script in analysis/ and every recipe in models/ is smoke-run with tiny settings."""

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
        assert all(v > 0 for v in ips.values())
        assert results[label]["ratios"]["project_vs_plain"] > 0
    assert results["iwae_step_cost_vs_one_particle"][3] > 0


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
    out = tmp_path / recipe
    assert cli.main(["train", recipe, "--epochs", "1", "--quiet", "--device", "cpu",
                     "--set", "eval.k=10", "--out", str(out)]) == 0
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


@pytest.mark.parametrize("estimator", ["project", "plain"])
def test_benchmark_loglik_worker_smoke(estimator, capsys):
    """Each estimator of the benchmark runs (in-process here; the script runs them in
    subprocesses), and both estimate the same thing."""
    import json

    bench = load_script("benchmark_loglik")
    bench.main(["--data", "digits", "--num-test", "30", "--k", "40", "--batch-size", "16",
                "--particle-batch", "16", "--worker", estimator])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["estimator"] == estimator and out["num_test"] == 30 and out["k"] == 40
    assert out["datapoint_particles_per_second"] > 0 and out["peak_rss_mb"] > 0
    assert out["mean_log_likelihood"] < 0


def test_compare_recipes_smoke(tmp_path):
    bench = load_script("compare_recipes")
    results = tmp_path / "RESULTS.md"
    rows = bench.main(["vae", "vae_mog", "--data", "digits", "--epochs", "1", "--k", "30",
                       "--out", str(tmp_path / "runs"), "--results", str(results),
                       "--set", "model.hidden=[16]"])
    assert [r["recipe"] for r in rows] == ["vae", "vae_mog"]
    assert "difference" in rows[1] and "difference" not in rows[0]
    text = results.read_text()
    assert "| `vae_mog` |" in text and "paired difference" in text
    # a second call reuses the finished runs and their estimates
    again = bench.main(["vae", "vae_mog", "--data", "digits", "--epochs", "1", "--k", "30",
                        "--out", str(tmp_path / "runs"), "--set", "model.hidden=[16]"])
    assert again[1]["log_likelihood"] == rows[1]["log_likelihood"]


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


def test_anomaly_detection_smoke(tmp_path):
    script = load_script("anomaly_detection")
    result = script.main(["--data", "digits", "--held-out", "3", "--epochs", "2", "--k", "10",
                          "--out", str(tmp_path / "a"), "--device", "cpu",
                          "--set", "model.hidden=[32]"])
    assert result["num_test"] == 297 and 0 < result["num_held_out"] < 297
    assert 0.0 <= result["auroc_neg_log_likelihood"] <= 1.0
    assert (tmp_path / "a" / "auroc.json").exists()
    import json as _json
    cfg = _json.loads((tmp_path / "a" / "run" / "config.json").read_text())
    assert cfg["data"]["classes"] == [0, 1, 2, 4, 5, 6, 7, 8, 9]


def test_ae_vs_vae_smoke(tmp_path):
    import json

    script = load_script("ae_vs_vae")
    script.main(["--data", "digits", "--epochs", "1", "--k", "3", "--num-codes", "100",
                 "--out", str(tmp_path / "runs")])
    summary = json.loads((tmp_path / "runs" / "ae_vs_vae.json").read_text())
    assert set(summary) == {"vae", "ae", "dae"}
    assert (tmp_path / "runs" / "ae_vs_vae.png").read_bytes()[:4] == b"\x89PNG"
    assert all(row["hole_ratio"] > 0 for row in summary.values())


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
    assert all(0 <= r["test_accuracy"] <= 1 for r in rows)
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
    assert 0 <= result["overall"] <= 1
    assert (run / "samples-by-label.png").exists()


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
