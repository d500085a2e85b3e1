"""Guides q(z|x): amortized variational posteriors.

A guide is a :class:`torch.nn.Module`. Called with a batch ``x`` of shape
``(B, *event_shape)`` it returns a :class:`torch.distributions.Distribution` with batch
shape ``(B,)`` and event shape ``(latent_dim,)``.
"""

import torch.nn.functional as F
from torch import nn

import pyro.distributions as dist

from .nets import MLP, event_size, flatten_event

#: Smallest standard deviation a Gaussian guide may output, for numerical stability.
MIN_SCALE = 1e-5


class DiagonalNormalGuide(nn.Module):
    """A diagonal Gaussian :math:`q(z|x) = \\mathcal{N}(z; \\mu(x), \\mathrm{diag}\\,\\sigma(x)^2)`.

    The encoder is an MLP ``prod(event_shape) -> hidden... -> 2 D`` whose output is split
    into the mean and a pre-softplus scale (Kingma & Welling 2013, arXiv:1312.6114).

    :param tuple event_shape: shape of one datapoint, e.g. ``(784,)``.
    :param int latent_dim: D.
    :param hidden: hidden layer sizes of the encoder.
    :param str activation: activation between hidden layers (see :data:`pyro_vae.nets.ACTIVATIONS`).

    Shapes: ``x`` ``(B, *event_shape)`` -> distribution with batch ``(B,)``, event ``(D,)``.
    """

    def __init__(self, event_shape, latent_dim, hidden=(400,), activation="softplus"):
        super().__init__()
        self.event_shape = tuple(event_shape)
        self.latent_dim = int(latent_dim)
        self.encoder = MLP(event_size(self.event_shape), hidden, 2 * self.latent_dim, activation)

    def forward(self, x):
        """Return q(z|x) for a batch ``x`` of shape ``(B, *event_shape)``."""
        h = self.encoder(flatten_event(x, self.event_shape))
        loc, raw_scale = h.split(self.latent_dim, dim=-1)
        return dist.Normal(loc, F.softplus(raw_scale) + MIN_SCALE).to_event(1)
