"""Every likelihood: normalized over its support, refuses data outside it, fits a VAE."""

import pytest
import torch

from pyro_vae import config, recipes, registries
from pyro_vae.datasets import load_dataset
from pyro_vae.errors import ConfigError
from pyro_vae.likelihoods import DiscretizedLogisticMixture
from pyro_vae.compatibility import check_compatible


def make(name, event_shape=(3,), **options):
    ctx = registries.BuildContext(event_shape=event_shape, latent_dim=2, hidden=[8], activation="tanh")
    return registries.build_component(registries.LIKELIHOODS, name, "likelihood", ctx, options)


def per_value(p):
    """The univariate distribution of each value (strip the to_event wrapper)."""
    return p.base_dist


@pytest.mark.parametrize("name", ["continuous_bernoulli", "gaussian"])
def test_continuous_likelihoods_integrate_to_one(name):
    torch.manual_seed(0)
    p = per_value(make(name)(torch.randn(2)))
    lo, hi = (0.0, 1.0) if name == "continuous_bernoulli" else (-30.0, 30.0)
    grid = torch.linspace(lo, hi, 20001)[:, None]
    with torch.no_grad():
        density = p.log_prob(grid).exp()
    total = torch.trapezoid(density, grid[:, 0], dim=0)
    assert torch.allclose(total, torch.ones(3), atol=1e-3)


@pytest.mark.parametrize("bins", [17, 256])
@pytest.mark.parametrize("mixtures", [1, 3])
def test_discretized_logistic_sums_to_one_over_its_levels(bins, mixtures):
    torch.manual_seed(1)
    p = per_value(make("discretized_logistic", num_mixtures=mixtures, num_bins=bins)(
        torch.randn(2)))
    levels = (torch.arange(bins, dtype=torch.float) / (bins - 1))[:, None]
    with torch.no_grad():
        total = p.log_prob(levels).exp().sum(0)
    assert torch.allclose(total, torch.ones(3), atol=1e-4)
    s = p.sample((5,))
    assert s.shape == (5, 3) and ((s * (bins - 1) - (s * (bins - 1)).round()).abs() < 1e-4).all()


def test_discretized_logistic_narrow_component_is_stable():
    """A tiny scale puts almost all mass on one level, without NaN."""
    d = DiscretizedLogisticMixture(torch.zeros(1, 1), torch.full((1, 1), 0.5),
                                   torch.full((1, 1), -7.0), num_bins=256)
    levels = torch.arange(256, dtype=torch.float)[:, None] / 255
    lp = d.log_prob(levels)
    assert torch.isfinite(lp).all()
    assert float(lp.exp().sum()) == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("name, bad", [
    ("bernoulli", 0.5),
    ("continuous_bernoulli", 1.5),
    ("discretized_logistic", 0.5 / 255),
])
def test_values_outside_the_support_are_refused(name, bad):
    p = per_value(make(name)(torch.randn(2)))
    p._validate_args = True
    with pytest.raises(ValueError):
        p.log_prob(torch.full((3,), bad))


def test_gaussian_scale_option():
    assert make("gaussian").log_scale.requires_grad
    fixed = make("gaussian", scale=0.1)
    assert not fixed.log_scale.requires_grad
    assert torch.allclose(fixed(torch.randn(2)).base_dist.scale, torch.full((3,), 0.1))
    with pytest.raises(ConfigError, match="scale must be 'learned' or a positive number"):
        make("gaussian", scale=-1.0)


@pytest.mark.parametrize("name, binarization, match", [
    ("bernoulli", "none", "needs binary data"),
    ("discretized_logistic", "dynamic", "set data.binarization = 'none'"),
])
def test_incompatible_data_is_refused(name, binarization, match):
    data = load_dataset("digits")
    with pytest.raises(ConfigError, match=match):
        check_compatible(make(name, event_shape=(64,)), data, binarization)


def test_discretized_logistic_needs_the_datas_grid():
    data = load_dataset("digits")  # 17 grey levels
    with pytest.raises(ConfigError, match="not on that grid; set likelihood_options.num_bins"):
        check_compatible(make("discretized_logistic", event_shape=(64,)), data, "none")
    check_compatible(make("discretized_logistic", event_shape=(64,), num_bins=17), data, "none")
    for name in ("continuous_bernoulli", "gaussian"):
        check_compatible(make(name, event_shape=(64,)), data, "none")


@pytest.mark.slow
@pytest.mark.parametrize("name, options", [("continuous_bernoulli", {}), ("gaussian", {}),
                                           ("discretized_logistic", {"num_bins": 17})])
def test_grey_level_likelihoods_train_on_digits(tmp_path, name, options):
    from pyro_vae.runfolder import prepare_run_folder
    from pyro_vae.run import Run

    cfg = recipes.apply_overrides(config.Config(), {
        "model.likelihood": name, "model.likelihood_options": options, "model.hidden": [32],
        "model.latent_dim": 4, "data.binarization": "none", "train.epochs": 3,
        "train.batch_size": 100, "eval.k": 5})
    run = Run(cfg, prepare_run_folder(tmp_path / name), device="cpu", quiet=True)
    records = run.fit()
    assert records[-1]["train_elbo"] > records[0]["train_elbo"]
    summary = run.finish()
    assert summary["test_log_likelihood"] >= summary["test_elbo"] - 1e-6
