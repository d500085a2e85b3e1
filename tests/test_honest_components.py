"""Components are honest Pyro distributions (issue 15).

Every Gaussian a prior or a guide returns scores any value like torch's ``Normal``, with
the same values and the same gradients with respect to its location, its scale and the
value itself: the last is the path derivative that sticking the landing (Roeder et al.
2017, arXiv:1703.09194) and doubly-reparameterized gradients (Tucker et al. 2018,
arXiv:1810.04152) are built from. And the trainer needs nothing of a model but Pyro
callables and parameters.
"""

import copy

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F
from pyro.infer import Trace_ELBO
from torch.distributions import Independent, Normal

from pyro_vae.batches import EpochBatches
from pyro_vae.guides import DiagonalNormalGuide
from pyro_vae.priors import ConditionalNormalPrior, StandardNormalPrior
from pyro_vae.optim import make_optimizer
from pyro_vae.trainer import Trainer


def diagonal_guide():
    return DiagonalNormalGuide((6,), 3, [8])(torch.rand(4, 6))


def ladder_guide():
    """The diagonal guide combined by precision weighting with a prior conditional."""
    guide = DiagonalNormalGuide((6,), 3, [8])
    prior = dist.Normal(torch.randn(4, 3, requires_grad=True), torch.rand(4, 3) + 0.5).to_event(1)
    return guide.base(guide.encoder(torch.rand(4, 6)), prior)


def conditional_prior():
    return ConditionalNormalPrior(3, 2, [5])(4, context=torch.randn(4, 2))


def standard_prior():
    return StandardNormalPrior(3)(4)


REPARAMETERIZED = {"diagonal guide": diagonal_guide, "ladder guide": ladder_guide,
                   "conditional prior": conditional_prior}
GAUSSIANS = {**REPARAMETERIZED, "standard-normal prior": standard_prior}


@pytest.mark.parametrize("name", sorted(REPARAMETERIZED))
def test_gaussian_scores_its_own_sample_like_torch_with_the_path_derivative(name):
    d = REPARAMETERIZED[name]()
    assert isinstance(d, Independent) and isinstance(d.base_dist, Normal)
    loc, scale = d.base_dist.loc, d.base_dist.scale
    assert loc.requires_grad and scale.requires_grad
    torch.manual_seed(1)
    z = d.rsample((2,))
    torch.manual_seed(1)
    ref = Independent(Normal(loc, scale), 1)
    z_ref = ref.rsample((2,))
    assert torch.equal(z, z_ref)  # the same draws
    log_q, log_ref = d.log_prob(z), ref.log_prob(z_ref)
    torch.testing.assert_close(log_q, log_ref)
    # d log q(z) / dz (the path derivative), and the total derivatives of log q(rsample())
    # with respect to the location and the scale
    grads = torch.autograd.grad(log_q.sum(), (z, loc, scale), allow_unused=True,
                                retain_graph=True)
    refs = torch.autograd.grad(log_ref.sum(), (z_ref, loc, scale), retain_graph=True)
    assert grads[0] is not None, "log q(z) does not depend on z"
    for got, expected in zip(grads, refs):
        torch.testing.assert_close(got, expected)
    # the path-derivative (sticking-the-landing) gradient through the sample: its
    # dependence on loc and scale through z only
    path = torch.autograd.grad(z, (loc, scale), grad_outputs=grads[0], retain_graph=True)
    path_ref = torch.autograd.grad(z_ref, (loc, scale), grad_outputs=refs[0])
    for got, expected in zip(path, path_ref):
        torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("name", sorted(GAUSSIANS))
def test_gaussian_class_honours_any_location_and_scale(name):
    """The distribution class a component returns is a Normal for every (loc, scale), not
    only for the parameters it happens to be built with."""
    cls = type(GAUSSIANS[name]().base_dist)
    loc = torch.randn(4, 3, requires_grad=True)
    raw = torch.randn(4, 3, requires_grad=True)
    value = torch.randn(5, 4, 3, requires_grad=True)
    got = cls(loc, F.softplus(raw)).log_prob(value)
    expected = Normal(loc, F.softplus(raw)).log_prob(value)
    torch.testing.assert_close(got, expected)
    for a, b in zip(torch.autograd.grad(got.sum(), (loc, raw, value)),
                    torch.autograd.grad(expected.sum(), (loc, raw, value))):
        torch.testing.assert_close(a, b)


# ---------------------------------------------------------------------------------------
# the trainer and Pyro's param store


class HandWritten(torch.nn.Module):
    """A model/guide pair written by hand with ``pyro.module``, not a VAE."""

    def __init__(self):
        super().__init__()
        self.encoder = torch.nn.Linear(6, 4)
        self.decoder = torch.nn.Linear(2, 6)

    def model(self, x):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], 2), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0], dim=-1):
            out = self.encoder(x)
            pyro.sample("z", dist.Normal(out[..., :2], F.softplus(out[..., 2:])).to_event(1))


def test_trainer_keeps_any_models_parameters_out_of_the_param_store_with_svis_step():
    """The trainer optimizes the parameters itself, for any model/guide pair (no special
    method on the model), with the loss and the update of an ordinary registered step."""
    x = torch.bernoulli(torch.full((8, 6), 0.4))
    pair = HandWritten()
    reference = copy.deepcopy(pair)
    trainer = Trainer(pair, EpochBatches(x, 8, "none", seed=0), lr=0.01)
    pyro.set_rng_seed(5)
    loss = trainer.training_step(x)
    assert len(pyro.get_param_store()) == 0

    pyro.set_rng_seed(5)
    expected = Trace_ELBO().differentiable_loss(reference.model, reference.guide, x)
    assert len(pyro.get_param_store()) == 4  # registered as usual outside the trainer
    optimizer = make_optimizer(reference.parameters(), 0.01)
    expected.backward()
    optimizer.step()
    assert loss == pytest.approx(expected.item(), rel=1e-6)
    for a, b in zip(pair.parameters(), reference.parameters()):
        torch.testing.assert_close(a, b)
