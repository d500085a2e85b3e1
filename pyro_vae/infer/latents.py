"""What the latents carry: KL per latent dimension and active units.
"""

from dataclasses import dataclass, field

import torch

from .chunks import batch_size_of, check_data, device_of, rows, seeded, to_device
from .traces import (data_nesting, data_plate_dim, datapoint_sum, factorized_base, is_sample,
                     latent_order, pair_traces, particle_traces, with_kwargs)

#: A latent dimension is active when ``Cov_x(E_q[z_d | x])`` exceeds this (Burda et al.
#: 2016, arXiv:1509.00519).
ACTIVE_UNIT_THRESHOLD = 0.01


@dataclass
class LatentReport:
    """KL and activity of each latent dimension, per latent site.

    :ivar dict kl_per_dim: site -> ``(D,)`` mean over datapoints of KL(q(z_d|x) || p(z_d)),
        nats; ``None`` for a site whose guide or prior does not factorize over dims.
    :ivar dict kl: site -> mean over datapoints of KL(q(z|x) || p(z)) for the whole site,
        nats (the sum of ``kl_per_dim`` where that exists).
    :ivar dict activity: site -> ``(D,)`` ``Cov_x(E_q[z_d | x])``.
    :ivar dict active_units: site -> number of dims with activity above ``threshold``.
    :ivar float threshold: :data:`ACTIVE_UNIT_THRESHOLD` unless asked otherwise.
    :ivar dict kl_per_dim_reason: site -> why its ``kl_per_dim`` is ``None`` (e.g. "the
        guide's distribution at site 'z' is not factorized over dimensions ..."), for
        those sites only.
    """

    kl_per_dim: dict
    kl: dict
    activity: dict
    active_units: dict
    threshold: float
    kl_per_dim_reason: dict = field(default_factory=dict)

    def summary(self):
        """JSON-safe dict."""
        return {
            "active_units": dict(self.active_units),
            "latent_dims": {s: int(a.shape[0]) for s, a in self.activity.items()},
            "kl": dict(self.kl),
            "kl_per_dim": {s: (v.tolist() if v is not None else None)
                           for s, v in self.kl_per_dim.items()},
            "kl_per_dim_reason": dict(self.kl_per_dim_reason),
        }


def _analytic_kl_valid(name, guide_order, model_order):
    """Whether E_q[log q(z) - log p(z | parents)] at site ``name`` equals the analytic KL
    between the two distributions at the sampled parents: true unless a latent the model
    samples before ``name`` (a possible parent of p) is sampled after it in the guide (then
    it depends on z in q, as z2 on z1 in bottom-up inference, and only the Monte Carlo
    average of the joint samples is right)."""
    earlier_in_model = set(model_order[:model_order.index(name)]) if name in model_order else set()
    later_in_guide = set(guide_order[guide_order.index(name) + 1:])
    return not earlier_in_model & later_in_guide


def _per_datapoint_rows(value, data_dim, nesting, event_dim):
    """``value`` (batch dims, then ``event_dim`` event dims) as ``(k, B, -1)``: particles,
    datapoints, everything else flattened (event dims and any plate inside the data plate)."""
    full = nesting + 1 + event_dim
    value = value.reshape((1,) * (full - value.dim()) + tuple(value.shape))
    value = value.movedim(nesting + 1 + data_dim, 1)
    return value.reshape(value.shape[0], value.shape[1], -1)


def _no_per_dim_reason(name, q, p):
    """Why site ``name`` has no KL per dimension (its guide ``q`` or prior ``p`` is not a
    factorized ``Independent(base, 1)``)."""
    parts = [f"the {who}'s distribution at site {name!r} ({type(d).__name__}) is not "
             f"factorized over dimensions ({what})"
             for who, d, what in (("guide", q, "a flow, a full covariance or a code of one-hot "
                                               "blocks"),
                                  ("model's prior", p, "a mixture, a flow, a full covariance or "
                                                       "a code of one-hot blocks"))
             if factorized_base(d) is None]
    return "; ".join(parts) + "; only the site's total KL is estimated"


def _site_stats(model_trace, guide_trace, data_plate, nesting):
    """Per latent site of one pair of traces (``k`` particles, or 1 without a particle
    plate): ``(kl_per_dim (B, D) or None, kl (B,), mean (B, D), reason)``, each averaged
    over the particles."""
    guide_order, model_order = latent_order(guide_trace), latent_order(model_trace)
    stats = {}
    for name, site in guide_trace.nodes.items():
        if not is_sample(site) or site["is_observed"] or name not in model_trace.nodes:
            continue
        q, p, z = site["fn"], model_trace.nodes[name]["fn"], site["value"]
        data_dim = data_plate_dim(guide_trace, "guide", name, data_plate)
        event_dim = len(q.event_shape)
        q_base, p_base = factorized_base(q), factorized_base(p)
        per_dim, reason = None, None
        if q_base is not None and p_base is not None:
            if _analytic_kl_valid(name, guide_order, model_order):
                try:
                    per_dim = torch.distributions.kl_divergence(q_base, p_base)
                except NotImplementedError:
                    pass
            if per_dim is None:
                per_dim = q_base.log_prob(z) - p_base.log_prob(z)
            per_dim = _per_datapoint_rows(per_dim.expand(z.shape), data_dim, nesting, 1).mean(0)
            total = per_dim.sum(-1)
        else:
            total = datapoint_sum(q.log_prob(z) - p.log_prob(z), data_dim, nesting).mean(0)
            reason = _no_per_dim_reason(name, q, p)
        try:
            mean = q.mean.expand(z.shape)
        except NotImplementedError:
            mean = z
        mean = _per_datapoint_rows(mean, data_dim, nesting, event_dim).mean(0)
        stats[name] = (per_dim, total, mean, reason)
    return stats


def latent_report(model, guide, data, num_samples=10, batch_size=500, seed=0, device=None,
                  threshold=ACTIVE_UNIT_THRESHOLD, data_plate="data", vectorize_particles=True,
                  model_kwargs=None, guide_kwargs=None):
    """KL per latent dimension and active units, for every latent site, from traces.

    For each datapoint, ``num_samples`` guide samples give (vectorized, as in
    :func:`log_weights`, or one at a time with ``vectorize_particles=False``) the KL of
    each site: analytic per dimension where
    ``torch.distributions.kl_divergence`` knows the pair (e.g. Normal-Normal) and the
    site's model parents are sampled before it in the guide, else the Monte Carlo average
    of ``log q - log p`` at the joint samples (in a hierarchy with bottom-up inference,
    z1's KL: z2 is drawn after z1 in q). The sites' KLs add up to ``E_q[log q - log p]``
    of all latents, so the ELBO is E_q[log p(x | z)] minus their sum; and ``E_q[z | x]``, from the guide's ``mean``
    (averaged over the samples of the sites above it) or, where the distribution has no
    mean, from the samples. A unit is active when ``Cov_x(E_q[z_d | x]) > threshold``
    (Burda et al. 2016, arXiv:1509.00519). A site whose guide or prior does not factorize
    over dimensions (a flow guide, a VampPrior) gets its total KL only, and the report
    says why (:attr:`LatentReport.kl_per_dim_reason`).

    :param data: ``(N, *event_shape)``, N >= 2, or a tuple of model arguments.
    :param str data_plate: the name of the data plate (at any dim).
    :param bool vectorize_particles: ``False`` draws the samples one at a time, for a
        model that cannot broadcast over a leading particle dim.
    :param dict model_kwargs: keyword arguments for every call of the model.
    :param dict guide_kwargs: keyword arguments for every call of the guide.
    :returns: :class:`LatentReport`.
    :raises ValueError: for empty data or ``num_samples < 1``.
    :raises ModelGuideMismatch: see :func:`log_weights`.
    """
    check_data(data, num_samples, batch_size, 1)
    model, guide = with_kwargs(model, model_kwargs), with_kwargs(guide, guide_kwargs)
    device = torch.device(device) if device is not None else device_of(data)
    kl_dims, kl_total, means, reasons = {}, {}, {}, {}
    m = int(num_samples)
    with seeded(seed, device), torch.no_grad():
        nesting = data_nesting(model, guide, data, batch_size, device)
        for start in range(0, batch_size_of(data), batch_size):
            x = to_device(rows(data, start, start + batch_size), device)
            if vectorize_particles:
                groups = [particle_traces(model, guide, x, m, nesting)[:2]]
            else:
                groups = (pair_traces(model, guide, x) for _ in range(m))
            chunk = {}
            for model_trace, guide_trace in groups:
                for name, stats in _site_stats(model_trace, guide_trace, data_plate,
                                               nesting).items():
                    chunk.setdefault(name, []).append(stats)
            for name, group_stats in chunk.items():
                per_dims, totals, site_means, why = zip(*group_stats)
                kl_total.setdefault(name, []).append(torch.stack(totals).mean(0).cpu())
                kl_dims.setdefault(name, []).append(
                    None if per_dims[0] is None else torch.stack(per_dims).mean(0).cpu())
                means.setdefault(name, []).append(torch.stack(site_means).mean(0).cpu())
                if why[0] is not None:
                    reasons[name] = why[0]
    activity, active = {}, {}
    for name, chunks in means.items():
        mu = torch.cat(chunks).double()
        activity[name] = mu.var(0) if mu.shape[0] > 1 else torch.zeros(mu.shape[1])
        active[name] = int((activity[name] > threshold).sum())
    return LatentReport(
        kl_per_dim={s: (torch.cat(v).double().mean(0) if all(c is not None for c in v) else None)
                    for s, v in kl_dims.items()},
        kl={s: float(torch.cat(v).double().mean()) for s, v in kl_total.items()},
        activity=activity, active_units=active, threshold=threshold,
        kl_per_dim_reason=reasons)
