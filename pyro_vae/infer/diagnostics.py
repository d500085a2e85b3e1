"""Diagnostics of importance weights: Pareto k-hat and standard errors.
"""

import math

import torch

#: Log weights of a datapoint that all lie within this many nats are "equal" (an exact
#: guide, up to float32 rounding): no tail to fit.
FLAT_WEIGHTS_NATS = 1e-4


#: Fewest particles for which Pareto k-hat is fitted (the tail holds at least 5 weights).
MIN_PARTICLES_KHAT = 25


def pareto_khat(log_w):
    """Pareto-smoothed importance-sampling shape k-hat of each datapoint's weights.

    Computed by :func:`arviz.psislw` (Vehtari et al. 2015/2024, arXiv:1507.02646). Below
    0.5 the importance-sampling estimate is reliable, 0.5-0.7 it is usable, above 0.7 its
    variance may be infinite and it should not be trusted (Yao et al. 2018,
    arXiv:1802.02538). Weights that are all equal (within :data:`FLAT_WEIGHTS_NATS`; an
    exact guide) have no tail to fit:
    their k-hat is reported as NaN, and so is every k-hat when ``k`` is below
    :data:`MIN_PARTICLES_KHAT` (too few weights for the tail fit).

    :param torch.Tensor log_w: ``(k, B)`` log weights.
    :returns: tensor ``(B,)``.
    """
    import warnings

    if log_w.shape[0] < MIN_PARTICLES_KHAT:
        return torch.full((log_w.shape[1],), float("nan"), dtype=torch.float64)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import arviz

        _, khat = arviz.psislw(log_w.T.double().cpu().numpy())
    khat = torch.as_tensor(khat, dtype=torch.float64).reshape(-1)
    flat = (log_w.max(0).values - log_w.min(0).values).cpu() < FLAT_WEIGHTS_NATS
    khat[flat] = float("nan")
    return khat


def standard_error(values):
    """The standard error of the mean of ``values`` ``(N,)``: ``std / sqrt(N)`` (0 for
    ``N = 1``), as a float in the values' units."""
    n = values.shape[0]
    return float(values.double().std() / math.sqrt(n)) if n > 1 else 0.0
