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
