import pyro
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO, TraceMeanField_ELBO

from pyro_vae import VAE, BernoulliLikelihood, DiagonalNormalGuide, StandardNormalPrior


def test_model_sites_and_shapes(small_vae, binary_batch):
    tr = poutine.trace(small_vae.model).get_trace(binary_batch)
    assert tr.nodes["z"]["value"].shape == (5, 3)
    assert tr.nodes["z"]["fn"].event_shape == (3,)
    assert tr.nodes["x"]["is_observed"]
    assert tr.nodes["x"]["fn"].batch_shape == (5,)
    assert tr.nodes["x"]["fn"].event_shape == (64,)
    for name in ("z", "x"):
        assert [f.name for f in tr.nodes[name]["cond_indep_stack"]] == ["data"]
        assert tr.nodes[name]["cond_indep_stack"][0].dim == -1


def test_guide_sites(small_vae, binary_batch):
    tr = poutine.trace(small_vae.guide).get_trace(binary_batch)
    latent = [n for n, s in tr.nodes.items() if s["type"] == "sample" and n != "data"]
    assert latent == ["z"]
    assert tr.nodes["z"]["fn"].batch_shape == (5,)


@pytest.mark.parametrize("outer", [(), (4,), (2, 3)])
def test_outer_particle_plates(small_vae, binary_batch, outer):
    """Leftmost dims stay free: vectorized particles broadcast through model and guide."""
    def wrapped(fn):
        def run(x):
            with pyro.plate_stack("particles", outer, rightmost_dim=-2):
                return fn(x)
        return run

    guide_tr = poutine.trace(wrapped(small_vae.guide)).get_trace(binary_batch)
    model_tr = poutine.trace(poutine.replay(wrapped(small_vae.model), trace=guide_tr)).get_trace(
        binary_batch)
    assert guide_tr.nodes["z"]["value"].shape == (*outer, 5, 3)
    assert model_tr.nodes["x"]["fn"].batch_shape == (*outer, 5)
    model_tr.compute_log_prob()
    assert model_tr.nodes["x"]["log_prob"].shape == (*outer, 5)


@pytest.mark.slow
@pytest.mark.parametrize("loss", [Trace_ELBO(), TraceMeanField_ELBO()])
def test_plain_svi_accepts_model_and_guide(small_vae, loss):
    """Any pyro.infer algorithm takes vae.model / vae.guide unchanged, and learns."""
    x = torch.bernoulli(torch.rand(1, 64).expand(200, 64))
    svi = SVI(small_vae.model, small_vae.guide, pyro.optim.Adam({"lr": 1e-2}), loss)
    first = sum(svi.step(x) for _ in range(5))
    for _ in range(150):
        svi.step(x)
    last = sum(svi.step(x) for _ in range(5))
    assert last < first
    names = set(pyro.get_param_store().keys())
    assert any(n.startswith("vae.guide$$$") for n in names)
    assert any(n.startswith("vae.likelihood$$$") for n in names)


def test_wrong_input_shape_is_a_clear_error(small_vae):
    with pytest.raises(ValueError, match=r"expected x of shape \(B, 64\), got \(5, 8, 8\)"):
        small_vae.model(torch.zeros(5, 8, 8))
    with pytest.raises(ValueError, match="expected x of shape"):
        small_vae.guide(torch.zeros(5, 784))


def test_image_event_shape():
    """Datapoints of shape (1, 8, 8) keep their event dims in the likelihood."""
    shape = (1, 8, 8)
    vae = VAE(StandardNormalPrior(2), DiagonalNormalGuide(shape, 2, [8]),
              BernoulliLikelihood(shape, 2, [8]))
    x = torch.bernoulli(torch.full((3, *shape), 0.5))
    tr = poutine.trace(vae.model).get_trace(x)
    assert tr.nodes["x"]["fn"].event_shape == shape
    assert vae.reconstruct(x).shape == (3, *shape)
    assert vae.sample(4).shape == (4, *shape)


def test_prior_is_standard_normal():
    p = StandardNormalPrior(4)(3)
    assert p.batch_shape == (3,) and p.event_shape == (4,)
    z = torch.randn(3, 4)
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    assert torch.allclose(p.log_prob(z), expected)
    with pytest.raises(ValueError, match="latent_dim"):
        StandardNormalPrior(0)


def test_guide_scale_positive_and_shapes():
    g = DiagonalNormalGuide((64,), 3, [16])
    q = g(torch.zeros(7, 64))
    assert q.batch_shape == (7,) and q.event_shape == (3,)
    assert (q.base_dist.scale > 0).all()


def test_bernoulli_likelihood_normalized():
    """Summing p(x|z) over all 2^D binary x gives 1."""
    lik = BernoulliLikelihood((4,), 2, [5])
    z = torch.randn(2)
    xs = torch.tensor([[(i >> b) & 1 for b in range(4)] for i in range(16)], dtype=torch.float)
    total = lik(z).log_prob(xs).exp().sum()
    assert torch.allclose(total, torch.tensor(1.0), atol=1e-6)


def test_lean_bernoulli_matches_torch_and_validates():
    from pyro_vae.likelihoods import Bernoulli

    logits = torch.randn(3, 5, requires_grad=True)
    x = torch.bernoulli(torch.full((2, 3, 5), 0.5))
    ours = Bernoulli(logits=logits).log_prob(x)
    ref = torch.distributions.Bernoulli(logits=logits).log_prob(x)
    assert ours.shape == (2, 3, 5) and torch.allclose(ours, ref)
    (g_ours,) = torch.autograd.grad(ours.sum(), logits)
    (g_ref,) = torch.autograd.grad(ref.sum(), logits)
    assert torch.allclose(g_ours, g_ref)
    with pytest.raises(ValueError):
        Bernoulli(logits=logits, validate_args=True).log_prob(torch.full((3, 5), 0.5))
    assert isinstance(Bernoulli(logits=logits).expand((4, 3, 5)), Bernoulli)


def test_latent_size_mismatch_is_refused():
    with pytest.raises(ValueError, match=r"disagree on the latent size: \{'prior': 3, 'guide': 4"):
        VAE(StandardNormalPrior(3), DiagonalNormalGuide((64,), 4, [8]),
            BernoulliLikelihood((64,), 4, [8]))
