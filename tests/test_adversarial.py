"""Adversarial VAEs: the two players' losses, the discriminator's own optimizer, its state
in the checkpoint (resume bit-identical) and both players' metrics."""

import json

import pyro
import pytest
import torch
import torch.nn.functional as F
from pyro.infer import Trace_ELBO

from pyro_vae import config, recipes
from pyro_vae.batches import EpochBatches
from pyro_vae.checkpoint import load_checkpoint
from pyro_vae.config import Config, ModelConfig, TrainConfig
from pyro_vae.errors import ConfigError
from pyro_vae.infer import AdversarialAutoencoderObjective, VAEGANObjective
from pyro_vae.registries import build_vae
from pyro_vae.run import Run
from pyro_vae.runfolder import prepare_run_folder
from pyro_vae.runs import load_run
from pyro_vae.trainer import Trainer

EVENT = 10
X = torch.bernoulli(torch.full((6, EVENT), 0.5), generator=torch.Generator().manual_seed(0))


def vae_with(discriminator, guide="diagonal_normal", constant=None):
    torch.manual_seed(0)
    m = ModelConfig(latent_dim=3, hidden=[8], guide=guide, discriminator=discriminator,
                    discriminator_hidden=[8])
    vae = build_vae(m, (EVENT,))
    if constant is not None:  # D(.) = constant for every input
        with torch.no_grad():
            vae.discriminator.output_layer.weight.zero_()
            vae.discriminator.output_layer.bias.fill_(constant)
    return vae


def test_aae_losses_with_a_constant_discriminator():
    vae = vae_with("latent", guide="delta", constant=0.7)
    objective = AdversarialAutoencoderObjective(vae.discriminator, adversarial_weight=2.0)
    loss = objective.differentiable_loss(vae.model, vae.guide, X)
    z = vae.posterior(X).mean
    log_lik = vae.likelihood(z).log_prob(X).sum()
    expected = -log_lik + 2.0 * 6 * F.softplus(torch.tensor(-0.7))
    assert torch.allclose(loss, expected, atol=1e-5)
    d_loss, stats = objective.discriminator_loss(vae.model, vae.guide, X)
    assert torch.allclose(d_loss, 6 * (F.softplus(torch.tensor(-0.7)) +
                                       F.softplus(torch.tensor(0.7))), atol=1e-5)
    assert stats["discriminator_accuracy"] == 0.5  # says "prior" to both


def test_vaegan_loss_is_the_elbo_plus_its_terms():
    vae = vae_with("image", constant=-0.3)
    objective = VAEGANObjective(vae.discriminator, adversarial_weight=1.5, feature_weight=0.0)
    pyro.set_rng_seed(3)
    loss = objective.differentiable_loss(vae.model, vae.guide, X)
    pyro.set_rng_seed(3)
    elbo_loss = Trace_ELBO().differentiable_loss(vae.model, vae.guide, X)
    assert torch.allclose(loss, elbo_loss + 1.5 * 2 * 6 * F.softplus(torch.tensor(0.3)),
                          atol=1e-4)
    assert objective.last["feature_matching"] >= 0
    d_loss, stats = objective.discriminator_loss(vae.model, vae.guide, X)
    assert torch.allclose(d_loss, 6 * (F.softplus(torch.tensor(0.3)) +
                                       2 * F.softplus(torch.tensor(-0.3))), atol=1e-5)
    assert stats["discriminator_accuracy"] == pytest.approx(2 / 3)


def test_the_discriminator_has_its_own_optimizer_and_learns_to_tell_codes_from_the_prior():
    """The VAE's optimizer leaves the discriminator alone and the other way round; a
    discriminator facing codes far from the prior learns to tell them apart."""
    vae = vae_with("latent", guide="delta")
    with torch.no_grad():  # codes near 5 in every dim, far from N(0, I)
        layer = vae.posterior.encoder.output_layer
        layer.weight.zero_()
        layer.bias.fill_(5.0)
    objective = AdversarialAutoencoderObjective(vae.discriminator, discriminator_lr=1e-2)
    trainer = Trainer(vae, EpochBatches(X, 6, "none", seed=0), lr=0.0, loss=objective)
    held = {id(p) for p in vae.discriminator.parameters()}
    assert held and not held & {id(p) for p in trainer.parameters}
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    for _ in range(60):
        trainer.training_step(X)
    after = vae.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and all(k.startswith("discriminator.") for k in moved)  # lr 0 for the VAE
    metrics = trainer.adversary.epoch_metrics()
    assert metrics["discriminator_accuracy"] > 0.8 and "generator_adversarial" in metrics
    assert trainer.adversary.epoch_metrics() == {}


def tiny(objective, discriminator, **model):
    return recipes.apply_overrides(config.Config(), {
        "model.hidden": [16], "model.latent_dim": 4, "model.discriminator": discriminator,
        "model.discriminator_hidden": [8], "train.objective": objective,
        "train.batch_size": 200, "train.epochs": 3,
        **{f"model.{k}": v for k, v in model.items()}})


@pytest.mark.parametrize("objective, discriminator, guide", [
    ("aae", "latent", "delta"), ("vaegan", "image", "diagonal_normal")])
def test_adversarial_resume_is_bit_identical_and_records_both_players(tmp_path, objective,
                                                                      discriminator, guide):
    cfg = tiny(objective, discriminator, guide=guide)
    Run(cfg, prepare_run_folder(tmp_path / "a"), "cpu", quiet=True).fit()
    interrupted = Run(cfg, prepare_run_folder(tmp_path / "b"), "cpu", quiet=True)
    interrupted.fit(epochs=1)
    resumed = Run(load_run(tmp_path / "b", "cpu")[1], tmp_path / "b", "cpu", quiet=True)
    resumed.resume()
    resumed.fit()
    a, b = load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "b")
    assert any(k.startswith("discriminator.") for k in a["model"])
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["adversary"]["optimizer"]["state"]
    ma = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    mb = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    keys = ("train_elbo", "validation_elbo", "discriminator_loss", "discriminator_accuracy",
            "generator_adversarial")
    assert [[r[k] for k in keys] for r in ma] == [[r[k] for k in keys] for r in mb]


@pytest.mark.parametrize("model, train, message", [
    (dict(), dict(objective="aae"), "needs model.discriminator = 'latent'"),
    (dict(discriminator="image"), dict(objective="elbo"), "trained only by an adversarial"),
    (dict(discriminator="image"), dict(objective="aae"), "needs model.discriminator = 'latent'"),
    (dict(discriminator="latent", semi_supervised=True), dict(objective="aae"), "flat, unsup"),
    (dict(discriminator="image", latent_dim=[4, 2]), dict(objective="vaegan"), "flat, unsup"),
    (dict(discriminator="image"), dict(objective="vaegan", discriminator_lr=0.0), "positive"),
])
def test_adversarial_choices_that_cannot_work_are_refused(model, train, message):
    cfg = Config(model=ModelConfig(**model), train=TrainConfig(**train))
    with pytest.raises(ConfigError, match=message):
        cfg.check()


def test_the_report_shows_both_players_and_the_codebook(tmp_path):
    from pyro_vae import cli
    from pyro_vae.report import build_report

    for recipe in ("aae", "vqvae"):
        assert cli.main(["train", recipe, "--epochs", "2", "--quiet", "--device", "cpu",
                         "--set", "eval.k=1", "--out", str(tmp_path / recipe)]) == 0
    assert (tmp_path / "vqvae" / "codebook.png").exists()
    assert cli.main(["sample", str(tmp_path / "vqvae"), "-o", str(tmp_path / "s.png"),
                     "--device", "cpu"]) == 0  # codes drawn from the Transformer prior
    assert (tmp_path / "s.png").stat().st_size > 0
    _, md = build_report([tmp_path / "aae", tmp_path / "vqvae"], tmp_path / "report", k=1)
    text = md.read_text()
    assert "aae: discriminator and generator per epoch" in text
    assert "| codebook | perplexity" in text and "vqvae: codebook usage" in text


def test_a_bound_whose_khat_is_high_on_most_images_is_called_loose():
    from pyro_vae.tables import evaluation_rows

    summary = {"k": 100, "test_log_likelihood": -207.0, "test_log_likelihood_se": 0.9,
               "test_elbo": -217.4, "test_elbo_se": 0.9, "bits_per_dim": 4.67,
               "khat_above_0.7": 1.0, "khat_median": 1.96, "ess_mean": 2.0, "ess_min": 1.0,
               "proposal": "gaussian(0.1) around the point-mass guide"}
    notes = [text for label, text in evaluation_rows(summary) if label == "note"]
    assert notes and notes[0].startswith("a loose lower bound")
    summary["khat_above_0.7"] = 0.2
    assert "note" not in [label for label, _ in evaluation_rows(summary)]
