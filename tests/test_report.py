"""pyro-vae report: a self-contained page whose every figure a browser can show."""

import base64
import re
import shutil
import subprocess

import pytest

from pyro_vae import cli

# every test here trains runs (or shares the module's two runs) and draws their figures
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    runs = []
    for seed in (0, 1):
        out = root / f"run{seed}"
        assert cli.main(["train", "--epochs", "2", "--quiet", "--device", "cpu", "--out", str(out),
                         "--seed", str(seed), "--set", "eval.k=30"]) == 0
        runs.append(out)
    return runs


def test_report_of_a_comparison(two_runs, tmp_path):
    out = tmp_path / "report"
    assert cli.main(["report", *map(str, two_runs), "-o", str(out)]) == 0
    page = (out / "report.html").read_text()
    images = re.findall(r'<img src="data:image/png;base64,([^"]+)"', page)
    # per run: curves, KL curves, samples, bound, k-hat; for the pair: comparison, bounds
    assert len(images) == 2 * 5 + 2
    assert all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in images)
    assert "paired difference vs run0" in page and "IWAE k=30" in page
    md = (out / "report.md").read_text()
    linked = re.findall(r"\]\((figures/[^)]+\.png)\)", md)
    assert len(linked) == len(images) and all((out / f).is_file() for f in linked)
    assert cli.main(["report", str(two_runs[0]), "-o", str(out)]) == 2  # no overwrite
    assert cli.main(["report", str(tmp_path), "-o", str(tmp_path / "x")]) == 2  # not a run


@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="headless check needs Debian's chromium (.ci/run installs it)")
def test_report_renders_every_figure_in_headless_chromium(two_runs, tmp_path):
    out = tmp_path / "report"
    assert cli.main(["report", str(two_runs[0]), "-o", str(out)]) == 0
    dom = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu",
                          "--virtual-time-budget=10000", "--dump-dom",
                          (out / "report.html").as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    loaded = re.search(r'data-figures="(\d+)/(\d+)"', dom)
    assert loaded, "the page's load check did not run"
    assert loaded.group(1) == loaded.group(2) == "5"


def test_report_without_fitted_khat(tmp_path):
    out = tmp_path / "run"
    assert cli.main(["train", "--epochs", "1", "--quiet", "--device", "cpu", "--out", str(out),
                     "--set", "eval.k=10"]) == 0
    assert cli.main(["report", str(out), "-o", str(tmp_path / "rep")]) == 0
    page = (tmp_path / "rep" / "report.html").read_text()
    assert "k-hat not fitted: k = 10 is below 25" in page
    assert page.count("<img") == 4  # curves, KL curves, samples, bound; no empty k-hat panel


def test_report_of_a_checkpoint_without_an_image_shape(two_runs, tmp_path):
    """A checkpoint that records no image shape (an older one): the samples are drawn as one
    row of the model's 64 pixels, not of as many pixels as there are test images."""
    from pyro_vae.checkpoint import load_checkpoint, save_checkpoint

    run = tmp_path / "old"
    shutil.copytree(two_runs[0], run)
    for name in ("checkpoint.pt", "best.pt"):
        if (run / name).exists():
            state = load_checkpoint(run / name)
            del state["image_shape"], state["digest"]
            save_checkpoint(state, run / name)
    out = tmp_path / "report"
    assert cli.main(["report", str(run), "-o", str(out)]) == 0
    assert (out / "figures" / "old-samples.png").stat().st_size > 1000
