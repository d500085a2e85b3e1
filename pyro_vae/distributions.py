"""Proposals for importance-weighted evaluation of guides without a density.

A point-mass guide :math:`q(z|x) = \\delta(z - f(x))` (:class:`~pyro_vae.point_mass.DeltaGuide`)
trains an amortized MAP autoencoder, but it cannot be the proposal of an importance-weighted
estimate of log p(x): it has no density away from its point. :class:`GaussianProposal`
wraps such a guide into one that has: a Pyro guide whose point-mass latent sites are
Gaussians around the point. Evaluation code asks for it explicitly (e.g.
:meth:`pyro_vae.vae.VAE.proposal`); the guide itself stays a point mass in every mode.
"""

import torch
from pyro.poutine.messenger import Messenger

import pyro.distributions as dist


class _PointMassesToGaussians(Messenger):
    """Replaces the distribution of every latent (not observed) site that is a
    :class:`~pyro.distributions.Delta` by ``Normal(point, scale).to_event(event_dim)``."""

    def __init__(self, scale):
        super().__init__()
        self.scale = scale

    def _pyro_sample(self, msg):
        fn = msg["fn"]
        if msg["is_observed"] or not isinstance(fn, dist.Delta):
            return
        point = fn.v
        msg["fn"] = dist.Normal(point, torch.full_like(point, self.scale)).to_event(fn.event_dim)


class GaussianProposal:
    """A Pyro guide: ``guide`` with each point-mass latent site
    :math:`\\delta(z - f)` replaced by the Gaussian :math:`\\mathcal{N}(z; f, \\sigma^2 I)`.

    Any proposal with a density gives a valid importance-weighted lower bound on log p(x)
    (Burda et al. 2016, Importance Weighted Autoencoders, arXiv:1509.00519) that tightens
    with the number of particles k, so an autoencoder's point-mass guide can be evaluated
    on the same footing as a VAE's guide. The ELBO estimated with this proposal is the
    Gaussian's, a true ELBO. Sites with any other distribution, and observed sites, are
    left as the guide makes them; site names, plates and shapes are the guide's.

    :param guide: a Pyro guide callable (e.g. ``vae.guide`` of a VAE with a
        :class:`~pyro_vae.point_mass.DeltaGuide`); run it in eval mode (``vae.eval()``) so that
        a denoising guide does not corrupt its input.
    :param float scale: :math:`\\sigma`, the standard deviation of the Gaussian, in the
        units of the latent.
    :raises ValueError: if ``scale`` is not positive.

    Example::

        >>> proposal = GaussianProposal(vae.guide, 0.1)  # doctest: +SKIP
        >>> log_likelihood(vae.model, proposal, x, num_particles=1000)  # doctest: +SKIP
    """

    def __init__(self, guide, scale):
        if not float(scale) > 0:
            raise ValueError(f"the proposal's scale must be positive, got {scale}")
        self.guide = guide
        self.scale = float(scale)

    @property
    def description(self):
        """What the estimate used, for reports: ``"gaussian(0.1) around the point-mass guide"``."""
        return f"gaussian({self.scale:g}) around the point-mass guide"

    def __call__(self, *args, **kwargs):
        """Run the guide with its point masses replaced; returns what the guide returns."""
        with _PointMassesToGaussians(self.scale):
            return self.guide(*args, **kwargs)
