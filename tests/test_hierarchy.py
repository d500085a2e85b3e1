"""Hierarchical VAEs: exact answers on a two-layer linear-Gaussian model, sites and shapes,
top-down inference, per-layer diagnostics and recipes."""

import math

import pyro
import pytest
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

from pyro_vae.config import ModelConfig
from pyro_vae.registries import build_vae
from pyro_vae.errors import ConfigError
from pyro_vae.infer import latent_report, log_likelihood, log_weights
from pyro_vae.guides import MIN_SCALE, DiagonalNormalGuide
from pyro_vae.hierarchy import (BottomUpGuide, GaussianConditional, HierarchicalVAE,
                                LadderGuide)
from pyro_vae.likelihoods import GaussianLikelihood
from pyro_vae.priors import StandardNormalPrior
from pyro_vae.vae import VAE

# ---------------------------------------------------------------------------------------
# z2 ~ N(0, 1); z1 | z2 ~ N(A z2 + a, diag(s1^2)); x | z1 ~ N(B z1 + b, s^2 I).
# B has orthogonal columns, so p(z1 | z2, x) has a diagonal covariance (the ladder guide
# is exact); with A = [alpha, 0] p(z1 | x) is diagonal too (the bottom-up guide is exact).

B = torch.tensor([[0.8, 0.5], [0.8, -0.5], [0.8, 0.5], [0.8, -0.5]], dtype=torch.float64)
b = torch.tensor([0.1, -0.1, 0.2, 0.0], dtype=torch.float64)
s = 0.5
a = torch.tensor([0.3, -0.2], dtype=torch.float64)
s1 = torch.tensor([0.6, 0.9], dtype=torch.float64)
A_COUPLED = torch.tensor([[1.5], [-0.8]], dtype=torch.float64)
A_AXIS = torch.tensor([[1.5], [0.0]], dtype=torch.float64)


def inv_softplus(y):
    return y + torch.log(-torch.expm1(-y))


def set_gaussian_head(linear, weight, bias, scale):
    """Make a Linear layer with 2 D outputs emit mean = weight @ in + bias, constant scale."""
    d = bias.shape[0]
    with torch.no_grad():
        linear.weight.zero_()
        linear.weight[:d] = weight
        linear.bias[:d] = bias
        linear.bias[d:] = inv_softplus(scale - MIN_SCALE)


def exact_log_px(A, x):
    cov1 = A @ A.T + torch.diag(s1 ** 2)
    cov = B @ cov1 @ B.T + s ** 2 * torch.eye(4, dtype=torch.float64)
    return torch.distributions.MultivariateNormal(B @ a + b, cov).log_prob(x)


def linear_hvae(A, inference, inflate=1.0):
    """The model above with the exact posterior as guide (scales times ``inflate``)."""
    prior = StandardNormalPrior(1)
    conditional = GaussianConditional(1, 2, hidden=[])
    set_gaussian_head(conditional.net.output_layer, A, a, s1)
    likelihood = GaussianLikelihood((4,), 2, hidden=[], scale=s)
    with torch.no_grad():
        likelihood.decoder.output_layer.weight.copy_(B)
        likelihood.decoder.output_layer.bias.copy_(b)
    btb = B.T @ B
    if inference == "bottom_up":
        assert A[1, 0] == 0
        cov1 = A @ A.T + torch.diag(s1 ** 2)
        prec1 = torch.linalg.inv(cov1) + btb / s ** 2
        var1 = torch.linalg.inv(prec1)
        w1 = var1 @ B.T / s ** 2
        c1 = var1 @ (torch.linalg.solve(cov1, a) - B.T @ b / s ** 2)
        prec2 = 1 + A.T @ torch.diag(s1 ** -2) @ A
        w2 = torch.linalg.solve(prec2, A.T @ torch.diag(s1 ** -2))
        layers = [DiagonalNormalGuide((4,), 2, hidden=[]), DiagonalNormalGuide((2,), 1, hidden=[])]
        set_gaussian_head(layers[0].encoder.output_layer, w1, c1, inflate * torch.diagonal(var1).sqrt())
        set_gaussian_head(layers[1].encoder.output_layer, w2, -w2 @ a,
                          inflate * torch.diagonal(torch.linalg.inv(prec2)).sqrt())
        guide = BottomUpGuide(layers)
    else:
        # layer 1: the Gaussian "estimate" of z1 from x alone; layer 2 (on layer 1's
        # features, which are x itself without hidden layers): p(z2 | x)
        w1 = torch.linalg.solve(btb, B.T)
        c = B @ torch.diag(s1 ** 2) @ B.T + s ** 2 * torch.eye(4, dtype=torch.float64)
        prec2 = 1 + A.T @ B.T @ torch.linalg.solve(c, B @ A)
        w2 = torch.linalg.solve(prec2, A.T @ B.T @ torch.linalg.inv(c))
        layers = [DiagonalNormalGuide((4,), 2, hidden=[]), DiagonalNormalGuide((4,), 1, hidden=[])]
        set_gaussian_head(layers[0].encoder.output_layer, w1, -w1 @ b,
                          inflate * s / torch.diagonal(btb).sqrt())
        set_gaussian_head(layers[1].encoder.output_layer, w2, -w2 @ (B @ a + b),
                          inflate * torch.linalg.inv(prec2).diagonal().sqrt())
        guide = LadderGuide(layers)
    return HierarchicalVAE(prior, guide, likelihood, [conditional]).double()


def data_from_model(A, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    z2 = torch.randn(n, 1, generator=g, dtype=torch.float64)
    z1 = z2 @ A.T + a + s1 * torch.randn(n, 2, generator=g, dtype=torch.float64)
    return z1 @ B.T + b + s * torch.randn(n, 4, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("inference,A", [("bottom_up", A_AXIS), ("ladder", A_COUPLED),
                                         ("ladder", A_AXIS)])
def test_exact_posterior_guide_gives_exact_log_likelihood(inference, A):
    vae = linear_hvae(A, inference)
    x = data_from_model(A, 40)
    exact = exact_log_px(A, x)
    with torch.no_grad():
        lw = log_weights(vae.model, vae.guide, x, num_particles=25)
    # every importance weight is p(x) itself
    assert torch.allclose(lw, exact.expand_as(lw), atol=1e-6)
    result = log_likelihood(vae.model, vae.guide, x, num_particles=7, batch_size=16)
    assert torch.allclose(result.log_likelihood, exact, atol=1e-6)
    assert torch.allclose(result.elbo, exact, atol=1e-6)


def test_estimator_approaches_exact_value_as_k_grows():
    vae = linear_hvae(A_AXIS, "bottom_up", inflate=1.6)
    x = data_from_model(A_AXIS, 200, seed=1)
    exact = float(exact_log_px(A_AXIS, x).mean())
    result = log_likelihood(vae.model, vae.guide, x, num_particles=1000, batch_size=100,
                            particle_batch=250, seed=0)
    gaps = [exact - float(result.k_sweep[k].mean()) for k in (1, 10, 100, 1000)]
    assert gaps[0] > 0.2                                   # the ELBO of a broad guide is loose
    assert all(g1 > g2 for g1, g2 in zip(gaps, gaps[1:]))  # the bound tightens with k
    assert abs(gaps[-1]) < 0.02  # and reaches log p(x), up to Monte Carlo error


def test_per_layer_kl_adds_up_to_the_exact_gap_with_bottom_up_inference():
    """ELBO = E_q[log p(x|z1)] - (KL_z1 + KL_z2); with the exact posterior the ELBO is
    log p(x). In bottom-up inference z2 depends on z1 in q, so z1's KL must come from the
    joint samples (the analytic KL at sampled z2 is off by their covariance)."""
    A = A_AXIS * torch.tensor([[2.0], [1.0]], dtype=torch.float64)
    vae = linear_hvae(A, "bottom_up")
    x = data_from_model(A, 100, seed=2)
    report = latent_report(vae.model, vae.guide, x, num_samples=400, batch_size=100)
    # E_q[log p(x|z1)] with z1 ~ N(m1, diag v1), in closed form
    with torch.no_grad():
        q1 = vae.posterior.layers[0](x)
    m1, v1 = q1.base_dist.loc, q1.base_dist.scale ** 2
    expected_log_lik = torch.distributions.Normal(m1 @ B.T + b, s).log_prob(x).sum(-1) \
        - (v1 @ (B ** 2).T).sum(-1) / (2 * s ** 2)
    gap = float((expected_log_lik - exact_log_px(A, x)).mean())
    assert set(report.kl) == {"z1", "z2"}
    assert sum(report.kl.values()) == pytest.approx(gap, abs=0.05)
    assert report.kl_per_dim["z1"].shape == (2,) and report.kl_per_dim["z2"].shape == (1,)


# ---------------------------------------------------------------------------------------
# Sites and shapes


@pytest.mark.parametrize("inference", ["bottom_up", "ladder"])
@pytest.mark.parametrize("dims", [[6], [6, 4], [6, 4, 2]])
def test_sites_and_shapes(dims, inference):
    vae = build_vae(ModelConfig(latent_dim=dims, hidden=[16], inference=inference), (10,))
    x = torch.bernoulli(torch.full((5, 10), 0.5))
    names = [f"z{i + 1}" for i in range(len(dims))]
    assert vae.sites == tuple(names) and vae.latent_dims == tuple(dims)
    for particles in ((), (3,)):
        with pyro.plate("particles", 3, dim=-2) if particles else _null():
            guide_trace = poutine.trace(vae.guide).get_trace(x)
            model_trace = poutine.trace(poutine.replay(vae.model, trace=guide_trace)).get_trace(x)
        latents = [n for n, site in guide_trace.nodes.items() if _is_sample(site)]
        expected_order = names if inference == "bottom_up" else names[::-1]
        assert latents == expected_order
        model_sites = [n for n, site in model_trace.nodes.items() if _is_sample(site)]
        assert model_sites == names[::-1] + ["x"]  # top-down, then the data
        for name, d in zip(names, dims):
            assert guide_trace.nodes[name]["value"].shape == (*particles, 5, d)
            site = model_trace.nodes[name]
            assert site["fn"].log_prob(site["value"]).shape == (*particles, 5)
        assert model_trace.nodes["x"]["fn"].batch_shape == (*particles, 5)
    assert vae.reconstruct(x).shape == (5, 10)
    assert vae.sample(7).shape == (7, 10)
    assert set(vae.encode(x)) == set(names)


def _is_sample(site):
    return site["type"] == "sample" and not site_is_subsample(site)


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def test_one_layer_hierarchy_is_the_flat_vae():
    torch.manual_seed(0)
    flat = build_vae(ModelConfig(latent_dim=3, hidden=[8]), (10,))
    deep = HierarchicalVAE(flat.prior, BottomUpGuide([flat.posterior]), flat.likelihood)
    x = torch.bernoulli(torch.full((4, 10), 0.5))
    pyro.set_rng_seed(1)
    a = log_weights(flat.model, flat.guide, x, 6)
    pyro.set_rng_seed(1)
    b_ = log_weights(deep.model, deep.guide, x, 6)
    assert torch.allclose(a, b_)
    assert isinstance(deep, VAE)


def test_ladder_guide_shares_the_generative_conditionals():
    vae = build_vae(ModelConfig(latent_dim=[6, 3], hidden=[16], inference="ladder"), (10,))
    x = torch.bernoulli(torch.full((5, 10), 0.5))
    pyro.clear_param_store()
    guide_trace = poutine.trace(vae.guide).get_trace(x)
    params = [n for n, site in guide_trace.nodes.items() if site["type"] == "param"]
    assert any(n.startswith("vae.conditionals") for n in params)
    # the guide's q(z1 | z2, x) depends on the conditional's weights
    loss = -guide_trace.log_prob_sum()
    loss.backward()
    grad = vae.conditionals[0].net.output_layer.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    # and plain SVI takes the model and guide unchanged; each parameter is stored once
    svi = pyro.infer.SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}),
                         pyro.infer.Trace_ELBO())
    before = vae.conditionals[0].net.output_layer.weight.detach().clone()
    assert math.isfinite(svi.step(x))
    assert not torch.equal(before, vae.conditionals[0].net.output_layer.weight)


def test_sample_with_fixed_top_layer():
    vae = build_vae(ModelConfig(latent_dim=[6, 4, 2], hidden=[16]), (10,))
    top = torch.randn(3, 2)
    assert vae.sample(3, top=top).shape == (3, 10)
    z1 = torch.randn(3, 6)
    assert torch.equal(vae.sample(3, top=z1, layer=1), vae.likelihood(z1).mean)
    with pytest.raises(ValueError, match=r"top must have shape \(3, 2\)"):
        vae.sample(3, top=torch.randn(3, 4))
    with pytest.raises(ValueError, match="layer must be in 1..3"):
        vae.sample(3, layer=4)


# ---------------------------------------------------------------------------------------
# Recipes and errors


def test_priors_and_flow_guides_in_a_hierarchy():
    x = torch.bernoulli(torch.full((4, 10), 0.5))
    for inference in ("bottom_up", "ladder"):
        for prior in ("standard_normal", "mog", "vamp", "flow"):
            vae = build_vae(ModelConfig(latent_dim=[6, 3], hidden=[[16], [12]], prior=prior,
                                        guide=["iaf", "diagonal_normal"], inference=inference,
                                        prior_options={"num_pseudo": 5} if prior == "vamp" else {},
                                        guide_options={"num_flows": 1}), (10,))
            assert vae.prior.latent_dim == 3 if hasattr(vae.prior, "latent_dim") else True
            loss = pyro.infer.Trace_ELBO().differentiable_loss(vae.model, vae.guide, x)
            loss.backward()
            assert torch.isfinite(loss)
            assert torch.isfinite(log_weights(vae.model, vae.guide, x, 4)).all()


@pytest.mark.parametrize("model,match", [
    (dict(latent_dim=[6, 3], guide="full_cov_normal", inference="ladder"),
     "diagonal-Gaussian bases"),
    (dict(latent_dim=[6, 3], guide="planar", prior="vamp"), "the top layer's PlanarGuide"),
    (dict(latent_dim=[6, 3], guide=["iaf"]), "list of 2 names"),
    (dict(latent_dim=[6, 3], hidden=[[16], [8], [4]]), r"2 such lists"),
    (dict(latent_dim=[6, 0]), "positive integer"),
    (dict(latent_dim=6, inference="ladder"), "latent_dim as a list"),
    (dict(latent_dim=[6, 3], inference="sideways"), "unknown model.inference"),
    (dict(latent_dim=[6, 3], guide_options={"num_pseudo": 3}), "no layer's guide takes"),
])
def test_bad_hierarchies_are_refused(model, match):
    with pytest.raises(ConfigError, match=match):
        build_vae(ModelConfig(**{"hidden": [16], **model}), (10,))


def test_mismatched_components_are_refused():
    guide = BottomUpGuide([DiagonalNormalGuide((10,), 6, [8]), DiagonalNormalGuide((6,), 3, [8])])
    from pyro_vae.likelihoods import BernoulliLikelihood
    with pytest.raises(ValueError, match="needs 1 prior conditionals"):
        HierarchicalVAE(StandardNormalPrior(3), guide, BernoulliLikelihood((10,), 6, [8]))
    with pytest.raises(ValueError, match="prior .*latent_dim 4"):
        HierarchicalVAE(StandardNormalPrior(4), guide, BernoulliLikelihood((10,), 6, [8]),
                        [GaussianConditional(3, 6)])
    with pytest.raises(ValueError, match="parents of size 2"):
        HierarchicalVAE(StandardNormalPrior(3), guide, BernoulliLikelihood((10,), 6, [8]),
                        [GaussianConditional(2, 6)])


def test_cli_trains_a_hierarchy_and_draws_the_layer_figure(tmp_path):
    from pyro_vae import cli

    out = tmp_path / "h3"
    assert cli.main(["train", "--epochs", "1", "--quiet", "--device", "cpu", "--out", str(out),
                     "--set", "model.latent_dim=[8, 4, 2]", "--set", "model.hidden=[32]",
                     "--set", "model.inference='ladder'", "--set", "eval.k=5"]) == 0
    assert (out / "layers.png").exists()
    summary = __import__("json").loads((out / "eval.json").read_text())
    assert set(summary["active_units"]) == {"z1", "z2", "z3"}
    assert summary["latent_dims"] == {"z1": 8, "z2": 4, "z3": 2}
    assert cli.main(["sample", str(out), "--layers", "-n", "16", "--device", "cpu"]) == 0
    assert (out / "layers-16-seed0.png").exists()
    flat = tmp_path / "flat"
    assert cli.main(["train", "--epochs", "1", "--quiet", "--device", "cpu", "--out", str(flat),
                     "--set", "eval.k=5"]) == 0
    assert not (flat / "layers.png").exists()
    assert cli.main(["sample", str(flat), "--layers"]) == 2
