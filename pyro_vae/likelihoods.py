"""Likelihoods p(x|z): a decoder network plus a distribution family.

A likelihood is a :class:`torch.nn.Module`. Called with ``z`` of shape ``(..., D)`` it
returns a :class:`torch.distributions.Distribution` over ``x`` with batch shape ``(...)``
and event shape ``event_shape`` (the event dims of one datapoint). Each likelihood also
says which data it accepts (``data_kind``, ``check_data``) so that a wrong pairing of
likelihood and data is caught before training, and has ``build(ctx, **options)`` for
recipes (options in ``[model.likelihood_options]``).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import constraints
from torch.distributions.utils import broadcast_all

import pyro.distributions as dist
from pyro.distributions.torch_distribution import TorchDistribution

from .nets import make_decoder, unflatten_event


class Bernoulli(dist.Bernoulli):
    """Pyro's :class:`~pyro.distributions.Bernoulli`, with a leaner ``log_prob``.

    The log density is ``-BCE(logits, x)`` as in torch, but negated in place, which saves
    one tensor of the full (particles x batch x pixels) size: about 10% of the time of an
    importance-weighted evaluation of the baseline network. Values and support checks are
    torch's. Only for distributions parameterized by ``logits``.
    """

    def log_prob(self, value):
        """Log probability in nats, shape ``broadcast(batch_shape, value.shape)``."""
        if self._validate_args:
            self._validate_sample(value)
        logits, value = broadcast_all(self.logits, value)
        return F.binary_cross_entropy_with_logits(logits, value, reduction="none").neg_()


class _DecoderLikelihood(nn.Module):
    """Shared parts: an MLP decoder ``D -> hidden... -> params_per_value * prod(event_shape)``
    and the checks of the data a likelihood accepts.

    Subclasses set :attr:`params_per_value` and implement :meth:`distribution` from the
    decoder's output reshaped to ``(..., *event_shape, params_per_value)`` (or
    ``(..., *event_shape)`` when it is 1).
    """

    params_per_value = 1
    data_kind = "real"

    def __init__(self, event_shape, latent_dim, hidden=(400,), activation="softplus",
                 network="mlp", image_shape=None):
        super().__init__()
        self.event_shape = tuple(event_shape)
        self.latent_dim = int(latent_dim)
        self.decoder = make_decoder(network, self.latent_dim, hidden, self.event_shape,
                                    image_shape, self.params_per_value, activation)

    @classmethod
    def build(cls, ctx):
        """Build from a recipe's context (no options)."""
        return cls(ctx.event_shape, ctx.latent_dim, ctx.hidden, ctx.activation, **ctx.networks)

    def forward(self, z):
        """Return p(x|z) for latents ``z`` of shape ``(..., D)``."""
        out = self.decoder(z)
        if self.params_per_value == 1:
            return self.distribution(unflatten_event(out, self.event_shape))
        out = out.reshape(out.shape[:-1] + self.event_shape + (self.params_per_value,))
        return self.distribution(out)

    def check_data(self, data):
        """Raise :class:`ValueError` (saying what to change) if ``data`` is outside the
        support; the default accepts anything the data loader accepts (values in [0, 1]).

        :param torch.Tensor data: images as the model will see them, ``(N, D)``.
        """


class BernoulliLikelihood(_DecoderLikelihood):
    """Independent Bernoulli pixels :math:`p(x|z) = \\prod_i \\mathrm{Bern}(x_i; \\sigma(f(z))_i)`.

    For binary (e.g. binarized) images; log-likelihoods are in nats. The decoder is an MLP
    ``D -> hidden... -> prod(event_shape)`` that outputs logits (Kingma & Welling 2013,
    arXiv:1312.6114).

    :param tuple event_shape: shape of one datapoint, e.g. ``(784,)``.
    :param int latent_dim: D.
    :param hidden: hidden layer sizes of the decoder.
    :param str activation: activation between hidden layers.

    Shapes: ``z`` ``(..., D)`` -> distribution with batch ``(...)``, event ``event_shape``.
    Its ``mean`` is the pixel probabilities, which is what sample figures show.
    """

    #: The data this likelihood accepts: values in {0, 1}.
    data_kind = "binary"

    def distribution(self, logits):
        """Independent Bernoulli pixels with the decoder's logits."""
        return Bernoulli(logits=logits).to_event(len(self.event_shape))

    def check_data(self, data):
        """:raises ValueError: if ``data`` holds values other than 0 and 1."""
        if not bool(((data == 0) | (data == 1)).all()):
            raise ValueError("the Bernoulli likelihood needs binary data (0 or 1); binarize "
                             "the images (data.binarization = 'dynamic') or choose a likelihood "
                             "for grey levels")


class ContinuousBernoulliLikelihood(_DecoderLikelihood):
    """Continuous Bernoulli pixels for grey levels in [0, 1] (Loaiza-Ganem & Cunningham 2019,
    The continuous Bernoulli: fixing a pervasive error in variational autoencoders,
    arXiv:1907.06845): the Bernoulli density on [0, 1] with its normalizing constant, so
    that log-likelihoods are proper densities (nats).

    Shapes: ``z`` ``(..., D)`` -> distribution with batch ``(...)``, event ``event_shape``.
    """

    data_kind = "unit interval"

    def distribution(self, logits):
        """Pyro's ContinuousBernoulli with the decoder's logits."""
        return dist.ContinuousBernoulli(logits=logits).to_event(len(self.event_shape))


class GaussianLikelihood(_DecoderLikelihood):
    """Independent Gaussian pixels :math:`\\mathcal{N}(x; \\mu(z), \\sigma^2)` (Kingma &
    Welling 2013, arXiv:1312.6114), a density on the reals (nats).

    :param scale: ``"learned"`` (one learned standard deviation per pixel, starting at 1)
        or a fixed positive number.
    :raises ValueError: for a non-positive or unknown scale.

    Shapes: as :class:`ContinuousBernoulliLikelihood`.
    """

    def __init__(self, event_shape, latent_dim, hidden=(400,), activation="softplus",
                 scale="learned", **networks):
        super().__init__(event_shape, latent_dim, hidden, activation, **networks)
        if scale == "learned":
            self.log_scale = nn.Parameter(torch.zeros(self.event_shape))
        elif isinstance(scale, (int, float)) and not isinstance(scale, bool) and scale > 0:
            self.register_buffer("log_scale", torch.full(self.event_shape, math.log(scale)))
        else:
            raise ValueError(f"scale must be 'learned' or a positive number, got {scale!r}")

    @classmethod
    def build(cls, ctx, scale="learned"):
        """Build from a recipe; option ``scale`` ("learned" or a number)."""
        return cls(ctx.event_shape, ctx.latent_dim, ctx.hidden, ctx.activation, scale=scale,
                   **ctx.networks)

    def distribution(self, loc):
        """Normal(loc, exp(log_scale)) over one datapoint."""
        return dist.Normal(loc, self.log_scale.exp()).to_event(len(self.event_shape))


class DiscretizedLogisticMixture(TorchDistribution):
    """Per-value mixtures of logistic distributions discretized to ``num_bins`` levels in
    [0, 1] (Salimans et al. 2017, PixelCNN++, arXiv:1701.05517).

    Level ``j`` (value ``j / (num_bins - 1)``) gets the mass of the logistic between the
    midpoints to its neighbours; the first and last levels take the tails. Log-probabilities
    are of discrete values (nats; with 256 levels, bits/dim as in the image-modelling
    literature).

    :param torch.Tensor logits: ``(..., K)`` mixture weights.
    :param torch.Tensor locs: ``(..., K)`` means in data units.
    :param torch.Tensor log_scales: ``(..., K)``.
    :param int num_bins: number of levels (256 for 8-bit images).
    """

    arg_constraints = {"logits": constraints.real, "locs": constraints.real,
                       "log_scales": constraints.real}
    support = constraints.unit_interval

    def __init__(self, logits, locs, log_scales, num_bins=256, validate_args=None):
        self.logits, self.locs = logits, locs
        self.log_scales = log_scales.clamp(min=-7.0)
        self.num_bins = int(num_bins)
        super().__init__(logits.shape[:-1], torch.Size(), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        """The same mixtures broadcast to ``batch_shape``."""
        shape = torch.Size(batch_shape) + self.logits.shape[-1:]
        return DiscretizedLogisticMixture(self.logits.expand(shape), self.locs.expand(shape),
                                          self.log_scales.expand(shape), self.num_bins)

    def _validate_sample(self, value):
        super()._validate_sample(value)
        levels = value * (self.num_bins - 1)
        if ((levels - levels.round()).abs() > 1e-3).any():
            raise ValueError(f"values must lie on the {self.num_bins}-level grid "
                             f"j / {self.num_bins - 1}")

    def log_prob(self, value):
        """Log mass of each value, shape ``broadcast(batch_shape, value.shape)``."""
        if self._validate_args:
            self._validate_sample(value)
        x = value.unsqueeze(-1)
        half = 0.5 / (self.num_bins - 1)
        inv_scale = torch.exp(-self.log_scales)
        upper = inv_scale * (x + half - self.locs)
        lower = inv_scale * (x - half - self.locs)
        cdf_upper, cdf_lower = torch.sigmoid(upper), torch.sigmoid(lower)
        log_cdf_upper = F.logsigmoid(upper)                     # for the first level
        log_one_minus_cdf_lower = -F.softplus(lower)            # for the last level
        mass = (cdf_upper - cdf_lower).clamp(min=1e-12)
        # where the bin's mass underflows, use the density at its centre times its width
        centre = inv_scale * (x - self.locs)
        log_density_mid = centre - self.log_scales - 2 * F.softplus(centre) + \
            math.log(2 * half)
        inner = torch.where(mass > 1e-5, mass.log(), log_density_mid)
        log_mass = torch.where(x < half, log_cdf_upper,
                               torch.where(x > 1 - half, log_one_minus_cdf_lower, inner))
        return torch.logsumexp(log_mass + F.log_softmax(self.logits, -1), dim=-1)

    @property
    def mean(self):
        """Mixture mean of the component means, clamped to [0, 1] (for figures)."""
        return (F.softmax(self.logits, -1) * self.locs.clamp(0, 1)).sum(-1)

    def sample(self, sample_shape=torch.Size()):
        """Pick a component, draw a logistic, round to the nearest level."""
        shape = torch.Size(sample_shape) + self.batch_shape
        with torch.no_grad():
            k = torch.distributions.Categorical(logits=self.logits).sample(sample_shape)
            loc = self.locs.expand(shape + self.logits.shape[-1:]).gather(-1, k[..., None])[..., 0]
            log_scale = self.log_scales.expand(shape + self.logits.shape[-1:]).gather(
                -1, k[..., None])[..., 0]
            u = torch.rand(shape, device=loc.device).clamp(1e-5, 1 - 1e-5)
            x = loc + log_scale.exp() * (u.log() - (-u).log1p())
            return (x.clamp(0, 1) * (self.num_bins - 1)).round() / (self.num_bins - 1)


class DiscretizedLogisticLikelihood(_DecoderLikelihood):
    """Discretized logistic mixture per pixel for grey levels on a grid of ``num_bins``
    values (Salimans et al. 2017, arXiv:1701.05517); for 8-bit images (``num_bins=256``)
    the log-likelihood in bits/dim is the figure the image-modelling literature reports.

    :param int num_mixtures: K, logistic components per pixel.
    :param int num_bins: grey levels of the data (256 for 8-bit images; 17 for the 8x8
        digits).
    """

    data_kind = "discrete grey levels"

    def __init__(self, event_shape, latent_dim, hidden=(400,), activation="softplus",
                 num_mixtures=1, num_bins=256, **networks):
        if int(num_mixtures) < 1 or int(num_bins) < 2:
            raise ValueError(f"num_mixtures must be at least 1 and num_bins at least 2, got "
                             f"{num_mixtures} and {num_bins}")
        self.num_mixtures, self.num_bins = int(num_mixtures), int(num_bins)
        self.params_per_value = 3 * self.num_mixtures
        super().__init__(event_shape, latent_dim, hidden, activation, **networks)

    @classmethod
    def build(cls, ctx, num_mixtures=1, num_bins=256):
        """Build from a recipe; options ``num_mixtures`` and ``num_bins``."""
        return cls(ctx.event_shape, ctx.latent_dim, ctx.hidden, ctx.activation,
                   num_mixtures=num_mixtures, num_bins=num_bins, **ctx.networks)

    def distribution(self, out):
        """The mixture from the decoder's ``(..., *event_shape, 3 K)`` output."""
        logits, locs, log_scales = out.split(self.num_mixtures, dim=-1)
        return DiscretizedLogisticMixture(logits, torch.sigmoid(locs), log_scales,
                                          self.num_bins).to_event(len(self.event_shape))

    def check_data(self, data):
        """:raises ValueError: if the data is not on the ``num_bins``-level grid."""
        levels = data * (self.num_bins - 1)
        if ((levels - levels.round()).abs() > 1e-3).any():
            raise ValueError(f"the discretized logistic likelihood models {self.num_bins} grey "
                             f"levels j/{self.num_bins - 1}, and these data are not on that grid; "
                             "set likelihood_options.num_bins to the data's number of levels "
                             "(256 for 8-bit images, 17 for digits)")
