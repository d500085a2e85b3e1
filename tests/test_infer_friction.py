"""Estimators on client code that does not look like our VAEs (issue 15): keyword
arguments, models that cannot broadcast over particles, a data plate at dim=-2, discrete
guides, flow guides, shape errors, and the k-sweep's rename."""

import math
import re
from pathlib import Path
from types import SimpleNamespace

import pyro
import pyro.distributions as dist
import pyro.distributions.transforms as T
import pytest
import torch
from pyro.infer.importance import psis_diagnostic

from pyro_vae import infer
from pyro_vae.infer import (LogLikelihoodResult, ModelGuideMismatch, ParticleBroadcastError,
                            elbo, elbo_terms, latent_report, log_likelihood, log_weights,
                            pareto_khat)

ROOT = Path(__file__).resolve().parents[1]


def gaussian_marginal(W, b, s):
    """z ~ N(0, I), x ~ N(W z + b, s^2 I): x ~ N(b, W W^T + s^2 I), and the exact
    posterior's mean map and covariance."""
    cov_post = torch.linalg.inv(torch.eye(W.shape[1]) + W.T @ W / s**2)
    marginal = dist.MultivariateNormal(b, W @ W.T + s**2 * torch.eye(W.shape[0]))
    return marginal, (lambda x: (x - b) @ W @ cov_post.T / s**2), cov_post


# ----------------------------------------------------------------------------------------
# 1. keyword arguments for model and guide


def test_model_and_guide_keyword_arguments():
    """A model and guide that need keyword arguments (as ss_vae_M2's ``ys=None``): the
    estimators pass model_kwargs / guide_kwargs, and the numbers are exact for the exact
    posterior."""
    torch.manual_seed(0)
    W, b = torch.randn(3, 2), torch.randn(3)
    marginal, post_mean, cov_post = gaussian_marginal(W, b, 0.5)
    x = marginal.sample((8,))
    exact = marginal.log_prob(x).double()

    def model(x, *, noise):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ W.T + b, noise).to_event(1), obs=x)

    def guide(x, *, shift=0.0):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.MultivariateNormal(post_mean(x) + shift, cov_post))

    kw = dict(model_kwargs={"noise": 0.5}, guide_kwargs={"shift": 0.0})
    r = log_likelihood(model, guide, x, num_particles=30, **kw)
    assert torch.allclose(r.log_likelihood, exact, atol=1e-4)
    assert torch.allclose(log_weights(model, guide, x, 4, **kw), exact.float().expand(4, 8),
                          atol=1e-4)
    assert torch.allclose(elbo(model, guide, x, **kw).double(), exact, atol=1e-4)
    assert torch.allclose(elbo_terms(model, guide, x, **kw)["elbo"].double(), exact, atol=1e-4)
    assert set(latent_report(model, guide, x, **kw).kl) == {"z"}
    # the guide's own default, and a shifted guide gives a looser bound
    shifted = log_likelihood(model, guide, x, num_particles=1, model_kwargs={"noise": 0.5},
                             guide_kwargs={"shift": 1.0})
    assert (shifted.log_likelihood < exact).all()
    with pytest.raises(TypeError, match="noise"):
        log_likelihood(model, guide, x, num_particles=2)


# ----------------------------------------------------------------------------------------
# 2. models that cannot broadcast over a leading particle dim


def m2_like(W, b, s, num_classes=3):
    """A linear-Gaussian model that, like Pyro's ss_vae_M2 decoder, concatenates z with a
    one-hot label with a fixed number of dims (``torch.cat`` of (B, D) and (B, C)), so it
    cannot take an outer particle dim. x ~ N(W [z; y] + b, s^2): exact marginal known."""
    D = W.shape[1] - num_classes
    Wz, Wy = W[:, :D], W[:, D:]

    def model(x, y):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(D), 1.0).to_event(1))
            h = torch.cat([z, y], -1)  # written for z of (B, D): no room for particles
            pyro.sample("x", dist.Normal(h @ W.T + b, s).to_event(1), obs=x)

    marginal, post_mean, cov_post = gaussian_marginal(Wz, b, s)

    def exact_guide(x, y):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.MultivariateNormal(post_mean(x - y @ Wy.T), cov_post))

    def poor_guide(x, y):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(post_mean(x - y @ Wy.T) + 0.5,
                                         1.3 * cov_post.diag().sqrt()).to_event(1))

    def exact(x, y):
        return dist.MultivariateNormal(b + y @ Wy.T, marginal.covariance_matrix).log_prob(x)

    return model, exact_guide, poor_guide, exact


@pytest.fixture
def m2():
    torch.manual_seed(3)
    W, b, s = torch.randn(4, 5), torch.randn(4), 0.6
    model, exact_guide, poor_guide, exact = m2_like(W, b, s)
    y = torch.nn.functional.one_hot(torch.arange(12) % 3, 3).float()
    cov = W[:, :2] @ W[:, :2].T + s**2 * torch.eye(4)
    x = dist.MultivariateNormal(b + y @ W[:, 2:].T, cov).sample()
    return SimpleNamespace(model=model, exact_guide=exact_guide, poor_guide=poor_guide,
                           data=(x, y), exact=exact(x, y).double())


def test_non_broadcasting_model_says_to_pass_vectorize_particles_false(m2):
    with pytest.raises(ParticleBroadcastError,
                       match=r"(?s)Tensors must have same number of dimensions.*"
                             r"Pass vectorize_particles=False"):
        log_likelihood(m2.model, m2.exact_guide, m2.data, num_particles=10)
    for fn in (elbo, elbo_terms, latent_report):
        with pytest.raises(ParticleBroadcastError, match="vectorize_particles=False"):
            fn(m2.model, m2.exact_guide, m2.data)
    # a ModelGuideMismatch: callers that catch those catch this one too
    assert issubclass(ParticleBroadcastError, ModelGuideMismatch)


def test_particles_in_sequence_are_exact_with_the_exact_posterior(m2):
    r = log_likelihood(m2.model, m2.exact_guide, m2.data, num_particles=30, batch_size=5,
                       particle_batch=7, vectorize_particles=False)
    assert torch.allclose(r.log_likelihood, m2.exact, atol=1e-4)
    assert torch.allclose(r.ess, torch.full_like(r.ess, 30.0), rtol=1e-4)
    lw = log_weights(m2.model, m2.exact_guide, m2.data, 6, vectorize_particles=False)
    assert lw.shape == (6, 12) and torch.allclose(lw.double(), m2.exact.expand(6, 12), atol=1e-4)
    terms = elbo_terms(m2.model, m2.exact_guide, m2.data, vectorize_particles=False)
    assert torch.allclose(terms["elbo"].double(), m2.exact, atol=1e-4)
    assert torch.allclose(elbo(m2.model, m2.exact_guide, m2.data, vectorize_particles=False).double(),
                          m2.exact, atol=1e-4)
    rep = latent_report(m2.model, m2.exact_guide, m2.data, num_samples=3, vectorize_particles=False)
    assert rep.kl["z"] > 0 and rep.kl_per_dim["z"] is None  # a full-covariance guide
    # seeded like the vectorized path: the same arguments give the same numbers
    again = log_likelihood(m2.model, m2.exact_guide, m2.data, num_particles=30, batch_size=5,
                           particle_batch=7, vectorize_particles=False)
    assert torch.equal(r.log_likelihood, again.log_likelihood)


def test_particles_in_sequence_estimate_the_same_as_vectorized():
    """On a model that broadcasts, both paths estimate the same bound: each within
    Monte Carlo error of the exact log p(x) at large k, and of each other."""
    torch.manual_seed(4)
    W, b, s = torch.randn(4, 2), torch.randn(4), 0.7
    marginal, post_mean, cov_post = gaussian_marginal(W, b, s)
    x = marginal.sample((10,))
    exact = marginal.log_prob(x).double()

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ W.T + b, s).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(post_mean(x) + 0.3,
                                         1.2 * cov_post.diag().sqrt()).to_event(1))

    kw = dict(num_particles=400, batch_size=10, particle_batch=400, seed=1)
    vec = log_likelihood(model, guide, x, **kw)
    seq = log_likelihood(model, guide, x, vectorize_particles=False, **kw)
    assert not torch.equal(vec.log_likelihood, seq.log_likelihood)
    for r in (vec, seq):
        assert ((r.log_likelihood - exact).abs() < 5 * r.mc_se + 1e-3).all()
    gap = (vec.log_likelihood - seq.log_likelihood).abs()
    assert (gap < 5 * (vec.mc_se + seq.mc_se) + 1e-3).all()
    # the ELBO (mean log weight) agrees within its standard error too
    lw = log_weights(model, guide, x, 400)
    se = (lw.double().std(0) / math.sqrt(400)) * math.sqrt(2)
    assert ((vec.elbo - seq.elbo).abs() < 5 * se).all()


# ----------------------------------------------------------------------------------------
# 3. the data plate: a clear error, and dim=-2


def test_site_outside_the_data_plate_names_the_plates_and_the_argument():
    def model(x):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(mu, 1.0), obs=x)

    def guide(x):
        pyro.sample("mu", dist.Normal(0.0, 1.0))

    with pytest.raises(ModelGuideMismatch) as info:
        log_likelihood(model, guide, torch.zeros(3), num_particles=2)
    message = str(info.value)
    assert "site 'mu' is not inside the data plate 'data' (the data_plate argument)" in message
    assert "inside no plate" in message and "plates are ['data']" in message

    # the user's data plate has another name: say so, and it works
    def model2(x):
        with pyro.plate("batch", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide2(x):
        with pyro.plate("batch", x.shape[0]):
            pyro.sample("z", dist.Normal(0.5 * x, math.sqrt(0.5)))

    with pytest.raises(ModelGuideMismatch, match=r"site 'x' is not inside the data plate "
                                                 r"'data'.* inside plates \['batch'\]"):
        log_likelihood(model2, guide2, torch.zeros(3), num_particles=2)
    r = log_likelihood(model2, guide2, torch.zeros(3), num_particles=2, data_plate="batch")
    expected = dist.Normal(0.0, math.sqrt(2)).log_prob(torch.zeros(3)).double()
    assert torch.allclose(r.log_likelihood, expected, atol=1e-5)


def test_data_plate_at_dim_minus_2_with_a_feature_plate_inside():
    """pyro.plate("data", N, dim=-2) with pyro.plate("features", F, dim=-1) inside it; a
    latent z per datapoint and a latent u per datapoint and feature:
    x_nf = w_f . z_n + b_f + u_nf + eps_nf, u ~ N(0, su^2), eps ~ N(0, s^2). The exact
    posterior q(z | x) q(u | z, x) makes every weight log p(x)."""
    torch.manual_seed(5)
    N, F, D, s, su = 9, 4, 2, 0.5, 0.4
    W, b = torch.randn(F, D), torch.randn(F)
    noise = s**2 + su**2
    marginal, post_mean, cov_post = gaussian_marginal(W, b, math.sqrt(noise))
    x = marginal.sample((N,))
    exact = marginal.log_prob(x).double()

    def loc(z):  # z (..., N, 1, D) -> (..., N, F): broadcasts over particles
        return (z * W).sum(-1) + b

    def model(x):
        with pyro.plate("data", x.shape[0], dim=-2):
            z = pyro.sample("z", dist.Normal(torch.zeros(D), 1.0).to_event(1))
            with pyro.plate("features", F, dim=-1):
                u = pyro.sample("u", dist.Normal(0.0, su))
                pyro.sample("x", dist.Normal(loc(z) + u, s), obs=x)

    def guide(x, widen=1.0):
        with pyro.plate("data", x.shape[0], dim=-2):
            z = pyro.sample("z", dist.MultivariateNormal(post_mean(x).unsqueeze(-2),
                                                         widen**2 * cov_post))
            with pyro.plate("features", F, dim=-1):
                pyro.sample("u", dist.Normal(su**2 / noise * (x - loc(z)),
                                             widen * su * s / math.sqrt(noise)))

    r = log_likelihood(model, guide, x, num_particles=30, batch_size=4)
    assert r.log_likelihood.shape == (N,)
    assert torch.allclose(r.log_likelihood, exact, atol=1e-4)
    terms = elbo_terms(model, guide, x, batch_size=4)
    assert set(terms) == {"reconstruction", "kl/z", "kl/u", "elbo"}
    assert torch.allclose(terms["elbo"].double(), exact, atol=1e-4)
    rep = latent_report(model, guide, x, num_samples=5, batch_size=4)
    assert set(rep.kl) == {"z", "u"} and rep.activity["z"].shape == (D,)
    assert rep.activity["u"].shape == (F,)
    # the sites' KLs and the reconstruction add up to the ELBO on average
    assert rep.kl["z"] + rep.kl["u"] == pytest.approx(
        float((terms["kl/z"] + terms["kl/u"]).mean()), abs=0.3)
    # an imperfect guide: within Monte Carlo error, sequential or vectorized
    wide = log_likelihood(model, guide, x, num_particles=2000, particle_batch=1000,
                          guide_kwargs={"widen": 1.3})
    assert ((wide.log_likelihood - exact).abs() < 5 * wide.mc_se + 1e-3).all()
    assert (wide.k_sweep[1] < exact).float().mean() > 0.5


# ----------------------------------------------------------------------------------------
# 4. Pareto k-hat: discrete weights, and agreement with Pyro's psis_diagnostic


def test_discrete_guide_khat_is_not_fitted_and_says_why():
    """A discrete guide's weights take three values: arviz's k-hat is inf, which would
    read as "100% untrustworthy" while the estimate is exact in the limit and ESS high."""
    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Categorical(torch.ones(3) / 3))
            pyro.sample("x", dist.Normal(z.float(), 1.0), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Categorical(logits=torch.tensor([0.0, 0.5, 1.0]))
                        .expand([x.shape[0]]))

    x = torch.tensor([0.0, 1.0, 2.0, -0.5, 1.5])
    exact = torch.logsumexp(dist.Normal(torch.arange(3.0).unsqueeze(-1), 1.0).log_prob(x)
                            - math.log(3), 0).double()
    r = log_likelihood(model, guide, x, num_particles=1000)
    assert torch.isnan(r.khat).all() and r.khat_unfitted.all()
    assert r.khat_above_07 is None
    assert (r.ess > 300).all()
    assert ((r.log_likelihood - exact).abs() < 5 * r.mc_se + 1e-3).all()
    s = r.summary()
    assert s["khat_above_0.7"] is None
    assert "5 of 5" in s["khat_note"] and "distinct values" in s["khat_note"]
    # and it survives saving
    r2 = LogLikelihoodResult.from_state_dict(r.state_dict())
    assert r2.khat_above_07 is None and r2.khat_note == r.khat_note


def test_khat_counts_only_the_points_it_could_fit():
    torch.manual_seed(0)
    continuous = torch.randn(1000, 2) * torch.tensor([0.1, 3.0])
    discrete = torch.tensor([0.0, -1.0, -2.0])[torch.randint(3, (1000, 1))]
    flat = torch.full((1000, 1), -3.0)
    lw = torch.cat([continuous, discrete, flat], 1).double()
    khat = pareto_khat(lw)
    assert torch.isfinite(khat[:2]).all() and torch.isnan(khat[2:]).all()
    assert infer.tied_tail(lw).tolist() == [False, False, True, True]
    assert infer.flat_weights(lw).tolist() == [False, False, False, True]
    result = LogLikelihoodResult(
        log_likelihood=torch.zeros(4), elbo=torch.zeros(4), ess=torch.ones(4), khat=khat,
        mc_se=torch.zeros(4), k_sweep={}, num_particles=1000, event_size=1, seed=0,
        fingerprint="", khat_unfitted=torch.tensor([False, False, True, False]))
    # heavy-tailed column 1 is above 0.7, column 0 below; the flat point counts as trusted
    assert khat[0] < 0.7 < khat[1]
    assert result.khat_above_07 == pytest.approx(1 / 3)
    assert "1 of 4" in result.khat_note and "counts the other 3" in result.khat_note
    assert "equal weights" in result.khat_note


@pytest.mark.parametrize("scale", [0.3, 1.0])
def test_khat_agrees_with_pyro_psis_diagnostic(scale):
    """The same particles (same seed, one datapoint, the particle plate at the same dim)
    give the same weights, and then our k-hat (arviz) and Pyro's agree."""
    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z, 0.5).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x * 0.8, scale).to_event(1))

    x = torch.tensor([[0.5, -1.0]])
    for seed in range(2):
        pyro.set_rng_seed(seed)
        theirs = psis_diagnostic(model, guide, x, num_particles=2000, max_plate_nesting=1)
        pyro.set_rng_seed(seed)
        ours = float(pareto_khat(log_weights(model, guide, x, 2000, max_plate_nesting=1))[0])
        assert ours == pytest.approx(theirs, abs=1e-3)


# ----------------------------------------------------------------------------------------
# 5. the shape error shows the data's shape


def test_shape_error_shows_the_real_batch_size(small_vae):
    images = torch.zeros(50, 8, 8)
    for fn in (lambda: log_likelihood(small_vae.model, small_vae.guide, images, num_particles=2),
               lambda: elbo(small_vae.model, small_vae.guide, images),
               lambda: latent_report(small_vae.model, small_vae.guide, images)):
        with pytest.raises(ValueError, match=r"expected x of shape \(B, 64\), got \(50, 8, 8\)"):
            fn()
    with pytest.raises(ValueError, match=r"got \(20, 8, 8\).*the data has shape \(50, 8, 8\)"):
        log_likelihood(small_vae.model, small_vae.guide, images, num_particles=2, batch_size=20)


# ----------------------------------------------------------------------------------------
# 6. the README's example formats khat_above_0.7 of None


def readme_example_tail():
    """The lines of the README's Python example after ``result = log_likelihood(...)``."""
    text = (ROOT / "README.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", text, re.S)
                 if "khat_above_07" in b)
    lines = block.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("result = log_likelihood("))
    return "\n".join(lines[start + 1:])


@pytest.mark.parametrize("khat, shown", [(None, "not fitted"), (0.25, "25%")])
def test_readme_example_formats_khat_above_07(khat, shown, capsys):
    result = SimpleNamespace(mean=-90.1234, se=0.5, khat_above_07=khat)
    exec(compile(readme_example_tail(), "README.md", "exec"), {"result": result})
    assert capsys.readouterr().out.strip() == f"-90.12 +- 0.50 nats, k-hat > 0.7: {shown}"


def test_khat_above_07_is_none_below_min_particles():
    """What the README example meets with a small k."""
    x = torch.zeros(3, 1)

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(1), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(torch.zeros(1), 1.0).to_event(1))

    r = log_likelihood(model, guide, x, num_particles=10)
    assert r.khat_above_07 is None and "below 25" in r.summary()["khat_note"]


# ----------------------------------------------------------------------------------------
# 7. latent_report says why a flow has no KL per dimension


def test_latent_report_says_why_a_flow_has_no_kl_per_dim():
    D = 3

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(D), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)

    flow = T.Planar(D)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            base = dist.Normal(x * 0.5, 0.7).to_event(1)
            pyro.sample("z", dist.TransformedDistribution(base, [flow]))

    rep = latent_report(model, guide, torch.randn(20, D), num_samples=4)
    assert rep.kl_per_dim["z"] is None and math.isfinite(rep.kl["z"])
    reason = rep.summary()["kl_per_dim_reason"]["z"]
    assert "guide's distribution at site 'z'" in reason and "not factorized" in reason
    assert "flow" in reason and "only the site's total KL" in reason
    assert "model's prior" not in reason

    def factorized_guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x * 0.5, 0.7).to_event(1))

    rep = latent_report(model, factorized_guide, torch.randn(20, D))
    assert rep.kl_per_dim["z"].shape == (D,) and rep.kl_per_dim_reason == {}
    assert rep.summary()["kl_per_dim_reason"] == {}


# ----------------------------------------------------------------------------------------
# 8. the k-sweep (formerly "ladder")


def test_k_sweep_rename_and_old_results(tmp_path):
    from pyro_vae.runs import update_eval_json
    from pyro_vae.tables import evaluation_rows

    assert infer.default_k_sweep(500) == [1, 10, 100, 500]
    assert not hasattr(infer, "default_ladder")

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(0.0, 1.0))

    r = log_likelihood(model, guide, torch.zeros(4), num_particles=30, k_sweep=[1, 5, 30])
    assert list(r.k_sweep) == [1, 5, 30]
    s = r.summary()
    assert set(s["k_sweep"]) == {"1", "5", "30"} and set(s["k_sweep_se"]) == {"1", "5", "30"}
    assert "ladder" not in s and "ladder_se" not in s
    # a result saved before the rename (key "ladder", no khat_unfitted) still loads
    old = r.state_dict()
    old["ladder"] = old.pop("k_sweep")
    del old["khat_unfitted"]
    r2 = LogLikelihoodResult.from_state_dict(old)
    assert r2.k_sweep.keys() == r.k_sweep.keys() and r2.khat_above_07 == r.khat_above_07
    # an old eval.json still prints; a new evaluation replaces its old keys
    old_summary = {k: v for k, v in s.items() if not k.startswith("k_sweep")}
    old_summary["ladder"], old_summary["ladder_se"] = s["k_sweep"], s["k_sweep_se"]
    assert [label for label, _ in evaluation_rows(old_summary)][1:3] == \
        ["  bound at k=1", "  bound at k=5"]
    update_eval_json(tmp_path, old_summary)
    merged = update_eval_json(tmp_path, s)
    assert "ladder" not in merged and merged["k_sweep"] == s["k_sweep"]


def test_a_point_mass_guide_is_refused_with_the_way_out():
    """log p(x, f(x)) - 0 is not an importance weight: the estimator says so and names the
    proposal to use, instead of returning a number that bounds nothing."""
    import pyro
    import pyro.distributions as dist
    import pytest
    import torch

    from pyro_vae.infer import ModelGuideMismatch, log_likelihood

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Delta(x / 2))

    with pytest.raises(ModelGuideMismatch, match="'z' is a point mass.*GaussianProposal"):
        log_likelihood(model, guide, torch.randn(5), num_particles=4)
