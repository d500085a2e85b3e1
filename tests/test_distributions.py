"""The lean Gaussians give the values and gradients of the generic Normal."""

import torch
from torch.distributions import Normal

from pyro_vae.distributions import ReparameterizedNormal, StandardNormal


def test_standard_normal_log_prob_equals_normal():
    d = StandardNormal(torch.zeros(3, 4), torch.ones(3, 4))
    for value in (torch.randn(3, 4), torch.randn(5, 3, 4), torch.randn(4)):
        expected = Normal(torch.zeros(3, 4), torch.ones(3, 4)).log_prob(value)
        got = d.log_prob(value)
        assert got.shape == expected.shape
        assert torch.allclose(got, expected, atol=1e-6)
    assert isinstance(d.expand((2, 3, 4)), StandardNormal)


def test_reparameterized_normal_scores_its_sample_like_normal():
    loc = torch.randn(6, 5, requires_grad=True)
    raw = torch.randn(6, 5, requires_grad=True)
    scale = torch.nn.functional.softplus(raw)
    d = ReparameterizedNormal(loc, scale)
    torch.manual_seed(1)
    z = d.rsample((2,))
    lean = (d.log_prob(z) + z.pow(2)).sum()  # z also used elsewhere, as in an ELBO
    g_lean = torch.autograd.grad(lean, (loc, raw))
    torch.manual_seed(1)
    ref_dist = Normal(loc, torch.nn.functional.softplus(raw))
    z_ref = ref_dist.rsample((2,))
    assert torch.equal(z, z_ref)  # the same draws
    ref = (ref_dist.log_prob(z_ref) + z_ref.pow(2)).sum()
    g_ref = torch.autograd.grad(ref, (loc, raw))
    assert torch.allclose(lean, ref, atol=1e-5)
    for a, b in zip(g_lean, g_ref):
        assert torch.allclose(a, b, atol=1e-5)
    # any other value goes through the generic formula
    other = torch.randn(6, 5)
    assert torch.allclose(d.log_prob(other), ref_dist.log_prob(other))
