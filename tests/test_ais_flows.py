"""Annealing with flow guides: chains in the flow's base space (NeuTra HMC), checked against
the densities in z computed with the flow's true inverse, and against closed forms."""

import pyro
import pyro.distributions as dist
import pyro.distributions.transforms as T
import pytest
import torch
from pyro.nn import AutoRegressiveNN

from exact_models import linear_gaussian_case
from pyro_vae.infer import (AnnealedChains, ModelGuideMismatch, ais_log_likelihood, bdmc,
                            log_likelihood)


@pytest.fixture
def case():
    return linear_gaussian_case(30)


def iaf_guide(case, num_flows=2, planar=False):
    """The shifted diagonal guide of the case pushed through fixed random flows (IAF with a
    permutation between steps, or planar steps); returns ``(guide, transforms)``."""
    W, b, s = case["W"], case["b"], case["s"]
    cov_post = torch.linalg.inv(case["precision"])
    torch.manual_seed(5)
    transforms = []
    for i in range(num_flows):
        if i:
            transforms.append(T.Permute(torch.tensor([1, 0])))
        if planar:
            transforms.append(T.planar(2))
        else:
            transforms.append(T.AffineAutoregressive(AutoRegressiveNN(2, [8]), stable=True))
    for t in transforms:
        for p in getattr(t, "parameters", lambda: [])():
            p.requires_grad_(False)

    def guide(x):
        mean = (x - b) @ W @ cov_post.T / s**2 + 0.5
        with pyro.plate("data", x.shape[0], dim=-1):
            base = dist.Normal(mean, 1.3 * cov_post.diag().sqrt()).to_event(1)
            pyro.sample("z", dist.TransformedDistribution(base, transforms))

    return guide, transforms


def test_base_space_densities_equal_those_of_the_true_inverse(case):
    """log q(z|x) read off the cache equals the flow's density at z through its inverse,
    value and gradient (the gradient in e of log q(f(e))), and the Jacobian term is
    log N(e) - log q(f(e))."""
    guide, transforms = iaf_guide(case)
    x = case["x"][:7]
    chains = AnnealedChains(case["model"], guide, x, 3, "data", 1)
    assert chains.sites["z"]["flow"]
    e = chains.state["z"].clone().requires_grad_(True)
    log_q, log_joint, log_det = chains.densities({"z": e})
    (grad,) = torch.autograd.grad(log_q.sum(), e)

    e2 = e.detach().clone().requires_grad_(True)
    z = e2
    for t in transforms:
        z = t(z)
    z_fresh = z.clone()  # not the cached object: the flow inverts it for real
    W, b, s = case["W"], case["b"], case["s"]
    cov_post = torch.linalg.inv(case["precision"])
    mean = (x - b) @ W @ cov_post.T / s**2 + 0.5
    base = dist.Normal(mean, 1.3 * cov_post.diag().sqrt()).to_event(1)
    q = dist.TransformedDistribution(base, transforms)
    expected = q.log_prob(z_fresh)
    (expected_grad,) = torch.autograd.grad(expected.sum(), e2)
    assert torch.allclose(log_q, expected, atol=1e-5)
    assert torch.allclose(grad, expected_grad, atol=1e-4)
    assert torch.allclose(log_det, base.log_prob(e.detach()) - expected.detach(), atol=1e-5)
    # the model sees z = f(e): its log joint is that of the trace at f(e)
    tr = pyro.poutine.trace(pyro.poutine.condition(case["model"], data={"z": z.detach()}))
    with pyro.plate("particles", 3, dim=-2):
        model_trace = tr.get_trace(x)
    model_trace.compute_log_prob()
    direct = sum(site["log_prob"] for site in model_trace.nodes.values()
                 if site["type"] == "sample")
    assert torch.allclose(log_joint, direct, atol=1e-4)


def test_flow_guides_anneal_to_the_exact_log_likelihood(case):
    guide, _ = iaf_guide(case)
    one = ais_log_likelihood(case["model"], guide, case["x"], num_chains=8, num_steps=1,
                             seed=2)
    iwae = log_likelihood(case["model"], guide, case["x"], num_particles=8, seed=2)
    assert torch.allclose(one.log_likelihood.double(), iwae.log_likelihood.double(), atol=1e-5)
    errors = {}
    for num_steps in (1, 40, 400):
        r = ais_log_likelihood(case["model"], guide, case["x"], num_chains=8,
                               num_steps=num_steps, num_leapfrog=5, seed=0)
        errors[num_steps] = float((r.log_likelihood.double() - case["exact"]).mean())
    assert errors[1] < errors[40] < 0.03 and abs(errors[400]) < 0.03, errors


def test_bdmc_with_a_flow_guide_starts_reverse_chains_through_the_inverse(case):
    guide, _ = iaf_guide(case)
    r = bdmc(case["model"], guide, torch.zeros(30, 4), num_chains=4, num_steps=40,
             num_leapfrog=5, seed=1)
    exact = case["exact_fn"](r.data).double()
    assert (r.lower.double() - exact).mean() < 0.02 < (r.upper.double() - exact).mean() + 0.04
    assert float(r.width.mean()) < 0.3


def test_planar_guides_anneal_forwards_but_cannot_start_at_given_latents(case):
    guide, _ = iaf_guide(case, planar=True)
    errors = [float((ais_log_likelihood(case["model"], guide, case["x"], num_chains=8,
                                        num_steps=num_steps, num_leapfrog=5, seed=0)
                     .log_likelihood.double() - case["exact"]).mean()) for num_steps in (1, 300)]
    assert errors[0] < -1.0 and abs(errors[1]) < 0.1, errors
    with pytest.raises(ModelGuideMismatch, match="without an inverse"):
        bdmc(case["model"], guide, torch.zeros(5, 4), num_chains=2, num_steps=3, seed=0)


def test_chains_at_the_posterior_temperature_keep_the_exact_posterior(case):
    """Started at exact posterior draws (through the flow's inverse) and moved in the base
    space at beta = 1, the chains must stay distributed as p(z|x): mean and covariance.
    (The Jacobian term is pinned sharply by the LogNormal guide of test_ais.py, whose site
    is a flow too: see test_a_lognormal_guide_is_a_flow_site.)"""
    guide, _ = iaf_guide(case)
    W, b, s = case["W"], case["b"], case["s"]
    cov_post = torch.linalg.inv(case["precision"])
    x = case["x"][:1].expand(400, 4)
    mean_post = (x - b) @ W @ cov_post.T / s**2
    pyro.set_rng_seed(1)
    start = dist.MultivariateNormal(mean_post, cov_post).sample()
    with pyro.validation_enabled(False):
        chains = AnnealedChains(case["model"], guide, x, 1, "data", 1, start={"z": start})
        for _ in range(40):
            chains.transition(1.0, torch.full((400,), 0.3), 5)
    z = chains.state["z"]
    for t in chains_transforms(guide, x):
        z = t(z)
    z = z.detach()[0]
    assert torch.allclose(z.mean(0), mean_post[0], atol=0.1)
    assert torch.allclose(torch.cov(z.T), cov_post, atol=0.08)


def test_a_lognormal_guide_is_a_flow_site():
    """LogNormal is Normal pushed through exp: its site moves in the base space (log z)."""
    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.LogNormal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z.log(), 0.5), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.LogNormal(x, 0.4))

    assert AnnealedChains(model, guide, torch.randn(3), 2, "data", 1).sites["z"]["flow"]


def chains_transforms(guide, x):
    """The transforms of the guide's site ``z`` on ``x``."""
    trace = pyro.poutine.trace(guide).get_trace(x)
    return trace.nodes["z"]["fn"].transforms


def test_the_projects_iaf_guide_is_never_inverted(monkeypatch):
    """With the project's IAF guide (transforms rebuilt at every call) the chains read
    log q(z|x) off the cache: the flow's inverse is never computed."""
    from pyro_vae.config import ModelConfig
    from pyro_vae.registries import build_vae

    vae = build_vae(ModelConfig(latent_dim=3, hidden=[16], guide="iaf",
                                guide_options={"num_flows": 2, "flow_hidden": [8]}), (64,))
    calls = []
    for name in ("_inverse", "_inverse_stable"):
        original = getattr(T.AffineAutoregressive, name)
        monkeypatch.setattr(T.AffineAutoregressive, name,
                            lambda self, y, _f=original: calls.append(1) or _f(self, y))
    x = torch.bernoulli(torch.full((5, 64), 0.3))
    r = ais_log_likelihood(vae.model, vae.guide, x, num_chains=3, num_steps=5, num_leapfrog=2)
    assert r.log_likelihood.shape == (5,) and torch.isfinite(r.log_likelihood).all()
    assert calls == []


def test_a_halfnormal_guide_is_annealed_in_z(case):
    """HalfNormal is a TransformedDistribution of a Normal through |.|, not a bijection:
    its site moves in z's unconstrained space, as any constrained latent."""
    s = 0.5

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.HalfNormal(1.0))
            pyro.sample("x", dist.Normal(z, s), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.HalfNormal(x.abs() + 0.5))

    torch.manual_seed(4)
    x = dist.Normal(dist.HalfNormal(1.0).sample((30,)), s).sample()
    grid = torch.linspace(1e-5, 8, 40001, dtype=torch.float64)
    joint = dist.HalfNormal(torch.tensor(1.0, dtype=torch.float64)).log_prob(grid) + \
        dist.Normal(grid, s).log_prob(x[:, None].double())
    exact = torch.logsumexp(joint, -1) + torch.log(grid[1] - grid[0])  # by quadrature
    chains = AnnealedChains(model, guide, x, 4, "data", 1)
    assert not chains.sites["z"]["flow"]
    r = ais_log_likelihood(model, guide, x, num_chains=8, num_steps=150, num_leapfrog=5)
    assert abs(float((r.log_likelihood.double() - exact).mean())) < 0.03
