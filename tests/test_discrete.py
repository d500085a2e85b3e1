"""Categorical latents: the code distribution, its prior and guide, and the three gradient
estimators against the exact ELBO summed over every code."""

import math

import pytest
import torch

from pyro_vae import cli
from pyro_vae.categorical import CategoricalGuide, CategoricalPrior, code_traversal
from pyro_vae.config import Config, ModelConfig, TrainConfig
from pyro_vae.distributions import MAX_ENUMERATION, CategoricalCode
from pyro_vae.errors import ConfigError
from pyro_vae.infer import (ConcreteELBO, EnumerationELBO, ScoreFunctionELBO, log_likelihood)
from pyro_vae.infer.discrete_objectives import annealed_temperature
from pyro_vae.registries import build_vae

N, K, EVENT = 2, 3, 5


def tiny_vae(seed=0, learned_prior=False):
    torch.manual_seed(seed)
    m = ModelConfig(prior="categorical", guide="categorical", latent_dim=N * K, hidden=[8],
                    guide_options={"num_classes": K}, prior_options={"learned": learned_prior})
    vae = build_vae(m, (EVENT,))
    if learned_prior:
        with torch.no_grad():
            vae.prior.logits.normal_()
    return vae


def exact_terms(vae, x):
    """Per datapoint, over all K**N codes: log p(x) and the ELBO, by explicit sums."""
    q = vae.posterior(x)
    codes = q.enumerate_support(expand=False)  # (K**N, 1, N*K)
    log_q = q.log_prob(codes)  # (K**N, B)
    log_joint = vae.prior(x.shape[0]).log_prob(codes) + vae.likelihood(codes).log_prob(x)
    elbo = (log_q.exp() * (log_joint - log_q)).sum(0)
    return torch.logsumexp(log_joint, 0), elbo


def grads(vae, loss):
    vae.zero_grad()
    loss.backward()
    return torch.cat([p.grad.flatten() for p in vae.parameters() if p.grad is not None])


def test_code_distribution_sums_to_one_and_samples_its_probabilities():
    torch.manual_seed(0)
    d = CategoricalCode(torch.randn(4, N, K))
    codes = d.enumerate_support(expand=False)
    assert codes.shape == (K ** N, 1, N * K)
    assert torch.allclose(d.log_prob(codes).exp().sum(0), torch.ones(4))
    assert d.support.check(codes).all()
    s = d.sample((20000,))
    assert s.shape == (20000, 4, N * K)
    assert torch.allclose(s.mean(0), d.mean, atol=0.02)
    assert torch.allclose(d.entropy(), -(d.log_prob(codes).exp() * d.log_prob(codes)).sum(0))
    p = CategoricalCode(torch.randn(4, N, K))
    kl = (d.log_prob(codes).exp() * (d.log_prob(codes) - p.log_prob(codes))).sum(0)
    assert torch.allclose(torch.distributions.kl_divergence(d, p), kl, atol=1e-6)
    assert d.mode.reshape(4, N, K).argmax(-1).equal(d.logits.argmax(-1))


def test_code_refuses_bad_values_and_oversized_enumeration():
    d = CategoricalCode(torch.zeros(1, N, K), validate_args=True)
    with pytest.raises(ValueError):
        d.log_prob(torch.full((1, N * K), 0.5))
    big = CategoricalCode(torch.zeros(1, 5, 10))
    assert 10 ** 5 > MAX_ENUMERATION
    with pytest.raises(ValueError, match="100,000 values.*'concrete' or 'score'"):
        big.enumerate_support()


def test_relaxation_tends_to_the_codes_as_the_temperature_falls():
    torch.manual_seed(0)
    d = CategoricalCode(torch.randn(3, N, K))
    hot = d.relaxed(0.01).rsample((4000,))
    assert torch.allclose(hot.reshape(4000, 3, N, K).sum(-1), torch.ones(4000, 3, N), atol=1e-4)
    assert torch.allclose(hot.mean(0), d.mean, atol=0.03)
    assert (hot.reshape(-1, K).max(-1).values > 0.99).float().mean() > 0.95
    warm = d.relaxed(2.0).rsample((4000,))
    assert (warm.reshape(-1, K).max(-1).values > 0.99).float().mean() < 0.2


def test_iwae_with_the_categorical_guide_converges_to_the_exact_log_likelihood():
    """log p(x) by enumeration of the 9 codes: the estimate with k = 20000 exact categorical
    draws is within Monte Carlo error of it (about 0.01 nats per image here), and the ELBO
    lies below."""
    vae = tiny_vae(learned_prior=True)
    x = torch.bernoulli(torch.full((6, EVENT), 0.4))
    with torch.no_grad():
        exact, elbo = exact_terms(vae, x)
        est = log_likelihood(vae.model, vae.guide, x, num_particles=20000, seed=1)
    estimate = est.log_likelihood.to(exact.dtype)
    assert torch.allclose(estimate, exact, atol=0.04)
    assert abs((estimate - exact).mean()) < 0.02 and (elbo < exact - 0.05).all()


def test_enumeration_objective_is_the_exact_elbo_and_its_gradient():
    vae = tiny_vae(learned_prior=True)
    x = torch.bernoulli(torch.full((6, EVENT), 0.4))
    _, elbo = exact_terms(vae, x)
    exact_grad = grads(vae, -elbo.sum())
    loss = EnumerationELBO().differentiable_loss(vae.model, vae.guide, x)
    assert torch.allclose(loss, -elbo.sum(), atol=1e-4)
    assert torch.allclose(grads(vae, loss), exact_grad, atol=1e-4)


def test_score_function_gradient_is_unbiased():
    """With many particles the leave-one-out estimator's gradient (of every parameter:
    encoder, decoder, prior) approaches the exact one; its value is the ELBO's estimate."""
    vae = tiny_vae(learned_prior=True)
    x = torch.bernoulli(torch.full((6, EVENT), 0.4))
    _, elbo = exact_terms(vae, x)
    exact_grad = grads(vae, -elbo.sum())
    loss = ScoreFunctionELBO(num_particles=40000).differentiable_loss(vae.model, vae.guide, x)
    assert abs(loss.item() + elbo.sum().item()) < 0.05 * 6
    g = grads(vae, loss)
    assert torch.linalg.norm(g - exact_grad) < 0.03 * torch.linalg.norm(exact_grad)
    encoder = sum(p.numel() for p in vae.posterior.parameters())
    assert torch.linalg.norm(g[:encoder] - exact_grad[:encoder]) < \
        0.05 * torch.linalg.norm(exact_grad[:encoder])


def test_concrete_objective_approaches_the_exact_elbo_as_the_temperature_falls():
    """The relaxed objective is biased at temperature 1 and nearly exact at 0.02 (the
    decoder then reads nearly one-hot codes; the KL is exact at any temperature)."""
    vae = tiny_vae(learned_prior=True)
    x = torch.bernoulli(torch.full((6, EVENT), 0.4))
    _, elbo = exact_terms(vae, x)
    exact_grad = grads(vae, -elbo.sum())
    cold = ConcreteELBO(num_particles=40000, temperature=0.02)
    loss = cold.differentiable_loss(vae.model, vae.guide, x)
    assert abs(loss.item() + elbo.sum().item()) < 0.02 * 6
    decoder = slice(sum(p.numel() for p in vae.posterior.parameters()) +
                    sum(p.numel() for p in vae.prior.parameters()), None)
    g = grads(vae, loss)
    assert torch.linalg.norm(g[decoder] - exact_grad[decoder]) < \
        0.05 * torch.linalg.norm(exact_grad[decoder])
    warm = ConcreteELBO(num_particles=40000, temperature=1.0).differentiable_loss(
        vae.model, vae.guide, x)
    assert abs(warm.item() + elbo.sum().item()) > 5 * abs(loss.item() + elbo.sum().item())


def test_concrete_refuses_a_model_without_discrete_latents(small_vae, binary_batch):
    with pytest.raises(ValueError, match="no latent site with a relaxation"):
        ConcreteELBO().differentiable_loss(small_vae.model, small_vae.guide, binary_batch)
    with pytest.raises(ValueError, match="reparameterized"):
        ScoreFunctionELBO().differentiable_loss(small_vae.model, small_vae.guide, binary_batch)
    with pytest.raises(ValueError, match="num_particles >= 2"):
        ScoreFunctionELBO(num_particles=1)


def test_temperature_schedule_follows_the_steps():
    assert annealed_temperature(0, 1.0, 0.5, 100) == 1.0
    assert annealed_temperature(50, 1.0, 0.5, 100) == pytest.approx(math.sqrt(0.5))
    assert annealed_temperature(100, 1.0, 0.5, 100) == pytest.approx(0.5)
    assert annealed_temperature(1000, 1.0, 0.5, 100) == pytest.approx(0.5)
    assert annealed_temperature(1000, 0.7, 0.5, 0) == 0.7
    objective = ConcreteELBO(temperature=1.0, final_temperature=0.25, anneal_steps=10)
    objective.set_step(5)
    assert objective.temperature == pytest.approx(0.5)


def test_the_trainer_anneals_the_temperature_step_by_step():
    """The temperature is a function of the step (so a resumed run continues the schedule)."""
    from pyro_vae.batches import EpochBatches
    from pyro_vae.trainer import Trainer

    vae = tiny_vae()
    objective = ConcreteELBO(temperature=1.0, final_temperature=0.25, anneal_steps=4)
    trainer = Trainer(vae, EpochBatches(torch.bernoulli(torch.full((6, EVENT), 0.4)), 2, "none",
                                        seed=0), loss=objective)
    seen = []
    for _ in range(2):
        for x in trainer.batches.epoch():
            trainer.training_step(x)
            seen.append(objective.temperature)
    assert seen == pytest.approx([annealed_temperature(s, 1.0, 0.25, 4) for s in range(6)])
    assert seen[-1] == pytest.approx(0.25) and seen[0] == 1.0


def test_a_discrete_run_writes_its_traversal_and_a_valid_bound(tmp_path):
    import json

    out = tmp_path / "run"
    assert cli.main(["train", "discrete", "--epochs", "1", "--quiet", "--device", "cpu",
                     "--set", "eval.k=5", "--set", "train.temperature_epochs=1",
                     "--set", "train.final_temperature=0.25", "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["train"]["temperature_epochs"] == 1
    assert (out / "traversal.png").exists()
    result = json.loads((out / "eval.json").read_text())
    assert result["test_log_likelihood"] < 0


@pytest.mark.parametrize("model, message", [
    (dict(prior="vamp", guide="categorical"), "categorical guide needs prior = 'categorical'"),
    (dict(prior="categorical", guide="iaf"), "needs guide = 'categorical'"),
    (dict(prior="categorical", guide="categorical", latent_dim=[20, 10]), "are flat"),
    (dict(prior="categorical", guide="categorical", conditional=True, num_classes=10),
     "not built for conditional"),
    (dict(prior="categorical", guide="categorical", latent_dim=25), "num_classes"),
])
def test_incompatible_choices_are_refused(model, message):
    m = ModelConfig(**{"latent_dim": 20, "hidden": [8], **model})
    with pytest.raises(ConfigError, match=message):
        build_vae(m, (EVENT,))


@pytest.mark.parametrize("train, message", [
    (dict(objective="concrete"), "set model.guide = 'categorical'"),
    (dict(objective="score", num_particles=1), "at least 2"),
    (dict(objective="enumerate", num_particles=3), "num_particles = 1"),
    (dict(objective="concrete", temperature=0.0), "must be positive"),
])
def test_discrete_objectives_are_refused_where_they_cannot_work(train, message):
    guide = "diagonal_normal" if train["objective"] == "concrete" and \
        "temperature" not in train else "categorical"
    cfg = Config(model=ModelConfig(guide=guide), train=TrainConfig(**train))
    with pytest.raises(ConfigError, match=message):
        cfg.check()


def test_code_traversal_changes_one_variable_per_row():
    vae = tiny_vae()
    x = torch.bernoulli(torch.full((1, EVENT), 0.5))
    images = code_traversal(vae, x)
    assert images.shape == (N, K, EVENT)
    base = vae.posterior(x).mode[0]
    for n in range(N):
        for k in range(K):
            code = base.reshape(N, K).clone()
            code[n] = torch.nn.functional.one_hot(torch.tensor(k), K)
            assert torch.allclose(images[n, k], vae.likelihood(code.flatten()[None]).mean[0])
    with pytest.raises(ValueError, match="categorical guide"):
        code_traversal(build_vae(ModelConfig(latent_dim=3, hidden=[8]), (EVENT,)), x)


def test_guide_and_prior_shapes():
    guide = CategoricalGuide((EVENT,), 12, num_classes=4, hidden=[8])
    q = guide(torch.zeros(7, EVENT))
    assert q.batch_shape == (7,) and q.event_shape == (12,) and q.logits.shape == (7, 3, 4)
    p = CategoricalPrior(12, 4)(7)
    assert torch.allclose(p.log_prob(q.sample()), torch.full((7,), 3 * math.log(0.25)))


def test_straight_through_codes_are_exact_draws_so_its_value_is_the_elbo_at_any_temperature():
    """The straight-through relaxation's forward values are one-hot codes, the argmax of
    Gumbel-perturbed logits (the Gumbel-max trick: exact categorical draws), so the
    objective's value estimates the exact ELBO even at temperature 1, where the plain
    relaxation does not; its gradient still reaches the encoder."""
    torch.manual_seed(0)
    d = CategoricalCode(torch.randn(3, N, K, requires_grad=True))
    codes = d.relaxed(1.0, straight_through=True).rsample((20000,))
    codes = codes.detach()  # one-hot up to rounding (hard + soft - soft)
    assert (codes - codes.round()).abs().max() < 1e-6 and d.support.check(codes.round()).all()
    assert torch.allclose(codes.mean(0), d.mean, atol=0.02)
    vae = tiny_vae(learned_prior=True)
    x = torch.bernoulli(torch.full((6, EVENT), 0.4))
    _, elbo = exact_terms(vae, x)
    st = ConcreteELBO(num_particles=40000, temperature=1.0, straight_through=True)
    loss = st.differentiable_loss(vae.model, vae.guide, x)
    assert abs(loss.item() + elbo.sum().item()) < 0.02 * 6
    vae.zero_grad()
    loss.backward()
    assert vae.posterior.encoder.output_layer.weight.grad.abs().sum() > 0
