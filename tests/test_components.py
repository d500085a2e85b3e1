"""Priors, guides and their combinations: densities, flows, shapes, options."""

import itertools
import math

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO

from pyro_vae import config as C, recipes, registries
from pyro_vae.errors import ConfigError
from pyro_vae.infer import log_weights
from pyro_vae.guides import DiagonalNormalGuide, FlowGuide
from pyro_vae.model_config import DISCRETE_LATENTS
from pyro_vae.priors import MixtureOfGaussiansPrior, VampPrior

D, X = 2, 6  # latent size, data size


def ctx(**kw):
    return registries.BuildContext(event_shape=(X,), latent_dim=D, hidden=[8], activation="tanh", **kw)


def make_guide(name, **options):
    return registries.build_component(registries.GUIDES, name, "guide", ctx(), options)


def make_prior(name, **options):
    guide = make_guide("diagonal_normal")
    return registries.build_component(registries.PRIORS, name, "prior", ctx(guide=guide, context_dim=K),
                             options)


K = 3  # classes of the conditional prior's context

#: The components of continuous latents (the discrete ones are tested in test_discrete.py
#: and test_vq.py; here only that they refuse continuous partners).
PRIORS = sorted(p for p in registries.PRIORS if p not in DISCRETE_LATENTS.values())
GUIDES = sorted(g for g in registries.GUIDES if g not in DISCRETE_LATENTS)


def call_prior(prior, batch_size, label=None):
    """p(z) of a batch, or p(z|y) for a conditional prior (labels 0, 1, 2, ... or ``label``)."""
    if not getattr(prior, "conditional", False):
        return prior(batch_size)
    y = torch.arange(batch_size) % K if label is None else torch.full((batch_size,), label)
    return prior(batch_size, context=torch.nn.functional.one_hot(y, K).float())


def grid(lo=-7.0, hi=7.0, n=281):
    axis = torch.linspace(lo, hi, n)
    zz = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    return zz, (axis[1] - axis[0]) ** 2


@pytest.mark.parametrize("name", PRIORS)
def test_prior_shapes_and_own_samples(name):
    prior = make_prior(name)
    p = call_prior(prior, 5)
    assert p.batch_shape == (5,) and p.event_shape == (D,)
    z = p.sample()
    assert z.shape == (5, D)
    assert torch.isfinite(p.log_prob(z)).all() and p.log_prob(z).shape == (5,)
    # an outer particle dim broadcasts
    assert p.expand((3, 5)).log_prob(torch.randn(3, 5, D)).shape == (3, 5)


@pytest.mark.parametrize("name", PRIORS)
def test_prior_density_integrates_to_one(name):
    prior = make_prior(name)
    zz, area = grid()
    with torch.no_grad():
        total = float(call_prior(prior, 1, label=2).log_prob(zz[:, None, :]).exp().sum() * area)
    assert total == pytest.approx(1.0, abs=0.01)


def test_mixture_of_gaussians_density():
    prior = MixtureOfGaussiansPrior(D, num_components=3)
    z = torch.randn(4, D)
    comps = torch.distributions.Normal(prior.locs, prior.raw_scales.exp())
    manual = torch.logsumexp(comps.log_prob(z[:, None, :]).sum(-1)
                             + torch.log_softmax(prior.logits, -1), -1)
    assert torch.allclose(prior(4).log_prob(z), manual, atol=1e-5)


def test_vamp_prior_with_one_pseudo_input_is_the_guide_posterior():
    guide = DiagonalNormalGuide((X,), D, [8])
    prior = VampPrior(guide, (X,), num_pseudo=1)
    z = torch.randn(7, D)
    q = guide(prior.pseudo_inputs)
    assert torch.allclose(prior(7).log_prob(z), q.log_prob(z), atol=1e-6)


def test_vamp_prior_shares_the_guide_and_learns_pseudo_inputs():
    vae = registries.build_vae(C.ModelConfig(prior="vamp", latent_dim=D, hidden=[8],
                                    prior_options={"num_pseudo": 4}), (X,))
    params = list(vae.parameters())
    assert len(params) == len({id(p) for p in params})
    assert vae.prior.guide is vae.posterior
    loss = Trace_ELBO().differentiable_loss(vae.model, vae.guide,
                                            torch.bernoulli(torch.full((3, X), 0.5)))
    loss.backward()
    assert vae.prior.raw_pseudo_inputs.grad.abs().sum() > 0
    assert ((vae.prior.pseudo_inputs > 0) & (vae.prior.pseudo_inputs < 1)).all()


@pytest.mark.parametrize("name", GUIDES)
def test_guide_shapes_and_own_samples(name):
    guide = make_guide(name)
    x = torch.rand(5, X)
    q = guide(x)
    assert q.batch_shape == (5,) and q.event_shape == (D,)
    z = q.rsample()
    assert z.shape == (5, D) and torch.isfinite(q.log_prob(z)).all()
    qq = q.expand((3, 5))  # the particle plate's expansion
    zz = qq.rsample()
    assert zz.shape == (3, 5, D) and qq.log_prob(zz).shape == (3, 5)


@pytest.mark.parametrize("name", ["diagonal_normal", "full_cov_normal", "iaf", "spline"])
def test_guide_density_integrates_to_one(name):
    """Invertible guides: integrate q(z|x) numerically over a 2-D grid."""
    guide = make_guide(name)
    with torch.no_grad():
        q = guide(torch.rand(1, X))
        zz, area = grid()
        total = float(q.log_prob(zz[:, None, :]).exp().sum() * area)
    assert total == pytest.approx(1.0, abs=0.02)


def flow_guides():
    return [n for n in sorted(registries.GUIDES) if issubclass(registries.GUIDES[n], FlowGuide)]


@pytest.mark.parametrize("name", flow_guides())
@pytest.mark.parametrize("batch_shape", [(), (4,), (2, 3)])
def test_flow_log_det_matches_autograd_jacobian(name, batch_shape):
    """log q(z) = log q0(z0) - log|det dz/dz0| with the Jacobian from autograd."""
    torch.manual_seed(0)
    guide = make_guide(name)
    x = torch.rand(1, X)
    q = guide(x)
    transforms = q.transforms
    z0 = q.base_dist.sample(batch_shape)  # batch_shape + (1, D)

    def push(v):
        for t in transforms:
            v = t(v)
        return v

    flat = z0.reshape(-1, D)
    expected = []
    for row in flat:
        jac = torch.autograd.functional.jacobian(lambda v: push(v.reshape(1, D)).reshape(D), row)
        expected.append(torch.linalg.slogdet(jac)[1])
    expected = torch.stack(expected).reshape(z0.shape[:-1])
    steps = list(_steps(transforms, z0))  # one fresh pass: every transform caches its step
    z = steps[-1][2]
    assert z.shape == z0.shape
    pyro_log_det = sum(t.log_abs_det_jacobian(a, b) for t, a, b in steps)
    assert torch.allclose(pyro_log_det, expected, atol=1e-4)
    assert torch.allclose(q.log_prob(z), q.base_dist.log_prob(z0) - expected, atol=1e-4)


def _steps(transforms, v):
    for t in transforms:
        w = t(v)
        yield t, v, w
        v = w


@pytest.mark.parametrize("name", ["iaf", "spline"])
def test_invertible_flows_inverse_undoes_forward(name):
    guide = make_guide(name)
    q = guide(torch.rand(3, X))
    z0 = q.base_dist.sample((4,))
    z = z0
    for t in q.transforms:
        z = t(z)
    back = z.clone()  # a new tensor: no cache hit
    for t in reversed(q.transforms):
        back = t.inv(back.clone())
    assert torch.allclose(back, z0, atol=1e-4)


def test_full_cov_guide_is_a_proper_cholesky_gaussian():
    guide = make_guide("full_cov_normal")
    q = guide(torch.rand(4, X))
    L = q.scale_tril
    assert torch.equal(L, torch.tril(L)) and (torch.diagonal(L, dim1=-2, dim2=-1) > 0).all()
    z = torch.randn(4, D)
    ref = torch.distributions.MultivariateNormal(q.loc, covariance_matrix=L @ L.transpose(-1, -2))
    assert torch.allclose(q.log_prob(z), ref.log_prob(z), atol=1e-4)


@pytest.mark.parametrize("prior, guide, likelihood",
                         list(itertools.product(PRIORS, GUIDES, sorted(registries.LIKELIHOODS))))
def test_every_combination_builds_trains_and_evaluates(prior, guide, likelihood):
    conditional = getattr(registries.PRIORS[prior], "conditional", False)
    config = C.ModelConfig(prior=prior, guide=guide, likelihood=likelihood, latent_dim=D,
                           hidden=[8], prior_options={"num_pseudo": 3} if prior == "vamp" else {},
                           conditional=conditional, num_classes=K if conditional else 0)
    if prior == "vamp" and not registries.GUIDES[guide].invertible:
        with pytest.raises(ConfigError, match="needs the inverse of its flow.*Use a guide"):
            registries.build_vae(config, (X,))
        return
    vae = registries.build_vae(config, (X,))
    x = torch.bernoulli(torch.full((4, X), 0.5))
    data = (x, torch.tensor([0, 1, 2, 1])) if conditional else x  # p(x | y): y given
    loss = Trace_ELBO().differentiable_loss(vae.model, vae.guide, *(data if conditional else
                                                                    (x,)))
    loss.backward()
    assert torch.isfinite(loss)
    with torch.no_grad():
        lw = log_weights(vae.model, vae.proposal(), data, 3)  # the guide itself or, for a
        # point mass, the explicit Gaussian proposal around it
    assert lw.shape == (3, 4) and torch.isfinite(lw).all()


def test_options_reach_the_component_and_bad_ones_are_refused():
    assert len(make_guide("iaf", num_flows=3).flows) == 3
    assert len(make_guide("planar").flows) == 8  # its default
    assert make_prior("mog", num_components=7).locs.shape == (7, D)
    with pytest.raises(ConfigError, match=r"guide 'iaf' does not take option\(s\) \['pseudo'\]; "
                                          r"its options are \['flow_hidden', 'num_flows'\]"):
        make_guide("iaf", pseudo=3)
    with pytest.raises(ConfigError, match="prior 'standard_normal' does not take"):
        make_prior("standard_normal", num_components=2)
    with pytest.raises(ConfigError, match="num_flows must lie in 1..1000, got 0"):
        make_guide("iaf", num_flows=0)
    with pytest.raises(ConfigError, match="num_pseudo must be at least 1"):
        make_prior("vamp", num_pseudo=0)


def test_flow_guide_needs_a_hidden_layer():
    with pytest.raises(ConfigError, match="at least one hidden layer"):
        registries.build_vae(C.ModelConfig(guide="iaf", hidden=[], latent_dim=2), (X,))


def test_recipe_options_tables(tmp_path):
    p = tmp_path / "r.toml"
    p.write_text('[model]\nguide = "iaf"\n[model.guide_options]\nnum_flows = 3\n')
    cfg = recipes.load_recipe(p)
    assert cfg.model.guide_options == {"num_flows": 3}
    vae = registries.build_vae(cfg.model, (X,))
    assert len(vae.posterior.flows) == 3
    assert math.isfinite(float(vae.sample(2).sum()))
    pyro.clear_param_store()


def test_vamp_fast_path_equals_direct_mixture():
    """The matrix-product evaluation of a Gaussian VampPrior equals the naive mixture."""
    guide = DiagonalNormalGuide((X,), D, [8])
    prior = VampPrior(guide, (X,), num_pseudo=5)
    z = torch.randn(3, 4, D)
    fast = prior(4).log_prob(z)
    q = guide(prior.pseudo_inputs)
    direct = torch.logsumexp(torch.stack([
        torch.distributions.Normal(q.base_dist.loc[j], q.base_dist.scale[j]).log_prob(z).sum(-1)
        for j in range(5)], -1), -1) - math.log(5)
    assert fast.shape == (3, 4) and torch.allclose(fast, direct, atol=1e-5)


@pytest.mark.parametrize("image_shape", [(1, 8, 8), (1, 28, 28), (3, 8, 8)])
def test_conv_networks_shapes_and_layout(image_shape):
    from pyro_vae.nets import ConvDecoder, ConvEncoder

    n = image_shape[0] * image_shape[1] * image_shape[2]
    enc = ConvEncoder(image_shape, [16], 5)
    x = torch.rand(2, 3, n)  # particle and batch dims lead
    h, out = enc.forward_with_features(x)
    assert out.shape == (2, 3, 5) and h.shape == (2, 3, 16) and enc.feature_size == 16
    assert torch.allclose(enc(x[1]), out[1], atol=1e-6)
    dec = ConvDecoder(4, [16], image_shape, params_per_value=3)
    z = torch.randn(2, 3, 4)
    y = dec(z)
    assert y.shape == (2, 3, n * 3)
    # layout (C, H, W, params): parameter j of pixel i sits at 3 * i + j
    raw = dec.deconv(dec.head(z.reshape(-1, 4)).reshape(-1, *dec.start))
    c = image_shape[0]
    per_param = raw.reshape(6, c, 3, image_shape[1], image_shape[2])[:, :, 1].reshape(2, 3, n)
    assert torch.allclose(y.reshape(2, 3, n, 3)[..., 1], per_param, atol=1e-6)


def test_conv_network_needs_an_image_shape():
    with pytest.raises(ConfigError, match="convolutional network needs an image shape"):
        registries.build_vae(C.ModelConfig(network="conv"), (64,))
    with pytest.raises(ConfigError, match="unknown network 'rnn'"):
        registries.build_vae(C.ModelConfig(network="rnn"), (64,), (1, 8, 8))


def test_full_cov_guide_starts_diagonal():
    q = make_guide("full_cov_normal")(torch.rand(3, X))
    L = q.scale_tril
    assert torch.equal(L, torch.diag_embed(torch.diagonal(L, dim1=-2, dim2=-1)))


@pytest.mark.parametrize("discrete, continuous", list(itertools.product(
    sorted(DISCRETE_LATENTS), GUIDES)))
def test_discrete_latents_refuse_continuous_partners(discrete, continuous):
    prior = DISCRETE_LATENTS[discrete]
    with pytest.raises(ConfigError, match="needs prior|needs guide"):
        registries.build_vae(C.ModelConfig(prior=prior, guide=continuous, latent_dim=20,
                                           hidden=[8]), (X,))
    for other in PRIORS:
        with pytest.raises(ConfigError, match="needs prior"):
            registries.build_vae(C.ModelConfig(prior=other, guide=discrete, latent_dim=20,
                                               hidden=[8]), (X,))
