"""The Gaussian proposal around a point-mass guide: what it replaces, and an exact answer."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_vae.distributions import GaussianProposal
from pyro_vae.infer import log_weights

S2 = 0.5  # x | z ~ N(z, S2 I): with z ~ N(0, I) the posterior is N(x / (1 + S2), S2 / (1 + S2))


def model(x):
    with pyro.plate("data", x.shape[0], dim=-1):
        z = pyro.sample("z", dist.Normal(torch.zeros_like(x), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z, S2 ** 0.5).to_event(1), obs=x)


def point_mass_guide(x):
    """A point mass at the exact posterior mean."""
    with pyro.plate("data", x.shape[0], dim=-1):
        return pyro.sample("z", dist.Delta(x / (1 + S2), event_dim=1))


def mixed_guide(x):
    """The point mass, a site that is not one, and an observed site."""
    with pyro.plate("data", x.shape[0], dim=-1):
        pyro.sample("u", dist.Normal(torch.zeros(x.shape[0]), 1.0))
        pyro.sample("v", dist.Delta(x[..., 0]), obs=x[..., 0])
        return pyro.sample("z", dist.Delta(x / (1 + S2), event_dim=1))


def test_proposal_replaces_point_masses_and_keeps_everything_else():
    x = torch.randn(4, 3)
    proposal = GaussianProposal(mixed_guide, 0.25)
    with pyro.plate("particles", 7, dim=-2):
        trace = pyro.poutine.trace(proposal).get_trace(x)
    z = trace.nodes["z"]
    assert isinstance(z["fn"], dist.Independent) and isinstance(z["fn"].base_dist, dist.Normal)
    torch.testing.assert_close(z["fn"].base_dist.loc, (x / (1 + S2)).expand(7, 4, 3))
    torch.testing.assert_close(z["fn"].base_dist.scale, torch.full((7, 4, 3), 0.25))
    assert z["value"].shape == (7, 4, 3) and z["fn"].batch_shape == (7, 4)
    assert isinstance(trace.nodes["u"]["fn"], dist.Normal)  # not a point mass: unchanged
    assert isinstance(trace.nodes["v"]["fn"], dist.Delta)  # observed: unchanged
    assert trace.nodes["_RETURN"]["value"] is z["value"]
    assert proposal.description == "gaussian(0.25) around the point-mass guide"
    # the guide itself is untouched outside the wrapper
    plain = pyro.poutine.trace(mixed_guide).get_trace(x)
    assert isinstance(plain.nodes["z"]["fn"], dist.Delta)


def test_proposal_with_the_exact_posterior_scale_gives_equal_weights_at_log_p_x():
    """With the proposal's scale the posterior's standard deviation, q(z|x) = p(z|x): every
    importance weight is p(x) exactly (Burda et al. 2016, arXiv:1509.00519)."""
    x = torch.tensor([[-1.0, 0.5], [2.0, 0.0], [0.3, -2.2]], dtype=torch.float64)
    proposal = GaussianProposal(point_mass_guide, (S2 / (1 + S2)) ** 0.5)
    exact = dist.Normal(0.0, (1 + S2) ** 0.5).log_prob(x).sum(-1)
    torch.testing.assert_close(log_weights(model, proposal, x, num_particles=25),
                               exact.expand(25, 3))
    # a narrower proposal is a valid, looser bound: below log p(x) on average over particles
    narrow = log_weights(model, GaussianProposal(point_mass_guide, 0.1), x, num_particles=2000)
    assert (torch.logsumexp(narrow, 0) - math.log(2000) < exact).all()


@pytest.mark.parametrize("scale", [0.0, -1.0, float("nan")])
def test_proposal_scale_must_be_positive(scale):
    with pytest.raises(ValueError, match="scale must be positive"):
        GaussianProposal(point_mass_guide, scale)
