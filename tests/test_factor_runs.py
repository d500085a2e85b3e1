"""Runs on data with known factors: the disentangling recipes train on ``shapes`` from the
CLI, and ``eval.json``, the figures, ``pyro-vae evaluate`` and the report carry MIG and DCI."""

import json

import pytest
import torch

from pyro_vae import cli
from pyro_vae.config import ModelConfig
from pyro_vae.datasets import load_dataset
from pyro_vae.factor_eval import dimension_labels, factor_sample, supports_factor_metrics
from pyro_vae.registries import build_vae


@pytest.mark.slow
def test_beta_tcvae_trains_on_shapes_and_reports_its_disentanglement(tmp_path, capsys):
    out = tmp_path / "btc"
    assert cli.main(["train", "beta_tcvae", "--epochs", "1", "--quiet", "--device", "cpu",
                     "--set", "model.hidden=[32]", "--set", "eval.k=5", "--out", str(out)]) == 0
    summary = json.loads((out / "eval.json").read_text())
    assert 0 <= summary["mig"] <= 1
    assert set(summary["dci"]) == {"disentanglement", "completeness", "informativeness"}
    details = summary["disentanglement"]
    assert details["factor_names"] == ["shape", "scale", "orientation", "x", "y"]
    assert len(details["mutual_information"]) == 10 and details["settings"]["points"] == 10000
    assert (out / "mutual_information.png").exists()
    assert (out / "factor_traversals.png").exists() == bool(details["active_dims"])
    capsys.readouterr()
    assert cli.main(["evaluate", str(out), "--k", "5", "--device", "cpu", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "MIG" in printed and "DCI disentanglement" in printed
    again = json.loads((out / "eval.json").read_text())
    assert again["mig"] == pytest.approx(summary["mig"])  # same codes, same seeds
    assert cli.main(["report", str(out), "--out", str(tmp_path / "report")]) == 0
    assert "MIG" in (tmp_path / "report" / "report.md").read_text()


def test_factor_sample_is_seeded_and_keeps_factors_with_their_images():
    data = load_dataset("shapes")
    images, factors = factor_sample(data, max_points=50, seed=3)
    again_images, again_factors = factor_sample(data, max_points=50, seed=3)
    assert torch.equal(images, again_images) and torch.equal(factors, again_factors)
    rows = [int((data.train == image).all(1).nonzero()) for image in images[:5]]
    assert torch.equal(data.train_factors[rows], factors[:5])
    with pytest.raises(ValueError, match="no known factors"):
        factor_sample(load_dataset("digits"))


def test_metrics_are_computed_only_for_one_continuous_latent_layer():
    assert supports_factor_metrics(build_vae(ModelConfig(latent_dim=3, hidden=[8]), (64,)))
    assert not supports_factor_metrics(build_vae(ModelConfig(latent_dim=[3, 2], hidden=[8]), (64,)))
    assert not supports_factor_metrics(build_vae(
        ModelConfig(latent_dim=12, hidden=[8], guide="categorical", prior="categorical",
                    guide_options={"num_classes": 4}), (64,)))
    assert not supports_factor_metrics(build_vae(
        ModelConfig(latent_dim=3, hidden=[8], conditional=True, num_classes=3), (64,)))


def test_a_conditional_model_on_shapes_trains_and_evaluates_without_factor_metrics(tmp_path):
    """Its code is read given the shape label, so the metrics are left out, not crashed on."""
    out = tmp_path / "cvae"
    assert cli.main(["train", "cvae", "--data", "shapes", "--epochs", "0", "--quiet",
                     "--device", "cpu", "--set", "eval.k=2", "--set", "model.hidden=[8]",
                     "--set", "data.binarization=\"none\"", "--out", str(out)]) == 0
    summary = json.loads((out / "eval.json").read_text())
    assert "mig" not in summary and "test_log_likelihood" in summary


def test_dimension_labels_name_the_most_informative_factor():
    details = {"mutual_information": [[0.1, 0.9], [0.0, 0.0], [0.7, 0.2]],
               "factor_names": ["x", "y"], "active_dims": [0, 2]}
    assert dimension_labels(details) == ["z0: y (0.90 nats)", "z2: x (0.70 nats)"]
