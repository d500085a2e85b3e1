"""The disentangling objectives: the beta-TC-VAE's decomposition is the ELBO's KL split
exactly, its total-correlation estimate matches a Gaussian's closed form, and the capacity
objective follows its schedule; recipes that cannot work are refused."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO

from pyro_vae.config import Config, TrainConfig
from pyro_vae.errors import ConfigError
from pyro_vae.infer import log_weight_parts
from pyro_vae.infer.disentangling import BetaTCELBO, CapacityELBO
from pyro_vae.infer.registry import make_objective


def gaussian_pair(scale=0.5, data_plate="data", guide_dist=None):
    """Model: z ~ N(0, I), x ~ N(z, I); guide: q(z | x) = N(x, scale^2 I), or
    ``guide_dist(x)``."""
    guide_dist = guide_dist or (lambda x: dist.Normal(x, scale).to_event(1))

    def model(x):
        with pyro.plate(data_plate, x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros_like(x), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)

    def guide(x):
        with pyro.plate(data_plate, x.shape[0]):
            pyro.sample("z", guide_dist(x))

    return model, guide


def test_unit_weights_give_the_elbo_on_the_same_draws():
    model, guide = gaussian_pair()
    x = torch.randn(7, 3)
    tc = BetaTCELBO(tc_weight=1.0, dataset_size=1000)
    pyro.set_rng_seed(3)
    ours = tc.differentiable_loss(model, guide, x)
    pyro.set_rng_seed(3)
    elbo = Trace_ELBO().differentiable_loss(model, guide, x)
    assert torch.allclose(ours, elbo, atol=1e-4)
    # a larger beta adds (beta - 1) * TC, and TC estimates are what decomposition returns
    pyro.set_rng_seed(3)
    terms = tc.decomposition(model, guide, x)
    pyro.set_rng_seed(3)
    heavier = BetaTCELBO(tc_weight=6.0, dataset_size=1000).differentiable_loss(model, guide, x)
    assert torch.allclose(heavier, elbo + 5.0 * terms["total_correlation"].sum(), atol=1e-3)


def test_the_three_terms_sum_to_the_single_sample_kl():
    model, guide = gaussian_pair()
    x = torch.randn(9, 4)
    pyro.set_rng_seed(1)
    terms = BetaTCELBO(dataset_size=9).decomposition(model, guide, x)
    pyro.set_rng_seed(1)
    log_lik, log_prior, log_q = log_weight_parts(model, guide, x, 1, max_plate_nesting=1)
    kl = terms["mutual_information"] + terms["total_correlation"] + terms["dimension_kl"]
    assert torch.allclose(kl, (log_q - log_prior)[0], atol=1e-4)
    assert torch.allclose(terms["log_likelihood"], log_lik[0], atol=1e-5)


def test_terms_match_a_brute_force_sum_over_the_batch():
    """Guides with a different scale per image: log q(z_i) and log q(z_id) by explicit loops
    over the batch (the estimator's 1/M average), against the vectorized terms."""
    x = torch.randn(6, 3)
    scales = torch.rand(6, 3) + 0.3
    model, guide = gaussian_pair(guide_dist=lambda x: dist.Normal(2 * x, scales).to_event(1))

    pyro.set_rng_seed(4)
    terms = BetaTCELBO(dataset_size=100).decomposition(model, guide, x)
    pyro.set_rng_seed(4)
    z = dist.Normal(2 * x, scales).rsample()  # the same draw as the guide's
    m = x.shape[0]
    for i in range(m):
        per_j = torch.stack([dist.Normal(2 * x[j], scales[j]).log_prob(z[i]) for j in range(m)])
        log_q_joint = torch.logsumexp(per_j.sum(1), 0) - math.log(m)
        log_q_dims = (torch.logsumexp(per_j, 0) - math.log(m)).sum()
        own = per_j[i].sum()
        prior = dist.Normal(0.0, 1.0).log_prob(z[i]).sum()
        assert torch.allclose(terms["mutual_information"][i], own - log_q_joint, atol=1e-4)
        assert torch.allclose(terms["total_correlation"][i], log_q_joint - log_q_dims, atol=1e-4)
        assert torch.allclose(terms["dimension_kl"][i], log_q_dims - prior, atol=1e-4)


def test_total_correlation_of_a_correlated_gaussian_aggregate_posterior():
    """q(z|x_n) = N(mu_n, s^2 I) with mu_n ~ N(0, Sigma - s^2 I): the aggregate posterior is
    N(0, Sigma), whose total correlation is 1/2 sum_d log Sigma_dd - 1/2 log det Sigma."""
    torch.manual_seed(0)
    rho, s, n = 0.8, 0.4, 4000
    sigma = torch.tensor([[1.0, rho], [rho, 1.0]])
    centres = dist.MultivariateNormal(torch.zeros(2), sigma - s ** 2 * torch.eye(2)).sample((n,))
    model, guide = gaussian_pair(scale=s)
    exact = -0.5 * math.log(1 - rho ** 2)
    # the whole data set as one batch: the estimator's q(z) is then the exact mixture
    terms = BetaTCELBO(dataset_size=n).decomposition(model, guide, centres)
    estimate = terms["total_correlation"].mean().item()
    assert abs(estimate - exact) < 0.05, (estimate, exact)
    # dimension-wise KL of N(0, 1) marginals against N(0, 1) is 0
    assert abs(terms["dimension_kl"].mean().item()) < 0.05
    # the mutual information of a code with its image is at most log N
    assert terms["mutual_information"].max().item() <= math.log(n) + 1e-4


def test_objective_refuses_guides_that_do_not_factorize():
    model, guide = gaussian_pair(
        guide_dist=lambda x: dist.MultivariateNormal(x, torch.eye(x.shape[1])))

    with pytest.raises(ValueError, match="factorize"):
        BetaTCELBO(dataset_size=10).differentiable_loss(model, guide, torch.randn(4, 2))
    with pytest.raises(ValueError, match="number of training images"):
        BetaTCELBO()
    with pytest.raises(ValueError, match="num_particles = 1"):
        make_objective("beta_tcvae", num_particles=2, dataset_size=10)


def test_capacity_objective_follows_its_schedule_and_its_formula():
    model, guide = gaussian_pair()
    x = torch.randn(6, 3)
    objective = make_objective("capacity", capacity=20.0, capacity_weight=10.0,
                               capacity_steps=100)
    assert isinstance(objective, CapacityELBO)
    objective.set_step(25)
    assert objective.current_capacity == 5.0
    pyro.set_rng_seed(2)
    loss = objective.differentiable_loss(model, guide, x)
    pyro.set_rng_seed(2)
    log_lik, _, _ = log_weight_parts(model, guide, x, 1, max_plate_nesting=1)
    # the analytic KL of N(x, 0.5^2 I) from N(0, I), as Burgess et al. compute it
    kl = (0.5 * (0.25 + x ** 2 - 1 - math.log(0.25))).sum(1).mean()
    assert torch.allclose(loss, -log_lik.sum() + 6 * 10.0 * (kl - 5.0).abs(), atol=1e-4)
    objective.set_step(1000)
    assert objective.current_capacity == 20.0
    with pytest.raises(ValueError, match="positive capacity"):
        CapacityELBO(capacity=0.0)


def test_capacity_gradient_pulls_the_kl_towards_the_capacity():
    """Below the capacity the term pushes the KL up: the guide's scale gradient says so."""
    scale = torch.tensor(0.5, requires_grad=True)
    model, guide = gaussian_pair(guide_dist=lambda x: dist.Normal(x, scale).to_event(1))

    x = torch.zeros(50, 2)
    for capacity, sign in ((50.0, 1), (1e-3, -1)):  # far above / below the KL
        objective = CapacityELBO(capacity=capacity, gamma=1e4)
        scale.grad = None
        objective.differentiable_loss(model, guide, x).backward()
        # a narrower guide has a larger KL: d loss / d scale > 0 when the KL must grow
        assert torch.sign(scale.grad).item() == sign


@pytest.mark.parametrize("change, message", [
    (dict(objective="capacity", beta=4.0), "leave train.beta = 1"),
    (dict(objective="capacity", capacity=0.0), "positive"),
    (dict(objective="capacity", warmup_epochs=5.0), "warmup_epochs = 0"),
    (dict(objective="beta_tcvae", beta=2.0), "tc_weight"),
    (dict(objective="beta_tcvae", batch_size=5000), "batch_size"),
    (dict(objective="beta_tcvae", num_particles=2), "num_particles = 1"),
    (dict(objective="beta_tcvae", tc_weight=-1.0), "tc_weight"),
])
def test_recipes_that_cannot_work_are_refused(change, message):
    with pytest.raises(ConfigError, match=message):
        Config(train=TrainConfig(**change)).check()


@pytest.mark.parametrize("model", [dict(guide="iaf"), dict(prior="vamp"), dict(latent_dim=[4, 2])])
def test_beta_tcvae_refuses_models_it_cannot_split(model):
    with pytest.raises(ConfigError, match="beta_tcvae"):
        Config.from_dict({"model": model, "train": {"objective": "beta_tcvae"}}).check()
