"""What the latents carry: KL per latent dimension and active units.
"""

from dataclasses import dataclass

import pyro
import pyro.poutine as poutine
import torch

from .chunks import batch_args, batch_size_of, check_data, device_of, rows, seeded, to_device
from .traces import PARTICLE_PLATE, factorized_base, is_sample, latent_order, plate_nesting


@dataclass
class LatentReport:
    """KL and activity of each latent dimension, per latent site.

    :ivar dict kl_per_dim: site -> ``(D,)`` mean over datapoints of KL(q(z_d|x) || p(z_d)),
        nats; ``None`` for a site whose guide or prior does not factorize over dims.
    :ivar dict kl: site -> mean over datapoints of KL(q(z|x) || p(z)) for the whole site,
        nats (the sum of ``kl_per_dim`` where that exists).
    :ivar dict activity: site -> ``(D,)`` ``Cov_x(E_q[z_d | x])``.
    :ivar dict active_units: site -> number of dims with activity above ``threshold``.
    :ivar float threshold: 0.01 (Burda et al. 2016, arXiv:1509.00519).
    """

    kl_per_dim: dict
    kl: dict
    activity: dict
    active_units: dict
    threshold: float

    def summary(self):
        """JSON-safe dict."""
        return {
            "active_units": dict(self.active_units),
            "latent_dims": {s: int(a.shape[0]) for s, a in self.activity.items()},
            "kl": dict(self.kl),
            "kl_per_dim": {s: (v.tolist() if v is not None else None)
                           for s, v in self.kl_per_dim.items()},
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


def latent_report(model, guide, data, num_samples=10, batch_size=500, seed=0, device=None,
                  threshold=0.01, data_plate="data"):
    """KL per latent dimension and active units, for every latent site, from traces.

    For each datapoint, ``num_samples`` guide samples give (vectorized, as in
    :func:`log_weights`) the KL of each site: analytic per dimension where
    ``torch.distributions.kl_divergence`` knows the pair (e.g. Normal-Normal) and the
    site's model parents are sampled before it in the guide, else the Monte Carlo average
    of ``log q - log p`` at the joint samples (in a hierarchy with bottom-up inference,
    z1's KL: z2 is drawn after z1 in q). The sites' KLs add up to ``E_q[log q - log p]``
    of all latents, so the ELBO is E_q[log p(x | z)] minus their sum; and ``E_q[z | x]``, from the guide's ``mean``
    (averaged over the samples of the sites above it) or, where the distribution has no
    mean, from the samples. A unit is active when ``Cov_x(E_q[z_d | x]) > threshold``
    (Burda et al. 2016, arXiv:1509.00519).

    :param data: ``(N, *event_shape)``, N >= 2.
    :returns: :class:`LatentReport`.
    :raises ValueError: for empty data or ``num_samples < 1``.
    :raises ModelGuideMismatch: see :func:`log_weights`.
    """
    check_data(data, num_samples, batch_size, 1)
    device = torch.device(device) if device is not None else device_of(data)
    kl_dims, kl_total, means = {}, {}, {}
    m = int(num_samples)
    with seeded(seed, device), torch.no_grad():
        nesting = plate_nesting(model, guide, to_device(rows(data, 0, 1), device))
        for start in range(0, batch_size_of(data), batch_size):
            x = to_device(rows(data, start, start + batch_size), device)
            b = batch_size_of(x)
            with pyro.plate(PARTICLE_PLATE, m, dim=-(nesting + 1)):
                guide_trace = poutine.trace(guide).get_trace(*batch_args(x))
                model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*batch_args(x))
            guide_order = latent_order(guide_trace)
            model_order = latent_order(model_trace)
            for name, site in guide_trace.nodes.items():
                if not is_sample(site) or site["is_observed"] or name not in model_trace.nodes:
                    continue
                q, p, z = site["fn"], model_trace.nodes[name]["fn"], site["value"]
                q_base, p_base = factorized_base(q), factorized_base(p)
                per_dim = None
                if q_base is not None and p_base is not None:
                    per_dim = None
                    if _analytic_kl_valid(name, guide_order, model_order):
                        try:
                            per_dim = torch.distributions.kl_divergence(q_base, p_base)
                        except NotImplementedError:
                            pass
                    if per_dim is None:
                        per_dim = q_base.log_prob(z) - p_base.log_prob(z)
                    per_dim = per_dim.expand(z.shape).reshape(m, b, -1).mean(0)
                    total = per_dim.sum(-1)
                else:
                    total = (q.log_prob(z) - p.log_prob(z)).reshape(m, b).mean(0)
                kl_total.setdefault(name, []).append(total.cpu())
                kl_dims.setdefault(name, []).append(None if per_dim is None else per_dim.cpu())
                try:
                    mean = q.mean.expand(z.shape)
                except NotImplementedError:
                    mean = z
                means.setdefault(name, []).append(mean.reshape(m, b, -1).mean(0).cpu())
    activity, active = {}, {}
    for name, chunks in means.items():
        mu = torch.cat(chunks).double()
        activity[name] = mu.var(0) if mu.shape[0] > 1 else torch.zeros(mu.shape[1])
        active[name] = int((activity[name] > threshold).sum())
    return LatentReport(
        kl_per_dim={s: (torch.cat(v).double().mean(0) if all(c is not None for c in v) else None)
                    for s, v in kl_dims.items()},
        kl={s: float(torch.cat(v).double().mean()) for s, v in kl_total.items()},
        activity=activity, active_units=active, threshold=threshold)
