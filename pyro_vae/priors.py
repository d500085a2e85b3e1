"""Priors p(z).

A prior is a :class:`torch.nn.Module`. Called with the batch size ``B`` it returns a
:class:`torch.distributions.Distribution` with batch shape ``(B,)`` and event shape
``(latent_dim,)``. Its tensors live in buffers or parameters, so ``prior.to(device)``
moves it and the distribution it returns is on that device.
"""

import torch
from torch import nn

import pyro.distributions as dist


class StandardNormalPrior(nn.Module):
    """The isotropic standard normal prior :math:`p(z) = \\mathcal{N}(z; 0, I)`.

    As in Kingma & Welling 2013, Auto-Encoding Variational Bayes, arXiv:1312.6114.

    :param int latent_dim: D, the size of the latent.
    :raises ValueError: if ``latent_dim < 1``.

    Example::

        >>> prior = StandardNormalPrior(4)
        >>> p = prior(3)
        >>> p.batch_shape, p.event_shape
        (torch.Size([3]), torch.Size([4]))
    """

    def __init__(self, latent_dim):
        super().__init__()
        if int(latent_dim) < 1:
            raise ValueError(f"latent_dim must be a positive integer, got {latent_dim}")
        self.latent_dim = int(latent_dim)
        self.register_buffer("loc", torch.zeros(self.latent_dim))
        self.register_buffer("scale", torch.ones(self.latent_dim))

    def forward(self, batch_size):
        """Return :math:`\\mathcal{N}(0, I)` with batch shape ``(batch_size,)``, event ``(D,)``."""
        shape = (int(batch_size), self.latent_dim)
        return dist.Normal(self.loc.expand(shape), self.scale.expand(shape)).to_event(1)
