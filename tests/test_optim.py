"""Adam on per-tensor normalized gradients ("AdamNormGrad", the optimizer of the VampPrior
paper's code, Tomczak & Welling 2018, arXiv:1705.07120; issue 16)."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from pyro_vae.batches import EpochBatches
from pyro_vae.config import Config
from pyro_vae.errors import ConfigError
from pyro_vae.optim import normalize_gradients
from pyro_vae.trainer import Trainer


class Scaled(nn.Module):
    """A model whose ELBO gradient is ``scale`` times that of ``scale = 1`` (a fixed
    guide; the loss is ``scale`` times a Gaussian log-density of w)."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([0.5, -1.0, 2.0]))
        self.b = nn.Parameter(torch.tensor([3.0]))
        self.scale = 1.0

    def model(self, x):
        pyro.module("m", self)
        with pyro.plate("data", x.shape[0]), pyro.poutine.scale(scale=self.scale):
            pyro.sample("x", dist.Normal(self.w.sum() * self.b, 1.0), obs=x)

    def guide(self, x):
        pass


def by_hand(w, grads, lr, betas=(0.9, 0.999), eps=1e-8, norm_eps=1e-7):
    """Adam on g / (||g|| + 1e-7), written out step by step."""
    m = torch.zeros_like(w)
    v = torch.zeros_like(w)
    for t, g in enumerate(grads, start=1):
        g = g / (g.norm() + norm_eps)
        m = betas[0] * m + (1 - betas[0]) * g
        v = betas[1] * v + (1 - betas[1]) * g * g
        m_hat, v_hat = m / (1 - betas[0] ** t), v / (1 - betas[1] ** t)
        w = w - lr * m_hat / (v_hat.sqrt() + eps)
    return w


def test_adam_normgrad_is_adam_on_normalized_gradients():
    pair = Scaled()
    x = torch.tensor([1.0, 2.0])
    trainer = Trainer(pair, EpochBatches(x, 2, "none", seed=0), lr=0.1,
                      optimizer="adam_normgrad")
    w0, b0 = pair.w.detach().clone(), pair.b.detach().clone()
    grads_w, grads_b = [], []
    for scale in (1.0, 100.0, 0.01):
        pair.scale = scale
        # the gradient of scale * -sum log N(x; sum(w) b, 1) where the trainer stands
        w, b = pair.w.detach(), pair.b.detach()
        residual = (x - w.sum() * b).sum()
        grads_w.append(-scale * residual * b.expand(3))
        grads_b.append(-scale * residual * w.sum().reshape(1))
        trainer.training_step(x)
    torch.testing.assert_close(pair.w.detach(), by_hand(w0, grads_w, 0.1))
    torch.testing.assert_close(pair.b.detach(), by_hand(b0, grads_b, 0.1))


def test_the_loss_scale_does_not_change_the_normalized_path():
    """Normalized gradients make the path independent of how the loss is scaled from step
    to step; plain Adam's path is not (its moments mix steps of different scales)."""
    def path(optimizer, scales):
        pair = Scaled()
        x = torch.tensor([1.0, 2.0])
        trainer = Trainer(pair, EpochBatches(x, 2, "none", seed=0), lr=0.1,
                          optimizer=optimizer)
        for s in scales:
            pair.scale = s
            trainer.training_step(x)
        return torch.cat([pair.w.detach(), pair.b.detach()])

    steady, varying = [1.0] * 4, [1.0, 1000.0, 0.001, 30.0]
    torch.testing.assert_close(path("adam_normgrad", steady), path("adam_normgrad", varying))
    assert not torch.allclose(path("adam", steady), path("adam", varying), atol=1e-4)


def test_normalize_gradients_gives_unit_norm_per_tensor():
    a, b, c = torch.zeros(3, requires_grad=True), torch.zeros(2, requires_grad=True), \
        torch.zeros(1, requires_grad=True)
    a.grad, b.grad = torch.tensor([3.0, 4.0, 0.0]), torch.tensor([0.0, 1e-3])
    normalize_gradients([a, b, c])
    torch.testing.assert_close(a.grad, torch.tensor([0.6, 0.8, 0.0]))
    assert b.grad[1].item() == pytest.approx(1e-3 / (1e-3 + 1e-7))
    assert c.grad is None
    assert math.isclose(a.grad.norm().item(), 1.0, rel_tol=1e-6)


def test_an_unknown_optimizer_is_refused():
    with pytest.raises(ConfigError, match="unknown train.optimizer 'sgd'"):
        Config.from_dict({"train": {"optimizer": "sgd"}})
    with pytest.raises(ValueError, match="unknown optimizer"):
        Trainer(Scaled(), EpochBatches(torch.zeros(2), 2, "none", seed=0), optimizer="sgd")


def test_clipping_is_refused_where_normalization_would_undo_it():
    with pytest.raises(ConfigError, match="clip_norm = 1.0 would do nothing"):
        Config.from_dict({"train": {"optimizer": "adam_normgrad", "clip_norm": 1.0}})


def test_the_recipes_optimizer_reaches_the_trainer(tmp_path):
    from pyro_vae.recipes import apply_overrides, resolve_recipe
    from pyro_vae.run import Run
    from pyro_vae.runfolder import prepare_run_folder

    for name, normalized in (("adam", False), ("adam_normgrad", True)):
        config = apply_overrides(resolve_recipe("vae"), {
            "data.name": "digits", "model.hidden": [8], "model.latent_dim": 2,
            "train.optimizer": name})
        prepare_run_folder(tmp_path / name)
        run = Run(config, tmp_path / name, device="cpu", quiet=True)
        assert run.trainer.normalize_gradients is normalized
