"""Adversarial training objectives: a VAE trained against a discriminator.

Both follow the :class:`~pyro_vae.infer.objectives.Objective` contract for the model and
guide's parameters and add :meth:`AdversarialObjective.discriminator_loss` for the second
player, whose parameters a separate optimizer updates after each step
(:class:`~pyro_vae.adversary.Adversary`). Losses use the non-saturating form of Goodfellow et
al. 2014 (arXiv:1406.2661): the discriminator D outputs a logit, ``softplus(-D)`` is
``-log sigmoid(D)``.

- :class:`AdversarialAutoencoderObjective` (Makhzani et al. 2015, Adversarial Autoencoders,
  arXiv:1511.05644): the reconstruction term ``log p(x | z)``, z from the guide, plus a
  discriminator on the latent that tells the prior's samples from the guide's, which the
  guide learns to fool: the aggregate posterior is matched to the prior, in place of the
  ELBO's KL term.
- :class:`VAEGANObjective` (Larsen et al. 2016, Autoencoding beyond pixels using a learned
  similarity metric, arXiv:1512.09300): the ELBO, plus a discriminator on images that tells
  data from reconstructions and from decoded prior samples, plus feature matching: the
  squared distance between the discriminator's last hidden features of x and of its
  reconstruction.

The KL weight (warm-up, beta) multiplies the AAE's adversarial term (its regularizer) and
the VAE-GAN's latent terms. Work for a model with one latent and one observed site inside
the data plate (our flat VAEs).
"""

import torch
import torch.nn.functional as F
from pyro import poutine

from .chunks import batch_args, batch_size_of
from .objectives import Objective
from .traces import is_sample, latent_order, particle_traces, per_datapoint


class AdversarialObjective(Objective):
    """Shared by the adversarial objectives: the discriminator, the weight of the
    adversarial term and the discriminator's learning rate; :attr:`last` holds the last
    step's statistics of the generator's side (floats).

    :param discriminator: a module mapping ``(B, n)`` inputs to ``(B, 1)`` logits (and, for
        feature matching, with ``forward_with_features``).
    :param float adversarial_weight: lambda >= 0, the weight of the generator's
        adversarial term (nats-equivalent per datapoint).
    :param float discriminator_lr: Adam's learning rate for the discriminator.
    :param int max_plate_nesting: plates nested in the model (1 for our VAEs).
    :raises ValueError: without a discriminator, or for negative weights or rates.
    """

    def __init__(self, discriminator, adversarial_weight=1.0, discriminator_lr=2e-4,
                 max_plate_nesting=1):
        if discriminator is None:
            raise ValueError("an adversarial objective needs the model's discriminator "
                             "(model.discriminator in the recipe)")
        if not (float(adversarial_weight) >= 0 and float(discriminator_lr) > 0):
            raise ValueError(f"adversarial_weight must be >= 0 and discriminator_lr > 0, got "
                             f"{adversarial_weight} and {discriminator_lr}")
        self.discriminator = discriminator
        self.adversarial_weight = float(adversarial_weight)
        self.discriminator_lr = float(discriminator_lr)
        self.max_plate_nesting = max_plate_nesting
        self.last = {}

    @classmethod
    def from_settings(cls, num_particles=1, free_bits=0.0, discriminator=None,
                      adversarial_weight=1.0, discriminator_lr=2e-4, **options):
        """Build from the recipe's adversarial settings and the model's discriminator."""
        return cls(discriminator, adversarial_weight, discriminator_lr)

    def traces(self, model, guide, x):
        """One particle's traces and ``(latent_name, observed_name)``.

        :raises ValueError: unless the guide has one latent site and the model one observed.
        """
        model_trace, guide_trace, nesting = particle_traces(model, guide, x, 1,
                                                            self.max_plate_nesting)
        latents = latent_order(guide_trace)
        observed = [n for n, s in model_trace.nodes.items() if is_sample(s) and s["is_observed"]]
        if len(latents) != 1 or len(observed) != 1:
            raise ValueError(f"the adversarial objectives need one latent and one observed site; "
                             f"the guide has {latents}, the model observes {observed}")
        return model_trace, guide_trace, nesting, latents[0], observed[0]

    def discriminator_loss(self, model, guide, x):
        """The discriminator's loss on the batch (summed, to be minimized by its own
        optimizer) and its statistics ``{"discriminator_loss": per datapoint,
        "discriminator_accuracy": in [0, 1]}``."""
        raise NotImplementedError


def _rows(value, batch):
    return value.reshape(batch, -1)


def _accuracy(real, fakes):
    hits = [(real > 0).float().mean()] + [(f < 0).float().mean() for f in fakes]
    return float(sum(hits) / len(hits))


class AdversarialAutoencoderObjective(AdversarialObjective):
    """The adversarial autoencoder (Makhzani et al. 2015, arXiv:1511.05644): per datapoint,
    ``-log p(x | z) + w lambda softplus(-D(z))`` with z the guide's sample (a point for a
    deterministic encoder), summed over the batch; the discriminator D on the latent learns
    to tell prior samples (label 1) from the guide's (label 0). See the module docstring.
    """

    def differentiable_loss(self, model, guide, x, kl_weight=1.0):
        """The generator's loss summed over the batch."""
        batch = batch_size_of(x)
        model_trace, guide_trace, nesting, name, _ = self.traces(model, guide, x)
        log_lik = per_datapoint(model_trace, "model", "data", 1, batch, nesting,
                                include="observed")
        fooled = F.softplus(-self.discriminator(_rows(guide_trace.nodes[name]["value"], batch)))
        self.last = {"generator_adversarial": float(fooled.mean().detach())}
        return -log_lik.sum() + kl_weight * self.adversarial_weight * fooled.sum()

    def discriminator_loss(self, model, guide, x):
        """Prior samples against the guide's, the latter without gradient to the guide."""
        batch = batch_size_of(x)
        with torch.no_grad():
            model_trace, guide_trace, _, name, _ = self.traces(model, guide, x)
            fake = _rows(guide_trace.nodes[name]["value"], batch)
            real = _rows(model_trace.nodes[name]["fn"].sample(), batch)
        d_real, d_fake = self.discriminator(real), self.discriminator(fake)
        loss = F.softplus(-d_real).sum() + F.softplus(d_fake).sum()
        return loss, {"discriminator_loss": float(loss.detach()) / batch,
                      "discriminator_accuracy": _accuracy(d_real, [d_fake])}


class VAEGANObjective(AdversarialObjective):
    """The VAE-GAN (Larsen et al. 2016, arXiv:1512.09300): per datapoint, the negative ELBO
    plus ``gamma ||f(x) - f(x~)||^2`` (f the discriminator's last hidden features, x~ the
    reconstruction) plus ``lambda (softplus(-D(x~)) + softplus(-D(x_p)))`` (x_p decoded from a
    prior sample), summed over the batch. The images the discriminator sees are the
    likelihood's samples with the gradient of its mean (straight-through; binary like the
    data) for a Bernoulli likelihood, its mean otherwise.

    :param float feature_weight: gamma >= 0.
    (other parameters: :class:`AdversarialObjective`.)
    """

    def __init__(self, discriminator, adversarial_weight=1.0, discriminator_lr=2e-4,
                 feature_weight=1.0, max_plate_nesting=1):
        super().__init__(discriminator, adversarial_weight, discriminator_lr, max_plate_nesting)
        if not float(feature_weight) >= 0:
            raise ValueError(f"feature_weight must be >= 0, got {feature_weight}")
        self.feature_weight = float(feature_weight)

    @classmethod
    def from_settings(cls, num_particles=1, free_bits=0.0, discriminator=None,
                      adversarial_weight=1.0, discriminator_lr=2e-4, feature_weight=1.0,
                      **options):
        """Build from the recipe's adversarial settings and the model's discriminator."""
        return cls(discriminator, adversarial_weight, discriminator_lr, feature_weight)

    @staticmethod
    def image(fn, batch):
        """What the discriminator sees of the likelihood ``fn``: see the class docstring."""
        mean = fn.mean
        if fn.support.is_discrete:
            return _rows(fn.sample() + mean - mean.detach(), batch)
        return _rows(mean, batch)

    def _fakes(self, model, x, model_trace, name, observed, batch):
        reconstruction = self.image(model_trace.nodes[observed]["fn"], batch)
        z_prior = model_trace.nodes[name]["fn"].sample()
        prior_trace = poutine.trace(poutine.condition(model, data={name: z_prior})).get_trace(
            *batch_args(x))
        return reconstruction, self.image(prior_trace.nodes[observed]["fn"], batch)

    def differentiable_loss(self, model, guide, x, kl_weight=1.0):
        """The VAE's loss summed over the batch."""
        batch = batch_size_of(x)
        model_trace, guide_trace, nesting, name, observed = self.traces(model, guide, x)
        args = ("data", 1, batch, nesting)
        elbo = per_datapoint(model_trace, "model", *args, include="observed") + kl_weight * (
            per_datapoint(model_trace, "model", *args, include="latent") -
            per_datapoint(guide_trace, "guide", *args, include="all"))
        reconstruction, sample = self._fakes(model, x, model_trace, name, observed, batch)
        real_features, _ = self.discriminator.forward_with_features(_rows(batch_args(x)[0], batch))
        features, d_reconstruction = self.discriminator.forward_with_features(reconstruction)
        matching = (real_features.detach() - features).pow(2).sum(-1)
        fooled = F.softplus(-d_reconstruction) + F.softplus(-self.discriminator(sample))
        self.last = {"generator_adversarial": float(fooled.mean().detach()),
                     "feature_matching": float(matching.mean().detach())}
        return -elbo.sum() + self.feature_weight * matching.sum() + \
            self.adversarial_weight * fooled.sum()

    def discriminator_loss(self, model, guide, x):
        """Data against reconstructions and decoded prior samples (no gradient to the VAE)."""
        batch = batch_size_of(x)
        with torch.no_grad():
            model_trace, _, _, name, observed = self.traces(model, guide, x)
            reconstruction, sample = self._fakes(model, x, model_trace, name, observed, batch)
        d_real = self.discriminator(_rows(batch_args(x)[0], batch))
        d_fakes = [self.discriminator(reconstruction), self.discriminator(sample)]
        loss = F.softplus(-d_real).sum() + sum(F.softplus(d).sum() for d in d_fakes)
        return loss, {"discriminator_loss": float(loss.detach()) / batch,
                      "discriminator_accuracy": _accuracy(d_real, d_fakes)}
