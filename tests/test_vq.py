"""The vector-quantized VAE: quantization, straight-through gradients, the code prior, the
bound its point-mass guide gives, and the VQ-VAE loss."""

import itertools
import math

import pytest
import torch

from pyro_vae.config import Config, ModelConfig, TrainConfig
from pyro_vae.errors import ConfigError
from pyro_vae.infer import VQObjective, log_likelihood
from pyro_vae.registries import build_vae
from pyro_vae.vq import QuantizedCode

M, D, K, EVENT = 2, 3, 4, 6


def tiny_vq(learned=True, seed=0):
    torch.manual_seed(seed)
    m = ModelConfig(prior="vq", guide="vq", latent_dim=M * D, hidden=[8],
                    guide_options={"num_codes": K, "embedding_dim": D},
                    prior_options={"learned": learned, "width": 8, "layers": 1, "heads": 2})
    vae = build_vae(m, (EVENT,))
    with torch.no_grad():
        vae.posterior.codebook.normal_()  # well-separated entries
    return vae


def all_codes(vae):
    """Every code of M indices, as codebook vectors ``(K**M, M*D)``, and the indices."""
    index = torch.tensor(list(itertools.product(range(K), repeat=M)))
    return vae.posterior.codebook[index].reshape(len(index), M * D), index


def test_quantization_picks_the_nearest_entry_and_passes_gradients_straight_through():
    codebook = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]], requires_grad=True)
    encoded = torch.tensor([[[0.9, 0.2], [0.1, 1.4], [-0.3, 0.1]]], requires_grad=True)
    q = QuantizedCode(encoded, codebook)
    assert q.indices.tolist() == [[1, 2, 0]]
    assert torch.equal(q.v, codebook[[1, 2, 0]].flatten()[None].detach())
    weights = torch.randn(6)
    (q.v * weights).sum().backward()
    assert torch.allclose(encoded.grad.flatten(), weights)  # identity: straight through
    assert codebook.grad is None or torch.all(codebook.grad == 0)
    commitment, book = q.quantization_losses()
    expected = ((encoded - codebook[[1, 2, 0]]) ** 2).sum().detach()
    assert torch.allclose(commitment, expected[None]) and torch.allclose(book, expected[None])
    assert q.log_prob(q.v).item() == 0.0


def test_the_code_prior_is_normalized_autoregressive_and_samples_its_probabilities():
    vae = tiny_vq()
    prior = vae.prior
    codes, index = all_codes(vae)
    with torch.no_grad():
        log_p = prior(len(codes)).log_prob(codes)
        assert torch.allclose(log_p.exp().sum(), torch.tensor(1.0), atol=1e-5)
        logits = prior.logits(index)
        changed = index.clone()
        changed[:, 1] = (changed[:, 1] + 1) % K  # the last position's index
        assert torch.allclose(prior.logits(changed)[:, :2], logits[:, :2])
        torch.manual_seed(1)
        draws = prior(20000).sample()
    found = (draws.reshape(20000, 1, -1) - codes).abs().sum(-1).argmin(-1)
    freq = torch.bincount(found, minlength=K ** M).float() / 20000
    assert torch.allclose(freq, log_p.exp(), atol=0.015)
    uniform = tiny_vq(learned=False).prior
    assert torch.allclose(uniform(3).log_prob(codes[:3]), torch.full((3,), -M * math.log(K)))


def test_the_point_mass_guide_gives_the_bound_log_p_x_given_its_code_plus_log_prior():
    """For any k the estimate is log p(x | z_q) + log p(z_q), below the exact log p(x)
    (the sum over all K**M codes)."""
    vae = tiny_vq()
    x = torch.bernoulli(torch.full((5, EVENT), 0.4))
    with torch.no_grad():
        q = vae.posterior(x)
        expected = vae.likelihood(q.v).log_prob(x) + vae.prior(5).log_prob(q.v)
        codes, _ = all_codes(vae)
        joint = vae.prior(len(codes)).log_prob(codes)[:, None] + \
            vae.likelihood(codes[:, None]).log_prob(x)
        exact = torch.logsumexp(joint, 0)
        for k in (1, 7):
            est = log_likelihood(vae.model, vae.guide, x, num_particles=k, seed=0)
            assert torch.allclose(est.log_likelihood.float(), expected, atol=1e-5)
    assert (expected <= exact + 1e-6).all() and (expected < exact).any()


def test_vq_loss_is_the_negative_bound_plus_the_two_vq_losses():
    vae = tiny_vq()
    x = torch.bernoulli(torch.full((5, EVENT), 0.4))
    loss = VQObjective(commitment=0.25).differentiable_loss(vae.model, vae.guide, x)
    q = vae.posterior(x)
    bound = vae.likelihood(q.v).log_prob(x) + vae.prior(5).log_prob(q.v)
    commitment, book = q.quantization_losses()
    assert torch.allclose(loss, -bound.sum() + 0.25 * commitment.sum() + book.sum(), atol=1e-4)
    loss.backward()
    codebook_grad = vae.posterior.codebook.grad.clone()
    vae.zero_grad()
    vae.posterior(x).quantization_losses()[1].sum().backward()
    assert torch.allclose(codebook_grad, vae.posterior.codebook.grad, atol=1e-5)


def test_code_usage_counts_the_entries():
    vae = tiny_vq()
    x = torch.bernoulli(torch.full((50, EVENT), 0.4))
    usage = vae.posterior.code_usage(x)
    assert sum(usage["counts"]) == 50 * M and usage["num_codes"] == K
    assert 1.0 <= usage["perplexity"] <= K
    assert usage["dead_codes"] == sum(c == 0 for c in usage["counts"])


@pytest.mark.parametrize("model, message", [
    (dict(prior="standard_normal", guide="vq"), "vq guide needs prior = 'vq'"),
    (dict(prior="vq", guide="diagonal_normal"), "needs guide = 'vq'"),
    (dict(prior="vq", guide="vq", latent_dim=[6, 3]), "are flat"),
])
def test_incompatible_vq_choices_are_refused(model, message):
    m = ModelConfig(**{"latent_dim": M * D, "hidden": [8],
                       "guide_options": {"num_codes": K, "embedding_dim": D}
                       if model["guide"] == "vq" else {}, **model})
    with pytest.raises(ConfigError, match=message):
        build_vae(m, (EVENT,))


@pytest.mark.parametrize("guide, objective", [("vq", "elbo"), ("diagonal_normal", "vqvae")])
def test_the_vq_guide_and_objective_go_together(guide, objective):
    cfg = Config(model=ModelConfig(guide=guide), train=TrainConfig(objective=objective))
    with pytest.raises(ConfigError, match="go together"):
        cfg.check()
