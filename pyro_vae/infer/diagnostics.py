"""Diagnostics of importance weights: Pareto k-hat and standard errors.
"""

import math

import torch

#: Log weights of a datapoint that all lie within this many nats are "equal" (an exact
#: guide, up to float32 rounding): no tail to fit.
FLAT_WEIGHTS_NATS = 1e-4


#: Fewest particles for which Pareto k-hat is fitted (the tail holds at least 5 weights).
MIN_PARTICLES_KHAT = 25

#: Fewest distinct values, as a fraction of the tail's length, among the largest weights
#: for a Pareto tail fit (fewer: the weights are discrete, e.g. from a discrete guide).
MIN_TAIL_DISTINCT = 0.5


def tail_length(num_particles):
    """How many of the largest weights the Pareto fit uses, ``ceil(min(k/5, 3 sqrt(k)))``
    (PSIS with relative efficiency 1; Vehtari et al. 2024, arXiv:1507.02646)."""
    k = int(num_particles)
    return int(math.ceil(min(k / 5.0, 3 * math.sqrt(k))))


def flat_weights(log_w):
    """Datapoints whose ``k`` log weights all lie within :data:`FLAT_WEIGHTS_NATS` (an exact
    guide): bool tensor ``(B,)`` for log weights ``(k, B)``."""
    return (log_w.max(0).values - log_w.min(0).values).cpu() < FLAT_WEIGHTS_NATS


def tied_tail(log_w):
    """Datapoints whose largest weights take too few distinct values for a Pareto fit.

    Among the :func:`tail_length` + 1 largest log weights (the tail and its cutoff), fewer
    than :data:`MIN_TAIL_DISTINCT` of them distinct: the weights take few values (a
    discrete guide), and arviz then returns an infinite or meaningless k-hat.

    :param torch.Tensor log_w: ``(k, B)`` log weights.
    :returns: bool tensor ``(B,)`` (all False when ``k`` < :data:`MIN_PARTICLES_KHAT`).
    """
    k = log_w.shape[0]
    if k < MIN_PARTICLES_KHAT:
        return torch.zeros(log_w.shape[1], dtype=torch.bool)
    m = min(tail_length(k) + 1, k)
    top = log_w.double().cpu().topk(m, dim=0).values
    distinct = 1 + (top[1:] != top[:-1]).sum(0)
    return distinct < MIN_TAIL_DISTINCT * m


def pareto_khat(log_w):
    """Pareto-smoothed importance-sampling shape k-hat of each datapoint's weights.

    Computed by :func:`arviz.psislw` (Vehtari et al. 2015/2024, arXiv:1507.02646); for the
    same weights it agrees with :func:`pyro.infer.importance.psis_diagnostic`. Below
    0.5 the importance-sampling estimate is reliable, 0.5-0.7 it is usable, above 0.7 its
    variance may be infinite and it should not be trusted (Yao et al. 2018,
    arXiv:1802.02538). It is reported as NaN where no tail can be fitted:

    - weights that are all equal (within :data:`FLAT_WEIGHTS_NATS`; an exact guide, see
      :func:`flat_weights`): no tail, the estimate is exact;
    - weights whose largest values take few distinct values (:func:`tied_tail`; a discrete
      guide), or whose fit fails (arviz's k-hat is infinite): the fit says nothing;
    - every datapoint when ``k`` is below :data:`MIN_PARTICLES_KHAT` (too few weights).

    :param torch.Tensor log_w: ``(k, B)`` log weights.
    :returns: tensor ``(B,)``, float64.
    """
    import warnings

    if log_w.shape[0] < MIN_PARTICLES_KHAT:
        return torch.full((log_w.shape[1],), float("nan"), dtype=torch.float64)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import arviz

        _, khat = arviz.psislw(log_w.T.double().cpu().numpy())
    khat = torch.as_tensor(khat, dtype=torch.float64).reshape(-1)
    khat[flat_weights(log_w) | tied_tail(log_w) | ~torch.isfinite(khat)] = float("nan")
    return khat


def standard_error(values):
    """The standard error of the mean of ``values`` ``(N,)``: ``std / sqrt(N)`` (0 for
    ``N = 1``), as a float in the values' units."""
    n = values.shape[0]
    return float(values.double().std() / math.sqrt(n)) if n > 1 else 0.0


class PerDatapointEstimate:
    """What every result of per-datapoint log-likelihood estimates gives: the number of
    datapoints and the mean with its standard error across them. A mixin of the result
    dataclasses, which hold ``log_likelihood`` ``(N,)`` in nats."""

    @property
    def num_datapoints(self):
        """N."""
        return int(self.log_likelihood.shape[0])

    @property
    def mean(self):
        """Mean estimate of log p(x) over the datapoints, nats."""
        return float(self.log_likelihood.mean())

    @property
    def se(self):
        """Standard error of :attr:`mean` across datapoints, nats."""
        return standard_error(self.log_likelihood)
