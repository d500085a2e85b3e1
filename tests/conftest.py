"""Global test state: a clean param store, validation on, fixed seeds, CPU only."""

import matplotlib
import pyro
import pytest
import torch

matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def clean_pyro_state():
    pyro.clear_param_store()
    pyro.enable_validation(True)
    pyro.set_rng_seed(0)
    yield
    pyro.clear_param_store()


@pytest.fixture(autouse=True)
def isolated_data_env(monkeypatch, tmp_path_factory):
    """No test reads the user's $PYRO_VAE_DATA or cache."""
    monkeypatch.delenv("PYRO_VAE_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def small_vae():
    """A small VAE on 64-dimensional data (8x8 digits)."""
    from pyro_vae.config import ModelConfig
    from pyro_vae.registries import build_vae

    return build_vae(ModelConfig(latent_dim=3, hidden=[16]), (64,))


@pytest.fixture
def binary_batch():
    return torch.bernoulli(torch.full((5, 64), 0.3))
