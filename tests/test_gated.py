"""The networks of the VampPrior paper's code (issue 16): gated dense layers and a
clipped log-variance, available to every recipe."""

import pytest
import torch

from pyro_vae.errors import ConfigError
from pyro_vae.guides import DiagonalNormalGuide
from pyro_vae.nets import GatedDense, GatedMLP, make_decoder, make_encoder


def test_a_gated_layer_is_value_times_sigmoid_gate():
    layer = GatedDense(5, 3)
    x = torch.randn(4, 2, 5)
    expected = (x @ layer.value.weight.T + layer.value.bias) * \
        torch.sigmoid(x @ layer.gate.weight.T + layer.gate.bias)
    assert torch.allclose(layer(x), expected, atol=1e-6)
    assert torch.equal(layer.value.bias, torch.zeros(3))


def test_he_initialization_keeps_the_signal():
    torch.manual_seed(0)
    layer = GatedDense(300, 300)
    std = layer.value.weight.std().item()
    assert std == pytest.approx((2 / 300) ** 0.5, rel=0.05)


def test_gated_networks_are_mlps_with_gates():
    net = make_encoder("gated", (64,), None, [300, 300], 80, "softplus")
    assert isinstance(net, GatedMLP) and [type(m) for m in net.net] == \
        [GatedDense, GatedDense, torch.nn.Linear]
    h, out = net.forward_with_features(torch.rand(7, 64))
    assert h.shape == (7, 300) and out.shape == (7, 80) and net.feature_size == 300
    dec = make_decoder("gated", 40, [300, 300], (64,), None, 1, "softplus")
    assert dec(torch.randn(3, 5, 40)).shape == (3, 5, 64)
    with pytest.raises(ConfigError, match="positive"):
        GatedMLP(0, [3], 2)


def test_the_log_variance_is_clipped_like_a_hardtanh():
    guide = DiagonalNormalGuide((64,), 4, [8], log_var_range=[-6, 2])
    params = torch.tensor([[0.0] * 4 + [-100.0, -6.0, 0.0, 100.0]])
    scale = guide.base(params).base_dist.scale
    assert torch.allclose(scale, torch.exp(0.5 * torch.tensor([[-6.0, -6.0, 0.0, 2.0]])))
    with pytest.raises(ValueError, match="lo < hi"):
        DiagonalNormalGuide((64,), 4, [8], log_var_range=[2, -6])


def test_vampprior_pseudo_inputs_start_where_asked():
    from pyro_vae.config import ModelConfig
    from pyro_vae.registries import build_vae

    torch.manual_seed(0)
    vae = build_vae(ModelConfig(prior="vamp", latent_dim=4, hidden=[8], prior_options={
        "num_pseudo": 200, "init_mean": -0.05, "init_std": 0.01}), (64,))
    raw = vae.prior.raw_pseudo_inputs.detach()
    assert raw.mean().item() == pytest.approx(-0.05, abs=1e-3)
    assert raw.std().item() == pytest.approx(0.01, rel=0.05)
    assert torch.allclose(vae.prior.pseudo_inputs, torch.sigmoid(raw))
    with pytest.raises(ConfigError, match="init_std must be at least 0"):
        build_vae(ModelConfig(prior="vamp", latent_dim=4, hidden=[8],
                              prior_options={"init_std": -1.0}), (64,))
