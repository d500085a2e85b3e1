"""Latent posteriors as ArviZ ``InferenceData`` (netCDF), for other Bayesian tools.

For each datapoint, ``num_particles`` guide draws z_i ~ q(z|x) with log importance weights
log w_i = log p(x, z_i) - log q(z_i|x) (from Pyro traces, as in
:func:`pyro_vae.infer.log_weights`) give:

- group ``guide``: the first ``num_samples`` guide draws, q(z|x) itself;
- group ``posterior``: ``num_samples`` draws resampled with replacement in proportion to
  the weights (sampling importance resampling; Rubin 1987, and Cremer et al. 2017,
  arXiv:1704.02916, for its use with VAEs), which follow p(z|x) more closely than the
  guide, as well as k particles allow: where the weights are degenerate (small ESS, k-hat
  above 0.7) they repeat a few draws;
- group ``estimates``: per datapoint, the importance-weighted log-likelihood bound (nats)
  from the same particles, the ELBO, the effective sample size and Pareto k-hat
  (Vehtari et al. 2015, arXiv:1507.02646; ``arviz.psislw``), and the label when given.

Dims are named ``chain``, ``draw``, ``image`` and ``<site>_dim`` (e.g. ``z_dim``,
``z1_dim``). The draws are independent; they are split into ``num_chains`` chains only so
that ArviZ's convergence diagnostics (which need at least two) run.
"""

import numpy as np
import torch

from .infer import check_data, per_datapoint, pareto_khat, particle_traces, seeded
from .infer import is_sample

#: Value of the ``format`` attribute of exported files.
EXPORT_FORMAT = "pyro_vae.latents"


def latent_draws(model, guide, data, num_samples=100, num_particles=1000, batch_size=50,
                 seed=0, device=None, data_plate="data"):
    """Guide draws, importance-resampled draws and per-datapoint estimates.

    :param data: ``(N, *event_shape)``.
    :param int num_samples: S draws kept per datapoint (S <= num_particles).
    :param int num_particles: k guide draws per datapoint behind the weights.
    :param int batch_size: datapoints per chunk (memory ~ batch_size * num_particles).
    :returns: ``(guide_draws, resampled, estimates)``: two dicts site -> ``(S, N, D)``
        tensors and a dict of ``(N,)`` tensors (``log_likelihood``, ``elbo``, ``ess``,
        ``khat``), on the CPU.
    :raises ValueError: for empty data, S < 1, k < S or latent sites that are not vectors.
    :raises pyro_vae.infer.ModelGuideMismatch: see :func:`pyro_vae.infer.log_weights`.
    """
    check_data(data, num_particles, batch_size, num_particles)
    if not 1 <= int(num_samples) <= int(num_particles):
        raise ValueError(f"num_samples must be in 1..num_particles ({num_particles}), got "
                         f"{num_samples}")
    device = torch.device(device) if device is not None else data.device
    s, k = int(num_samples), int(num_particles)
    guide_draws, resampled, stats = {}, {}, {"log_likelihood": [], "elbo": [], "ess": [],
                                              "khat": []}
    with seeded(seed, device), torch.no_grad():
        for start in range(0, data.shape[0], batch_size):
            x = data[start:start + batch_size].to(device)
            b = x.shape[0]
            model_trace, guide_trace, nesting = particle_traces(model, guide, x, k)
            args = (data_plate, k, b, nesting)
            log_w = per_datapoint(model_trace, "model", *args) - \
                per_datapoint(guide_trace, "guide", *args, include="latent")
            probs = torch.softmax(log_w, dim=0)  # (k, b)
            index = torch.multinomial(probs.T, s, replacement=True).T  # (s, b)
            for name, site in guide_trace.nodes.items():
                if not is_sample(site) or site["is_observed"]:
                    continue
                z = site["value"]
                if z.dim() != 3 or z.shape[:2] != (k, b):
                    raise ValueError(f"latent site {name!r} has values of shape "
                                     f"{tuple(z.shape)}; export needs (particles, B, D)")
                guide_draws.setdefault(name, []).append(z[:s].cpu())
                picked = z.gather(0, index.unsqueeze(-1).expand(s, b, z.shape[-1]))
                resampled.setdefault(name, []).append(picked.cpu())
            w = log_w.double()
            stats["log_likelihood"].append((torch.logsumexp(w, 0) - np.log(k)).cpu())
            stats["elbo"].append(w.mean(0).cpu())
            stats["ess"].append((1.0 / probs.double().pow(2).sum(0)).cpu())
            stats["khat"].append(pareto_khat(w.cpu()))
    join = {name: torch.cat(parts, dim=1) for name, parts in guide_draws.items()}
    join_r = {name: torch.cat(parts, dim=1) for name, parts in resampled.items()}
    return join, join_r, {key: torch.cat(parts) for key, parts in stats.items()}


def to_inference_data(model, guide, data, labels=None, num_samples=100, num_particles=1000,
                      num_chains=2, batch_size=50, seed=0, device=None):
    """An :class:`arviz.InferenceData` of the latents of every datapoint (see the module
    docstring for its groups and dims).

    :param labels: optional ``(N,)`` integer labels, stored in ``estimates``.
    :param int num_chains: the S draws are split into this many chains (S must divide).
    :returns: ``arviz.InferenceData`` with groups ``posterior``, ``guide``, ``estimates``.
    :raises ValueError: as :func:`latent_draws`, or if ``num_chains`` does not divide S.
    """
    import arviz as az
    import xarray as xr

    if int(num_chains) < 1 or int(num_samples) % int(num_chains):
        raise ValueError(f"num_chains ({num_chains}) must divide num_samples ({num_samples})")
    draws, resampled, stats = latent_draws(model, guide, data, num_samples, num_particles,
                                           batch_size, seed, device)
    n, c = data.shape[0], int(num_chains)
    per_chain = int(num_samples) // c
    coords = {"chain": np.arange(c), "draw": np.arange(per_chain), "image": np.arange(n)}

    def dataset(values):
        variables = {}
        for name, z in values.items():
            arr = z.numpy().reshape(c, per_chain, n, z.shape[-1])
            coords[f"{name}_dim"] = np.arange(z.shape[-1])
            variables[name] = (("chain", "draw", "image", f"{name}_dim"), arr)
        return xr.Dataset(variables, coords={k: v for k, v in coords.items()
                                             if k in ("chain", "draw", "image")
                                             or k in {f"{m}_dim" for m in values}})

    est = {key: (("image",), value.numpy()) for key, value in stats.items()}
    if labels is not None:
        est["label"] = (("image",), np.asarray(labels).reshape(-1)[:n])
    estimates = xr.Dataset(est, coords={"image": coords["image"]},
                           attrs={"num_particles": int(num_particles), "seed": int(seed),
                                  "units": "nats", "format": EXPORT_FORMAT})
    return az.InferenceData(posterior=dataset(resampled), guide=dataset(draws),
                            estimates=estimates)
