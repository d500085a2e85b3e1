import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO

from pyro_vae.infer import ModelGuideMismatch, elbo, log_weights

from exact_models import linear_gaussian, linear_gaussian_case


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

    with pytest.raises(ModelGuideMismatch, match="'mu' is not inside the data plate 'data'"):
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


# ----------------------------------------------------------------------------------------
# Importance-weighted log-likelihood: exact answers on linear-Gaussian models

from pyro_vae.infer import compare, latent_report, log_likelihood  # noqa: E402


@pytest.fixture
def lg():
    """A linear-Gaussian model, data drawn from it, and an imperfect diagonal guide."""
    return linear_gaussian_case(20)


def test_iwae_approaches_exact_log_likelihood(lg):
    exact = lg["exact"].double()
    gaps = []
    for seed in range(6):  # the gap in expectation: averaged over independent runs
        r = log_likelihood(lg["model"], lg["guide"], lg["x"], num_particles=5000, batch_size=7,
                           particle_batch=1000, seed=seed)
        assert list(r.k_sweep) == [1, 10, 100, 1000, 5000]
        gaps.append([float((exact - v).mean()) for v in r.k_sweep.values()])
        # at k = 5000 within a few Monte Carlo standard errors of the exact value, per datapoint
        assert ((r.log_likelihood - exact).abs() < 5 * r.mc_se + 1e-3).all()
    mean_gaps = torch.tensor(gaps).mean(0).tolist()
    # a lower bound whose gap shrinks as k grows, and is closed, up to Monte Carlo noise
    # (about 0.005 nats here), at k = 5000
    assert mean_gaps[:4] == sorted(mean_gaps[:4], reverse=True) and mean_gaps[3] > 0
    assert mean_gaps[0] > 1.0 and abs(mean_gaps[-1]) < 0.02
    assert r.num_datapoints == 20 and r.event_size == 4
    assert r.mean == pytest.approx(float(r.log_likelihood.mean()))
    assert r.bits_per_dim == pytest.approx(-r.mean / (4 * math.log(2)))


def test_exact_posterior_gives_equal_weights_and_exact_answer(lg):
    for k in (1, 50):
        r = log_likelihood(lg["model"], lg["exact_guide"], lg["x"], num_particles=k,
                           batch_size=6, particle_batch=16)
        assert torch.allclose(r.log_likelihood, lg["exact"].double(), atol=1e-4)
        assert torch.allclose(r.ess, torch.full_like(r.ess, float(k)), rtol=1e-4)
        assert torch.allclose(r.mc_se, torch.zeros_like(r.mc_se), atol=1e-3)
    # k = 50: k-hat is fitted, but equal weights have no tail: NaN, counted as trusted
    assert torch.isnan(r.khat).all() and r.khat_above_07 == 0.0


def test_k_equal_1_is_the_elbo(lg):
    r = log_likelihood(lg["model"], lg["guide"], lg["x"], num_particles=1)
    assert torch.equal(r.log_likelihood, r.elbo)
    # the ELBO estimate (mean of k log weights) matches the closed form in expectation
    k = 4000
    lw = log_weights(lg["model"], lg["guide"], lg["x"], k).detach().double()
    se = lw.std(0) / math.sqrt(k)
    assert ((lw.mean(0) - lg["closed_form_elbo"].double()).abs() < 5 * se).all()
    r = log_likelihood(lg["model"], lg["guide"], lg["x"], num_particles=k)
    assert ((r.elbo - lg["closed_form_elbo"].double()).abs() < 5 * se).all()


def test_bound_does_not_decrease_with_k_on_average(lg):
    x = lg["marginal"].sample((400,))
    means = [log_likelihood(lg["model"], lg["guide"], x, num_particles=k, seed=k).mean
             for k in (1, 4, 16, 64)]
    assert means == sorted(means)
    assert means[-1] < float(lg["exact_fn"](x).mean())


def test_two_layer_hand_written_hierarchy():
    """z2 ~ N(0, I), z1 ~ N(A z2, I), x ~ N(W z1 + b, s^2 I): exact marginal is Gaussian."""
    torch.manual_seed(2)
    A, W, b, s = torch.randn(3, 2), torch.randn(5, 3), torch.randn(5), 0.8
    cov_x = W @ (A @ A.T + torch.eye(3)) @ W.T + s**2 * torch.eye(5)

    def model(x):
        with pyro.plate("data", x.shape[0], dim=-1):
            z2 = pyro.sample("z2", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            z1 = pyro.sample("z1", dist.Normal(z2 @ A.T, 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z1 @ W.T + b, s).to_event(1), obs=x)

    enc = torch.linalg.pinv(W)

    def guide(x):  # bottom-up: q(z1|x) q(z2|z1), roughly right, not exact
        with pyro.plate("data", x.shape[0], dim=-1):
            z1 = pyro.sample("z1", dist.Normal((x - b) @ enc.T * 0.8, 0.6).to_event(1))
            pyro.sample("z2", dist.Normal(z1 @ torch.linalg.pinv(A).T * 0.5, 0.8).to_event(1))

    x = dist.MultivariateNormal(b, cov_x).sample((10,))
    exact = dist.MultivariateNormal(b, cov_x).log_prob(x).double()
    r = log_likelihood(model, guide, x, num_particles=20000, batch_size=5, particle_batch=5000)
    assert float((exact - r.k_sweep[1]).mean()) > 0.5
    assert ((r.log_likelihood - exact).abs() < 5 * r.mc_se + 0.01).all()


def test_seeded_and_chunked(lg):
    kw = dict(num_particles=300, batch_size=6, particle_batch=64)
    a = log_likelihood(lg["model"], lg["guide"], lg["x"], seed=3, **kw)
    b = log_likelihood(lg["model"], lg["guide"], lg["x"], seed=3, **kw)
    c = log_likelihood(lg["model"], lg["guide"], lg["x"], seed=4, **kw)
    assert torch.equal(a.log_likelihood, b.log_likelihood) and torch.equal(a.khat, b.khat, )
    assert not torch.equal(a.log_likelihood, c.log_likelihood)
    # different chunking draws other particles but estimates the same thing
    d = log_likelihood(lg["model"], lg["guide"], lg["x"], seed=3, num_particles=300,
                       batch_size=20, particle_batch=300)
    assert ((a.log_likelihood - d.log_likelihood).abs() < 5 * (a.mc_se + d.mc_se) + 1e-3).all()


def test_result_roundtrip(lg):
    r = log_likelihood(lg["model"], lg["guide"], lg["x"], num_particles=20)
    r2 = type(r).from_state_dict(r.state_dict())
    assert torch.equal(r.log_likelihood, r2.log_likelihood) and r2.k_sweep.keys() == r.k_sweep.keys()
    s = r.summary()
    for key in ("test_log_likelihood", "test_log_likelihood_se", "k", "bits_per_dim",
                "khat_above_0.7", "test_elbo", "k_sweep", "ess_mean"):
        assert key in s
    assert s["k_sweep"]["20"] == pytest.approx(s["test_log_likelihood"])


def test_compare_paired(lg):
    def poor_guide(x):
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("z", dist.Normal(torch.zeros(2), 0.5).to_event(1))

    kw = dict(num_particles=10, seed=0)
    exact = log_likelihood(lg["model"], lg["exact_guide"], lg["x"], **kw)
    approx = log_likelihood(lg["model"], poor_guide, lg["x"], **kw)
    c = compare(exact, approx, "exact", "approx")
    assert c.difference > 0 and c.z > 2
    assert c.verdict.startswith("exact has the higher test log-likelihood")
    d = lg["exact"].double() - approx.log_likelihood
    assert c.difference == pytest.approx(float(d.mean()))
    assert c.se == pytest.approx(float(d.std() / math.sqrt(20)))
    same = compare(approx, approx)
    assert same.difference == 0 and same.verdict.startswith("no significant difference")
    other = log_likelihood(lg["model"], poor_guide, lg["x"][:10], **kw)
    with pytest.raises(ValueError, match="different data"):
        compare(approx, other)


@pytest.mark.parametrize("bad, kwargs, match", [
    ("nan", {}, "NaN"),
    ("empty", {}, "empty"),
    ("ok", {"num_particles": 0}, "num_particles must be an integer of at least 1"),
    ("ok", {"batch_size": 0}, "batch_size must be"),
    ("ok", {"k_sweep": [0, 5]}, "k_sweep values must lie in"),
])
def test_log_likelihood_bad_input(lg, bad, kwargs, match):
    x = {"nan": lg["x"].clone().fill_(float("nan")), "empty": lg["x"][:0], "ok": lg["x"]}[bad]
    with pytest.raises(ValueError, match=match):
        log_likelihood(lg["model"], lg["guide"], x, **{"num_particles": 5, **kwargs})


def test_log_likelihood_wrong_shape_for_a_vae(small_vae):
    with pytest.raises(ValueError, match=r"expected x of shape \(B, 64\), got \(4, 784\)"):
        log_likelihood(small_vae.model, small_vae.guide, torch.zeros(4, 784), num_particles=2)


def test_log_likelihood_model_guide_mismatch(lg):
    def no_obs(x):
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))

    with pytest.raises(ModelGuideMismatch, match="no observed site"):
        log_likelihood(no_obs, lg["guide"], lg["x"], num_particles=2)

    def empty_guide(x):
        pass

    with pytest.raises(ModelGuideMismatch, match=r"does not sample .*\['z'\]"):
        log_likelihood(lg["model"], empty_guide, lg["x"], num_particles=2)


def test_latent_report_kl_and_active_units():
    """Only z_0 influences x: z_1, z_2 keep the prior (KL 0, inactive); z_0 is active."""
    s = 0.5

    def model(x):
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", dist.Normal(torch.zeros(3), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z[..., :1], s).to_event(1), obs=x)

    post_var = 1 / (1 + 1 / s**2)

    def guide(x):  # the exact posterior, factorized
        loc = torch.cat([x * post_var / s**2, torch.zeros(x.shape[0], 2)], -1)
        scale = torch.tensor([post_var**0.5, 1.0, 1.0])
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    torch.manual_seed(0)
    x = torch.randn(400, 1) * (1 + s**2) ** 0.5
    rep = latent_report(model, guide, x, num_samples=3, batch_size=128)
    kl = rep.kl_per_dim["z"]
    mean_sq = (x[:, 0] * post_var / s**2).pow(2).mean()
    expected0 = 0.5 * (post_var + mean_sq - 1 - math.log(post_var))
    assert float(kl[0]) == pytest.approx(float(expected0), rel=1e-4)
    assert float(kl[1]) == float(kl[2]) == 0.0
    assert rep.kl["z"] == pytest.approx(float(kl.sum()))
    assert rep.active_units == {"z": 1}
    assert float(rep.activity["z"][0]) == pytest.approx(float((x[:, 0] * post_var / s**2).var()),
                                                        rel=1e-4)
    assert rep.summary()["latent_dims"] == {"z": 3}
