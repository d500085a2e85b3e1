"""The two-level HVAE of Tomczak & Welling 2018 (arXiv:1705.07120, issue 16): inputs read side
by side, top-down inference q(z2 | x) q(z1 | x, z2), p(z1 | z2) with a clipped log-variance
and a likelihood reading both layers."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

from pyro_vae.config import ModelConfig
from pyro_vae.errors import ConfigError
from pyro_vae.guides import DiagonalNormalGuide
from pyro_vae.hierarchy import GaussianConditional, HierarchicalVAE, TopDownGuide
from pyro_vae.likelihoods import BernoulliLikelihood
from pyro_vae.nets import GatedDense, JoinedInputs
from pyro_vae.priors import StandardNormalPrior
from pyro_vae.recipes import resolve_recipe
from pyro_vae.registries import build_vae


def set_linear(layer, weight, bias):
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
        layer.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))


def test_joined_inputs_read_each_input_then_concatenate():
    join = JoinedInputs([2, 1], 2, network="mlp", activation="relu")
    set_linear(join.branches[0][0], [[1.0, 0.0], [0.0, -1.0]], [0.0, 0.0])
    set_linear(join.branches[1][0], [[2.0], [-3.0]], [1.0, 0.0])
    a = torch.tensor([[3.0, 4.0]])
    b = torch.tensor([[1.0]])
    # relu([3, -4]) = [3, 0]; relu([2 + 1, -3]) = [3, 0]
    assert torch.equal(join(a, b), torch.tensor([[3.0, 0.0, 3.0, 0.0]]))
    assert join.out_features == 4 and join.in_features == (2, 1)
    with pytest.raises(ValueError, match="expected 2 inputs, got 1"):
        join(a)


def test_joined_inputs_broadcast_a_particle_dim_and_gate():
    torch.manual_seed(0)
    join = JoinedInputs([5, 3], 4)
    assert all(isinstance(b, GatedDense) for b in join.branches)
    x = torch.randn(7, 5)                   # data: (B, 5)
    z = torch.randn(6, 7, 3)                # particles: (P, B, 3)
    out = join(x, z)
    assert out.shape == (6, 7, 8)
    assert torch.allclose(out[2, :, :4], join.branches[0](x))   # x's features, repeated
    assert torch.allclose(out[2, :, 4:], join.branches[1](z[2]))
    with pytest.raises(ConfigError, match="'gated' or 'mlp'"):
        JoinedInputs([5], 4, network="conv")


def set_gated(layer, value, value_bias, gate, gate_bias):
    set_linear(layer.value, value, value_bias)
    set_linear(layer.gate, gate, gate_bias)


def test_a_gated_layer_with_set_weights():
    layer = GatedDense(2, 2)
    # value [x1, 2 x2 + 1]; gate sigmoid([0, log 3]) = [1/2, 3/4]
    set_gated(layer, [[1.0, 0.0], [0.0, 2.0]], [0.0, 1.0], [[0.0, 0.0], [0.0, 0.0]],
              [0.0, math.log(3.0)])
    out = layer(torch.tensor([[3.0, 4.0]]))
    assert torch.allclose(out, torch.tensor([[1.5, 6.75]]), atol=1e-6)


def test_a_gated_join_with_set_weights():
    join = JoinedInputs([1, 1], 1, network="gated")
    set_gated(join.branches[0], [[2.0]], [0.0], [[0.0]], [0.0])           # 2 a / 2
    set_gated(join.branches[1], [[1.0]], [1.0], [[0.0]], [math.log(3.0)])  # (b + 1) 3/4
    out = join(torch.tensor([[3.0]]), torch.tensor([[1.0]]))
    assert torch.allclose(out, torch.tensor([[3.0, 1.5]]), atol=1e-6)


def test_a_gated_conditional_with_set_weights():
    cond = GaussianConditional(1, 1, hidden=[1], network="gated", log_var_range=[-6.0, 2.0])
    gated, out = cond.net.net
    set_gated(gated, [[1.0]], [0.0], [[0.0]], [0.0])    # h = z / 2
    set_linear(out, [[2.0], [-100.0]], [1.0, 0.0])      # loc 2 h + 1, log-variance -100 h
    p = cond(torch.tensor([[2.0]]))
    assert torch.allclose(p.base_dist.loc, torch.tensor([[3.0]]))
    assert torch.allclose(p.base_dist.scale, torch.exp(torch.tensor([[-3.0]])))  # clipped to -6


def test_a_conditional_with_a_clipped_log_variance():
    cond = GaussianConditional(1, 2, hidden=[], log_var_range=[-6.0, 2.0])
    set_linear(cond.net.net[0], [[1.0], [2.0], [-100.0], [100.0]], [0.0, 0.0, 0.0, 0.0])
    p = cond(torch.tensor([[1.0]]))
    assert torch.allclose(p.base_dist.loc, torch.tensor([[1.0, 2.0]]))
    # log-variance -100 -> -6, 100 -> 2: scale exp(-3), exp(1)
    assert torch.allclose(p.base_dist.scale, torch.exp(torch.tensor([[-3.0, 1.0]])))
    assert p.event_shape == (2,)
    with pytest.raises(ValueError, match="lo < hi"):
        GaussianConditional(1, 2, log_var_range=[1.0, 1.0])
    with pytest.raises(ConfigError, match="'mlp' or 'gated'"):
        GaussianConditional(1, 2, network="conv")


def small_top_down(likelihood_join=True):
    torch.manual_seed(1)
    d, d1, d2 = 6, 3, 2
    joins = [JoinedInputs([d, d2], 4)]
    layers = [DiagonalNormalGuide((8,), d1, [5]), DiagonalNormalGuide((d,), d2, [5])]
    guide = TopDownGuide(layers, joins, (d,))
    join = JoinedInputs([d1, d2], 4) if likelihood_join else None
    likelihood = BernoulliLikelihood((d,), 8 if likelihood_join else d1, [5])
    return HierarchicalVAE(StandardNormalPrior(d2), guide, likelihood,
                           [GaussianConditional(d2, d1, [5])], likelihood_join=join)


def test_top_down_guide_samples_the_top_first_and_reads_x_beside_z2():
    vae = small_top_down()
    x = torch.bernoulli(torch.full((4, 6), 0.5))
    trace = poutine.trace(vae.guide).get_trace(x)
    assert [n for n in trace.nodes if n.startswith("z")] == ["z2", "z1"]
    guide = vae.posterior
    z2 = trace.nodes["z2"]["value"]
    q1 = guide.layers[0](guide.joins[0](x, z2))
    assert torch.allclose(trace.nodes["z1"]["fn"].base_dist.loc, q1.base_dist.loc)
    moved = guide.layers[0](guide.joins[0](x, z2 + 1.0))
    assert not torch.allclose(moved.base_dist.loc, q1.base_dist.loc)   # reads z2
    other_x = guide.layers[0](guide.joins[0](1 - x, z2))
    assert not torch.allclose(other_x.base_dist.loc, q1.base_dist.loc)  # reads x
    assert torch.allclose(guide.top_posterior(x).base_dist.loc,
                          trace.nodes["z2"]["fn"].base_dist.loc)


def test_the_log_joint_reads_both_layers():
    """log p(x, z1, z2) of the model's trace, against the densities written out."""
    vae = small_top_down()
    x = torch.bernoulli(torch.full((4, 6), 0.5))
    guide_trace = poutine.trace(vae.guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(vae.model, guide_trace)).get_trace(x)
    z1, z2 = guide_trace.nodes["z1"]["value"], guide_trace.nodes["z2"]["value"]
    logits = vae.likelihood.decoder(vae.likelihood_join(z1, z2))
    expected = (dist.Normal(0, 1).log_prob(z2).sum()
                + vae.conditionals[0](z2).log_prob(z1).sum()
                + dist.Bernoulli(logits=logits).log_prob(x).sum())
    assert torch.allclose(model_trace.log_prob_sum(), expected, atol=1e-5)
    # p(x | z1, z2) changes with z2 at fixed z1: the likelihood reads the top layer
    assert not torch.allclose(vae.decode([z1, z2]).mean, vae.decode([z1, z2 + 1]).mean)


def test_sampling_and_reconstruction_with_a_likelihood_reading_every_layer():
    vae = small_top_down()
    assert vae.sample(5).shape == (5, 6)
    assert vae.reconstruct(torch.ones(3, 6)).shape == (3, 6)
    top = vae.sample_layer(5, 2)
    assert vae.sample(5, top=top, layer=2).shape == (5, 6)
    with pytest.raises(ValueError, match="fix the top layer"):
        vae.sample(5, top=torch.zeros(5, 3), layer=1)
    with pytest.raises(ValueError, match="reads layers of sizes"):
        HierarchicalVAE(vae.prior, vae.posterior, vae.likelihood, vae.conditionals,
                        likelihood_join=JoinedInputs([3, 3], 4))


def test_the_paper_hvae_vamp_has_the_papers_layers():
    """Parameters counted layer by layer from Tomczak & Welling's two-level HVAE (gated
    dense layers hold two weight matrices and two biases)."""
    def gated(a, b):
        return 2 * (a * b + b)

    def linear(a, b):
        return a * b + b

    q_z2 = gated(784, 300) + gated(300, 300) + linear(300, 80)
    q_z1 = gated(784, 300) + gated(40, 300) + gated(600, 300) + linear(300, 80)
    p_z1 = gated(40, 300) + gated(300, 300) + linear(300, 80)
    p_x = 2 * gated(40, 300) + gated(600, 300) + linear(300, 784)
    pseudo_inputs = 500 * 784
    config = resolve_recipe("paper_hvae_vamp")
    vae = build_vae(config.model, (784,))
    assert sum(p.numel() for p in vae.parameters()) == \
        q_z2 + q_z1 + p_z1 + p_x + pseudo_inputs
    no_vamp = build_vae(resolve_recipe("paper_hvae").model, (784,))
    assert sum(p.numel() for p in no_vamp.parameters()) == q_z2 + q_z1 + p_z1 + p_x
    assert vae.conditionals[0].log_var_range == (-6.0, 2.0)
    assert vae.posterior.layers[0].log_var_range == (-6.0, 2.0)


def test_one_svi_step_moves_every_part(tmp_path):
    vae = small_top_down()
    pyro.clear_param_store()
    before = {n: p.detach().clone() for n, p in vae.named_parameters()}
    svi = pyro.infer.SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 0.1}),
                         pyro.infer.Trace_ELBO())
    svi.step(torch.bernoulli(torch.full((8, 6), 0.5)))
    unmoved = [n for n, p in vae.named_parameters() if torch.equal(p, before[n])]
    assert unmoved == []


@pytest.mark.parametrize("changes, message", [
    ({"likelihood_input": "both"}, "likelihood_input"),
    ({"conditional_options": {"num_flows": 2}}, "only option is log_var_range"),
    ({"conditional_options": {"log_var_range": [2, -6]}}, "lo < hi"),
    ({"network": "conv"}, "use 'mlp' or 'gated'"),
])
def test_bad_hierarchy_settings_are_refused(changes, message):
    base = dict(latent_dim=[3, 2], hidden=[[4], [4]], inference="top_down",
                likelihood_input="all")
    base.update(changes)
    with pytest.raises(ConfigError, match=message):
        build_vae(ModelConfig(**base), (784,), image_shape=(1, 28, 28))


def test_flat_vaes_refuse_hierarchy_settings():
    with pytest.raises(ConfigError, match="apply to hierarchical VAEs"):
        build_vae(ModelConfig(latent_dim=3, hidden=[4], likelihood_input="all"), (6,))
    with pytest.raises(ConfigError, match="apply to hierarchical VAEs"):
        build_vae(ModelConfig(latent_dim=3, hidden=[4],
                              conditional_options={"log_var_range": [-6, 2]}), (6,))


def test_particles_vectorized_through_a_top_down_vampprior_model():
    """log weights of k particles at once, on a small model of the paper's kind: one
    finite weight per particle and image, and particle p's weight equals the weight
    of a single-particle trace with the same draws (a broadcasting slip would mix
    particles or images)."""
    from pyro_vae.infer import log_weights

    torch.manual_seed(0)
    vae = build_vae(ModelConfig(prior="vamp", latent_dim=[3, 2], hidden=[[4], [5]],
                                network="gated", inference="top_down", likelihood_input="all",
                                prior_options={"num_pseudo": 7}), (6,))
    x = torch.bernoulli(torch.full((4, 6), 0.5))
    w = log_weights(vae.model, vae.guide, x, num_particles=50)
    assert w.shape == (50, 4) and torch.isfinite(w).all()
    guide_trace = poutine.trace(vae.guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(vae.model, guide_trace)).get_trace(x)
    model_trace.compute_log_prob()
    guide_trace.compute_log_prob()
    one = sum(site["log_prob"] for site in model_trace.nodes.values()
              if site["type"] == "sample") - \
        sum(site["log_prob"] for site in guide_trace.nodes.values() if site["type"] == "sample")
    expected = log_weights(vae.model, poutine.replay(vae.guide, guide_trace), x,
                           num_particles=3)
    assert torch.allclose(expected, one.expand(3, 4), atol=1e-4)


def test_traversals_and_interpolations_decode_every_layer():
    from pyro_vae.latent_plots import plot_interpolation, plot_traversal

    vae = small_top_down()
    x = torch.bernoulli(torch.full((2, 6), 0.5))
    plot_traversal(vae, x[0], (1, 2, 3), steps=3)
    plot_interpolation(vae, x[:1], x[1:], (1, 2, 3), steps=3)


def test_empty_hidden_lists_and_bad_conditional_options_are_config_errors():
    with pytest.raises(ConfigError, match="give every layer at least one"):
        build_vae(ModelConfig(latent_dim=[3, 2], hidden=[[], [4]], inference="top_down"), (6,))
    with pytest.raises(ConfigError, match="conditional_options"):
        build_vae(ModelConfig(latent_dim=[3, 2], hidden=[4],
                              conditional_options={"log_var_range": 2.0}), (6,))
