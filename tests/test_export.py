"""ArviZ export of latent posteriors: importance resampling moves toward p(z|x); the file
opens with arviz.from_netcdf and ArviZ's summaries and plots run on it."""

import arviz as az
import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_vae import cli
from pyro_vae.export import latent_draws, to_inference_data

W = torch.tensor([1.5, -1.0, 0.5])
S = 0.5


def model(x):
    with pyro.plate("data", x.shape[0], dim=-1):
        z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], 1), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z * W, S).to_event(1), obs=x)


def exact_posterior(x):
    precision = 1 + (W ** 2).sum() / S ** 2
    return (x @ W / S ** 2 / precision).unsqueeze(-1), precision ** -0.5


def bad_guide(x):  # the exact posterior shifted by two of its sds and 1.5 times too broad
    loc, scale = exact_posterior(x)
    with pyro.plate("data", x.shape[0], dim=-1):
        pyro.sample("z", dist.Normal(loc + 2 * scale, 1.5 * scale).to_event(1))


def test_resampled_draws_follow_the_posterior_better_than_the_guide():
    torch.manual_seed(0)
    x = torch.randn(20, 1) * W + S * torch.randn(20, 3)
    guide_draws, resampled, stats = latent_draws(model, bad_guide, x, num_samples=400,
                                                 num_particles=4000, batch_size=10)
    loc, scale = exact_posterior(x)
    assert guide_draws["z"].shape == resampled["z"].shape == (400, 20, 1)
    guide_error = (guide_draws["z"].mean(0) - loc).abs().mean()
    resampled_error = (resampled["z"].mean(0) - loc).abs().mean()
    assert guide_error > 0.45 and resampled_error < 0.05
    assert resampled["z"].std(0).mean() == pytest.approx(float(scale), rel=0.15)
    # the estimates are the IWAE bound of the same particles
    exact = dist.MultivariateNormal(torch.zeros(3), torch.outer(W, W) + S ** 2 * torch.eye(3))
    assert torch.allclose(stats["log_likelihood"].float(), exact.log_prob(x), atol=0.05)
    assert (stats["ess"] <= 4000).all() and (stats["elbo"] < stats["log_likelihood"]).all()


def test_inference_data_dims_and_netcdf_roundtrip(tmp_path):
    x = torch.randn(6, 3)
    idata = to_inference_data(model, bad_guide, x, labels=list(range(6)), num_samples=20,
                              num_particles=50, num_chains=2)
    assert set(idata.groups()) == {"posterior", "guide", "estimates"}
    assert dict(idata.posterior.z.sizes) == {"chain": 2, "draw": 10, "image": 6, "z_dim": 1}
    assert list(idata.estimates.label.values) == list(range(6))
    path = tmp_path / "latents.nc"
    idata.to_netcdf(str(path))
    back = az.from_netcdf(str(path))
    summary = az.summary(back, var_names=["z"])
    assert len(summary) == 6 and summary["mean"].notna().all()
    with pytest.raises(ValueError, match="num_chains"):
        to_inference_data(model, bad_guide, x, num_samples=21, num_particles=50, num_chains=2)
    with pytest.raises(ValueError, match="num_samples"):
        latent_draws(model, bad_guide, x, num_samples=60, num_particles=50)


def test_cli_export_and_arviz_script(tmp_path):
    import importlib.util
    from pathlib import Path

    run = tmp_path / "run"
    assert cli.main(["train", "--epochs", "1", "--quiet", "--device", "cpu", "--out", str(run),
                     "--set", "model.latent_dim=[6, 3]", "--set", "model.hidden=[16]",
                     "--set", "eval.k=5"]) == 0
    out = tmp_path / "latents.nc"
    assert cli.main(["export", str(run), "-o", str(out), "--num-images", "12",
                     "--num-samples", "20", "--k", "40", "--device", "cpu"]) == 0
    idata = az.from_netcdf(str(out))
    assert set(idata.posterior.data_vars) == {"z1", "z2"}
    assert dict(idata.posterior.z2.sizes) == {"chain": 2, "draw": 10, "image": 12, "z2_dim": 3}
    assert cli.main(["export", str(run), "-o", str(out)]) == 2  # exists: not overwritten
    root = Path(__file__).resolve().parent.parent
    spec = importlib.util.spec_from_file_location("arviz_latents",
                                                  root / "analysis" / "arviz_latents.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    summary = script.main([str(out), "--out", str(tmp_path / "az"), "--images", "0", "1"])
    assert len(summary) == 2 * 4
    for name in ("summary.csv", "forest.png", "khat.png"):
        assert (tmp_path / "az" / name).stat().st_size > 0
