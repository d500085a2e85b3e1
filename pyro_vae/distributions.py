"""Lean Gaussian distributions for the training loop's hot path.

Pyro's ``Trace_ELBO`` scores the guide's sample under the guide and under the prior on
every step. For the two Gaussians that do this most, these subclasses of Pyro's
:class:`~pyro.distributions.Normal` give the same values and gradients with fewer tensor
operations (each costs microseconds of dispatch on small batches; DESIGN.md):

- :class:`StandardNormal`: N(0, 1), ``log_prob(z) = -z^2 / 2 - log(2 pi) / 2``.
- :class:`ReparameterizedNormal`: remembers the standard-normal noise ``eps`` of its last
  ``rsample`` and scores that sample as ``-eps^2 / 2 - log(scale) - log(2 pi) / 2``, the
  same function of ``(loc, scale)`` as the generic formula at ``z = loc + scale * eps``
  (its gradient with respect to ``loc`` is 0 and to ``scale`` is ``-1 / scale`` either
  way); any other value is scored by the generic formula.

Sampling is Pyro's/torch's own (the same random draws as :class:`~pyro.distributions.Normal`).
"""

import math

import torch
from torch.distributions.utils import _standard_normal

import pyro.distributions as dist

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def _full(log_prob, value, d):
    """``log_prob`` expanded to the distribution's batch shape if ``value`` lacks some of it."""
    batch = d.batch_shape
    if value.dim() >= len(batch) and value.shape[value.dim() - len(batch):] == batch:
        return log_prob
    return log_prob.expand(torch.broadcast_shapes(value.shape, batch))


class StandardNormal(dist.Normal):
    """The standard normal N(loc=0, scale=1) (construct it with zeros and ones; batch as
    given), scored without the location/scale arithmetic. Shapes as
    :class:`~pyro.distributions.Normal`."""

    def log_prob(self, value):
        """``-value^2 / 2 - log(2 pi) / 2``, shape ``broadcast(value.shape, batch_shape)``."""
        if self._validate_args:
            self._validate_sample(value)
        return _full(-0.5 * value.pow(2) - HALF_LOG_2PI, value, self)


class ReparameterizedNormal(dist.Normal):
    """A Normal that scores its own last reparameterized sample from the noise that made
    it (see the module docstring). Shapes as :class:`~pyro.distributions.Normal`."""

    def rsample(self, sample_shape=torch.Size()):
        """``loc + scale * eps`` with ``eps ~ N(0, 1)``; ``eps`` is kept for :meth:`log_prob`."""
        shape = self._extended_shape(sample_shape)
        eps = _standard_normal(shape, dtype=self.loc.dtype, device=self.loc.device)
        value = self.loc + eps * self.scale
        self._last_sample = (value, eps)
        return value

    def log_prob(self, value):
        """The log density at ``value``; for the last ``rsample``, from its noise."""
        last = getattr(self, "_last_sample", None)
        if last is not None and value is last[0]:
            return -0.5 * last[1].pow(2) - self.scale.log() - HALF_LOG_2PI
        return super().log_prob(value)
