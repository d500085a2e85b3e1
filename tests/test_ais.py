"""AIS, BDMC and the inference gaps against closed forms (linear-Gaussian models)."""

import pyro
import pyro.distributions as dist
import pytest
import torch

from exact_models import linear_gaussian, linear_gaussian_case, shifted_guide, two_layer_gaussian
from pyro_vae.infer import (ModelGuideMismatch, ais_log_likelihood, bdmc, inference_gaps,
                            log_likelihood, sigmoid_schedule)
from pyro_vae.infer.gaps import fit_local, local_guide


@pytest.fixture
def lg():
    return linear_gaussian_case(30)


def test_sigmoid_schedule():
    beta = sigmoid_schedule(10)
    assert beta.shape == (11,) and beta[0] == 0 and beta[-1] == 1
    assert (beta[1:] > beta[:-1]).all()
    steps = beta[1:] - beta[:-1]
    assert steps[0] < steps[5] and steps[-1] < steps[5]  # denser at both ends
    assert torch.allclose(beta, 1 - beta.flip(0), atol=1e-12)  # symmetric
    with pytest.raises(ValueError, match="num_steps"):
        sigmoid_schedule(0)


@pytest.mark.parametrize("num_steps", [1, 3, 20])
def test_exact_guide_gives_exact_log_likelihood_for_any_steps(lg, num_steps):
    r = ais_log_likelihood(lg["model"], lg["exact_guide"], lg["x"], num_chains=3,
                           num_steps=num_steps, num_leapfrog=3)
    assert torch.allclose(r.log_likelihood.double(), lg["exact"], atol=1e-4)


def test_one_step_is_the_iwae_bound(lg):
    ais = ais_log_likelihood(lg["model"], lg["guide"], lg["x"], num_chains=50, num_steps=1,
                             seed=3)
    iwae = log_likelihood(lg["model"], lg["guide"], lg["x"], num_particles=50, seed=3)
    assert torch.allclose(ais.log_likelihood.double(), iwae.log_likelihood.double(), atol=1e-5)


def test_ais_converges_to_log_likelihood_as_steps_grow(lg):
    errors = {}
    for num_steps in (1, 20, 150):
        r = ais_log_likelihood(lg["model"], lg["guide"], lg["x"], num_chains=8,
                               num_steps=num_steps, num_leapfrog=5, seed=0)
        errors[num_steps] = float((r.log_likelihood.double() - lg["exact"]).mean())
        assert r.log_likelihood.shape == (30,) and r.mc_se.shape == (30,)
    assert errors[1] < -0.3  # the IWAE bound with 8 particles is loose here
    assert errors[1] < errors[20] < 0.05
    assert abs(errors[150]) < 0.03  # within Monte Carlo noise of the truth
    assert r.step_size_rule == "pilot" and r.acceptance.shape == (30, 100)  # binned
    assert r.acceptance_betas.shape == (100,) and (r.acceptance_betas.diff() > 0).all()
    assert 0.3 < float(r.acceptance.mean()) <= 1.0  # the pilot tuned the steps sensibly


def test_bdmc_brackets_the_exact_value_and_closes_in(lg):
    widths = []
    for num_steps in (4, 40):
        r = bdmc(lg["model"], lg["guide"], torch.zeros(40, 4), num_chains=4,
                 num_steps=num_steps, num_leapfrog=5, seed=1)
        exact = lg["exact_fn"](r.data).double()
        assert r.data.shape == (40, 4) and r.data.std() > 0.5  # simulated, not the zeros
        lower, upper = (r.lower.double() - exact).mean(), (r.upper.double() - exact).mean()
        assert lower < 0.02 and upper > -0.02, (num_steps, lower, upper)
        widths.append(float(r.width.mean()))
    assert widths[0] > 0.5 and widths[1] < widths[0] / 3


def test_a_fixed_step_size_is_used_as_given(lg):
    r = ais_log_likelihood(lg["model"], lg["guide"], lg["x"][:4], num_chains=2, num_steps=5,
                           step_size=0.123)
    assert r.step_size_rule == "fixed" and torch.allclose(r.step_size, torch.tensor(0.123))


def test_two_latent_layers_and_a_data_plate_of_another_name():
    torch.manual_seed(2)
    A, W = torch.randn(2, 1), torch.randn(3, 2)
    model, guide, exact = two_layer_gaussian(A, 0.8, W, torch.zeros(3), 0.5)
    x = torch.randn(20, 3) * 2
    ais = ais_log_likelihood(model, guide, x, num_chains=8, num_steps=80, num_leapfrog=5,
                             data_plate="obs")
    iwae = log_likelihood(model, guide, x, num_particles=8, data_plate="obs")
    truth = exact(x).double()
    assert abs(float((ais.log_likelihood.double() - truth).mean())) < 0.1
    assert float((iwae.log_likelihood.double() - truth).mean()) < -0.5  # prior proposal: loose
    with pytest.raises(ModelGuideMismatch, match="data plate 'data'"):
        ais_log_likelihood(model, guide, x, num_chains=2, num_steps=2)


def test_local_fit_finds_the_best_diagonal_gaussian(lg):
    """The best diagonal Gaussian for a Gaussian posterior has the posterior mean and
    variances 1 / diag(precision) (Cremer et al. 2018)."""
    x, P = lg["x"][:10], lg["precision"]
    with pyro.get_param_store().scope():
        auto = local_guide(lg["model"], lg["guide"], x, nesting=1)
        start = auto.locs.z.detach().clone()
        fit_local(lg["model"], auto, x, 1, steps=800, lr=0.05, num_particles=20)
        loc, scale = auto.locs.z.detach(), auto.scales.z.detach()
    mean = (x - lg["b"]) @ lg["W"] @ torch.linalg.inv(P).T / lg["s"] ** 2
    assert torch.allclose(start, mean + 1.0, atol=1e-5)  # started at the amortized guide
    assert torch.allclose(loc, mean, atol=0.05)
    assert torch.allclose(scale, (1 / P.diag()).sqrt().expand_as(scale), rtol=0.08)


def test_inference_gaps_match_their_closed_forms(lg):
    P = lg["precision"]
    cov = torch.linalg.inv(P)
    approximation = 0.5 * (P.diag().log().sum() - torch.logdet(P))  # KL(q* || posterior)
    shift, var = torch.ones(2), 1.5**2 * cov.diag()
    amortized_kl = 0.5 * ((P.diag() * var).sum() + shift @ P @ shift - 2 + torch.logdet(cov)
                          - var.log().sum())
    r = inference_gaps(lg["model"], lg["guide"], lg["x"], log_likelihood="iwae", num_chains=20,
                       num_steps=100, num_particles=2000, local_steps=600, local_lr=0.05)
    assert abs(float(r.approximation_gap.mean()) - float(approximation)) < 0.05
    assert abs(float(r.amortization_gap.mean()) - float(amortized_kl - approximation)) < 0.1
    assert torch.allclose(r.inference_gap, r.approximation_gap + r.amortization_gap)
    summary = r.summary()
    assert summary["method"] == "iwae" and summary["settings"]["k"] == 2000


def test_discrete_latents_and_bad_settings_are_refused(lg):
    def model(x):
        with pyro.plate("data", x.shape[0]):
            c = pyro.sample("c", dist.Bernoulli(0.5))
            pyro.sample("x", dist.Normal(c, 1.0), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("c", dist.Bernoulli(0.5))

    with pytest.raises(ModelGuideMismatch, match="'c' is discrete"):
        ais_log_likelihood(model, guide, torch.zeros(3), num_chains=2, num_steps=2)
    for bad in (dict(num_steps=0), dict(num_leapfrog=1.5), dict(step_size=-1.0),
                dict(pilot_chains=0)):
        with pytest.raises(ValueError):
            ais_log_likelihood(lg["model"], lg["guide"], lg["x"], **bad)
    with pytest.raises(ValueError, match="log_likelihood must be one of"):
        inference_gaps(lg["model"], lg["guide"], lg["x"], log_likelihood="exact")


def test_autonormal_guides_are_evaluated_through_their_auxiliary_sites():
    """Pyro's AutoNormal draws ``z_unconstrained`` and a Delta ``z``: with the exact
    posterior (one latent dimension: a diagonal Gaussian is exact) every weight is log p(x)."""
    torch.manual_seed(0)
    W, b, s = torch.randn(3, 1), torch.zeros(3), 0.6
    model, exact_guide, exact = linear_gaussian(W, b, s)
    x = torch.randn(5, 3)
    precision = 1 + (W.T @ W) / s**2
    mean = x @ W / s**2 / precision
    auto = pyro.infer.autoguide.AutoNormal(model)
    auto(x)
    auto.locs.z = pyro.nn.PyroParam(mean.detach(), event_dim=1)
    auto.scales.z = pyro.nn.PyroParam((1 / precision.sqrt()).expand(5, 1).clone(),
                                      pyro.distributions.constraints.softplus_positive,
                                      event_dim=1)
    r = log_likelihood(model, auto, x, num_particles=20)
    assert torch.allclose(r.log_likelihood.double(), exact(x).double(), atol=1e-4)


def test_a_constrained_latent_is_annealed_in_its_unconstrained_space():
    """z ~ LogNormal(0, 1), x ~ N(log z, s^2): x ~ N(0, 1 + s^2). The chains move log z, so
    the Jacobian of exp enters the target; without it AIS would converge elsewhere."""
    s = 0.5

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.LogNormal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z.log(), s), obs=x)

    def guide(x):  # the right family, a wrong location and scale
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.LogNormal(0.3 * x + 1.0, 0.4))

    torch.manual_seed(3)
    x = torch.randn(30) * (1 + s**2) ** 0.5
    truth = dist.Normal(0.0, (1 + s**2) ** 0.5).log_prob(x).double()
    iwae = log_likelihood(model, guide, x, num_particles=8)
    ais = ais_log_likelihood(model, guide, x, num_chains=8, num_steps=100, num_leapfrog=5)
    assert float((iwae.log_likelihood.double() - truth).mean()) < -0.1
    assert abs(float((ais.log_likelihood.double() - truth).mean())) < 0.03


def test_autoguides_are_refused_by_the_annealed_estimators(lg):
    auto = pyro.infer.autoguide.AutoNormal(lg["model"])
    auto(lg["x"])
    with pytest.raises(ModelGuideMismatch, match="auxiliary site"):
        ais_log_likelihood(lg["model"], auto, lg["x"], num_chains=2, num_steps=3)
    with pytest.raises(ModelGuideMismatch, match="auxiliary site"):
        bdmc(lg["model"], auto, lg["x"], num_chains=2, num_steps=3)


def test_the_local_fit_keeps_the_models_trained_parameters(lg):
    """A model's pyro.param values are the trained ones in every ELBO: with no local steps
    the local guide is the amortized one and the amortization gap is zero."""
    W, b = lg["W"], lg["b"]

    def model(x):
        s = pyro.param("sigma", torch.tensor(5.0), constraint=dist.constraints.positive)
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ W.T + b, s).to_event(1), obs=x)

    pyro.param("sigma", torch.tensor(0.7), constraint=dist.constraints.positive)
    guide = shifted_guide(W, b, 0.7, shift=0.0, widen=1.0)
    r = inference_gaps(model, guide, lg["x"][:6], log_likelihood="iwae", num_chains=2,
                       num_steps=10, num_particles=400, local_steps=0)
    assert abs(float(r.amortization_gap.mean())) < 0.05
    assert float(pyro.param("sigma").detach()) == pytest.approx(0.7)


def test_gaps_use_a_given_ais_estimate_of_the_same_data_only(lg):
    ais = ais_log_likelihood(lg["model"], lg["guide"], lg["x"], num_chains=4, num_steps=10,
                             num_leapfrog=3, seed=2)
    r = inference_gaps(lg["model"], lg["guide"], lg["x"], log_likelihood=ais, local_steps=20)
    assert torch.equal(r.log_likelihood, ais.log_likelihood.double())
    assert r.method == "ais" and r.settings["num_steps"] == 10 and r.settings["ais_seed"] == 2
    with pytest.raises(ValueError, match="other data"):
        inference_gaps(lg["model"], lg["guide"], lg["x"][:5], log_likelihood=ais)


def test_gaps_say_when_the_local_family_is_poorer_than_the_guide(lg):
    """The exact posterior (full covariance) as guide: the best diagonal Gaussian is worse
    than it, a negative amortization gap, flagged; the diagonal shifted guide is not."""
    exact = inference_gaps(lg["model"], lg["exact_guide"], lg["x"][:10],
                           log_likelihood="iwae", num_chains=10, num_steps=10, local_steps=200)
    assert exact.summary()["local_family_worse"] and exact.summary()["amortization_gap"] < 0
    shifted = inference_gaps(lg["model"], lg["guide"], lg["x"][:10], log_likelihood="iwae",
                             num_chains=10, num_steps=10, local_steps=200)
    assert not shifted.summary()["local_family_worse"]
