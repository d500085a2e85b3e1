import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO

from pyro_vae.evaluate import ModelGuideMismatch, elbo, log_weights


def test_elbo_matches_pyro_trace_elbo(small_vae, binary_batch):
    """Per-datapoint weights from traces average to Pyro's own Trace_ELBO."""
    k = 3000
    with torch.no_grad():
        lw = log_weights(small_vae.model, small_vae.guide, binary_batch, k)
        pyros = -Trace_ELBO(num_particles=k, vectorize_particles=True, max_plate_nesting=1).loss(
            small_vae.model, small_vae.guide, binary_batch) / binary_batch.shape[0]
    # two independent Monte Carlo estimates: agree within 5 standard errors
    se = math.sqrt(2) * float(lw.std(0).mean()) / math.sqrt(lw.numel())
    assert abs(float(lw.mean()) - pyros) < 5 * se + 1e-3


def test_shapes_and_seeding(small_vae, binary_batch):
    assert log_weights(small_vae.model, small_vae.guide, binary_batch, 7).shape == (7, 5)
    a = elbo(small_vae.model, small_vae.guide, binary_batch, batch_size=2, seed=1)
    b = elbo(small_vae.model, small_vae.guide, binary_batch, batch_size=5, seed=1)
    assert a.shape == (5,)
    assert torch.equal(elbo(small_vae.model, small_vae.guide, binary_batch, seed=1), b)
    # the caller's RNG stream is untouched
    torch.manual_seed(0)
    r1 = torch.rand(1)
    torch.manual_seed(0)
    elbo(small_vae.model, small_vae.guide, binary_batch, seed=5)
    assert torch.equal(torch.rand(1), r1)


def linear_gaussian(W, b, s):
    """z ~ N(0, I), x ~ N(Wz + b, s^2 I): exact log p(x) = N(x; b, W W^T + s^2 I)."""
    D, _ = W.shape

    def model(x):
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", dist.Normal(torch.zeros(W.shape[1]), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ W.T + b, s).to_event(1), obs=x)

    cov_post = torch.linalg.inv(torch.eye(W.shape[1]) + W.T @ W / s**2)

    def exact_guide(x):
        mean = (x - b) @ W @ cov_post.T / s**2
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("z", dist.MultivariateNormal(mean, covariance_matrix=cov_post))

    def exact(x):
        return dist.MultivariateNormal(b, W @ W.T + s**2 * torch.eye(D)).log_prob(x)

    return model, exact_guide, exact


def test_hand_written_model_exact_posterior_gives_exact_weights():
    torch.manual_seed(0)
    W, b = torch.randn(4, 2), torch.randn(4)
    model, guide, exact = linear_gaussian(W, b, 0.5)
    x = torch.randn(6, 4)
    lw = log_weights(model, guide, x, 10)
    assert torch.allclose(lw, exact(x).expand(10, 6), atol=1e-4)


def test_guide_missing_a_latent_site():
    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            w = pyro.sample("w", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z + w, 1.0), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(0.0, 1.0))

    with pytest.raises(ModelGuideMismatch, match=r"does not sample the model's latent site\(s\) \['w'\]"):
        log_weights(model, guide, torch.zeros(3), 2)


def test_model_without_observed_site():
    def model(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(0.0, 1.0))

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(0.0, 1.0))

    with pytest.raises(ModelGuideMismatch, match="no observed site"):
        log_weights(model, guide, torch.zeros(3), 2)


def test_site_outside_data_plate():
    def model(x):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(mu, 1.0), obs=x)

    def guide(x):
        pyro.sample("mu", dist.Normal(0.0, 1.0))

    with pytest.raises(ModelGuideMismatch, match="'mu' is not inside pyro.plate"):
        log_weights(model, guide, torch.zeros(3), 2)


def test_bad_k_and_empty_data(small_vae, binary_batch):
    with pytest.raises(ValueError, match="num_particles must be at least 1"):
        log_weights(small_vae.model, small_vae.guide, binary_batch, 0)
    with pytest.raises(ValueError, match="empty"):
        elbo(small_vae.model, small_vae.guide, binary_batch[:0])


def test_poutine_scale_is_ignored(small_vae, binary_batch):
    """KL annealing scales the loss, never the weights of the true model."""
    scaled = pyro.poutine.scale(small_vae.model, scale=0.1)
    a = elbo(small_vae.model, small_vae.guide, binary_batch, seed=2)
    b = elbo(scaled, small_vae.guide, binary_batch, seed=2)
    assert torch.allclose(a, b)
    assert math.isfinite(float(a.sum()))
