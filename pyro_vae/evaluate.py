"""Evaluation that is generic over Pyro: per-datapoint log weights from traces.

Nothing here knows what a VAE is. Any model/guide pair works whose per-datapoint sample
sites all lie inside ``pyro.plate("data", B, dim=-1)`` (the plate contract of
DESIGN.md): the log weight of particle s for datapoint n is read off Pyro traces as

.. math::

    \\log w_{s,n} = \\log p(x_n, z^{(s)}_n) - \\log q(z^{(s)}_n | x_n),
    \\qquad z^{(s)} \\sim q(\\cdot | x),

with the model replayed on the guide's samples and the particles drawn in one vectorized
outer ``pyro.plate`` (as ``pyro.infer.importance`` does). The ELBO of a datapoint is the
mean of its log weights (Kingma & Welling 2013, arXiv:1312.6114); the importance-weighted
bound is ``logsumexp_s log w_s - log k`` (Burda et al. 2016, arXiv:1509.00519).
"""

from contextlib import contextmanager

import pyro
import pyro.poutine as poutine
import torch
from pyro.distributions.util import scale_and_mask
from pyro.poutine.util import site_is_subsample

from .errors import PyroVAEError

#: Name of the outer plate over particles.
PARTICLE_PLATE = "particles"


class ModelGuideMismatch(PyroVAEError, ValueError):
    """The model and guide do not form a pair that log weights can be computed for."""


def _is_sample(site):
    """True for a real sample site (not a plate's subsample site)."""
    return site["type"] == "sample" and not site_is_subsample(site)


def _max_plate_nesting(model, guide, x):
    """The deepest plate nesting of any sample site, from one unvectorized trace."""
    with torch.no_grad(), poutine.block():
        guide_trace = poutine.trace(guide).get_trace(x)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x)
    nesting = 0
    for trace in (guide_trace, model_trace):
        for site in trace.nodes.values():
            if _is_sample(site):
                dims = [f.dim for f in site["cond_indep_stack"] if f.vectorized and f.dim is not None]
                if dims:
                    nesting = max(nesting, -min(dims))
    return nesting


def _per_datapoint(trace, which, data_plate, num_particles, batch_size, nesting, observed):
    """Sum the unscaled, masked log densities of ``trace``'s sample sites to ``(k, B)``."""
    total = None
    for name, site in trace.nodes.items():
        if not _is_sample(site) or (site["is_observed"] and not observed):
            continue
        data_frames = [f for f in site["cond_indep_stack"] if f.name == data_plate]
        if not data_frames:
            raise ModelGuideMismatch(
                f"{which} site {name!r} is not inside pyro.plate({data_plate!r}, B, dim=-1); "
                "per-datapoint weights need every sample site in the data plate")
        data_dim = data_frames[0].dim
        log_p = site["fn"].log_prob(site["value"], *site["args"], **site["kwargs"])
        log_p = scale_and_mask(log_p, 1.0, site["mask"])
        # left-pad to the particle dim, then sum every dim but particles and data
        full = nesting + 1
        log_p = log_p.reshape((1,) * (full - log_p.dim()) + tuple(log_p.shape))
        keep = {0, full + data_dim}
        other = [d for d in range(full) if d not in keep]
        if other:
            log_p = log_p.sum(other, keepdim=True)
        log_p = log_p.reshape(log_p.shape[0], log_p.shape[full + data_dim])
        log_p = log_p.expand(num_particles, batch_size)
        total = log_p if total is None else total + log_p
    return total


def log_weights(model, guide, x, num_particles=1, data_plate="data"):
    """Per-particle, per-datapoint log importance weights ``log p(x, z) - log q(z | x)``.

    :param callable model: a Pyro model taking ``x``; every sample site inside
        ``pyro.plate(data_plate, B)``; at least one observed site.
    :param callable guide: a Pyro guide taking ``x`` that samples every latent site of the model.
    :param torch.Tensor x: a batch, shape ``(B, *event_shape)``.
    :param int num_particles: k, particles drawn per datapoint (vectorized).
    :param str data_plate: the name of the data plate.
    :returns: tensor of shape ``(k, B)``, in nats. Scales set with ``poutine.scale``
        (e.g. KL annealing) are ignored: these are the weights of the true model.
    :raises ModelGuideMismatch: if a latent site of the model is not sampled by the guide,
        the guide samples a site the model lacks, the model observes nothing, or a site
        lies outside the data plate.
    :raises ValueError: if ``num_particles < 1``.
    """
    if int(num_particles) < 1:
        raise ValueError(f"num_particles must be at least 1, got {num_particles}")
    k, batch_size = int(num_particles), x.shape[0]
    nesting = _max_plate_nesting(model, guide, x[:1])
    with pyro.plate(PARTICLE_PLATE, k, dim=-(nesting + 1)):
        guide_trace = poutine.trace(guide).get_trace(x)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x)
    model_latents = {n for n, s in model_trace.nodes.items()
                     if _is_sample(s) and not s["is_observed"]}
    guide_latents = {n for n, s in guide_trace.nodes.items()
                     if _is_sample(s) and not s["is_observed"]}
    if not any(_is_sample(s) and s["is_observed"] for s in model_trace.nodes.values()):
        raise ModelGuideMismatch("the model has no observed site (pyro.sample(..., obs=x)); "
                                 "there is no likelihood to evaluate")
    if model_latents - guide_latents:
        raise ModelGuideMismatch(f"the guide does not sample the model's latent site(s) "
                                 f"{sorted(model_latents - guide_latents)}")
    if guide_latents - model_latents:
        raise ModelGuideMismatch(f"the guide samples site(s) {sorted(guide_latents - model_latents)} "
                                 "that the model does not have")
    log_p = _per_datapoint(model_trace, "model", data_plate, k, batch_size, nesting, True)
    log_q = _per_datapoint(guide_trace, "guide", data_plate, k, batch_size, nesting, False)
    return log_p - log_q


@contextmanager
def seeded(seed, device=None):
    """Seed torch's RNG for the block and restore the caller's RNG state afterwards.

    :param int seed: the seed.
    :param device: a CUDA device whose RNG is forked too (CPU is always forked).
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def elbo(model, guide, data, batch_size=1000, seed=0, device=None):
    """Single-sample ELBO of every datapoint, in nats.

    :param callable model: a Pyro model (see :func:`log_weights`).
    :param callable guide: its guide.
    :param torch.Tensor data: ``(N, *event_shape)``.
    :param int batch_size: datapoints per chunk.
    :param int seed: seeds the guide's samples; the caller's RNG state is restored after.
    :param device: where chunks are sent (default: where ``data`` is).
    :returns: tensor ``(N,)`` on the CPU.
    :raises ValueError: if ``data`` is empty.
    """
    if data.shape[0] == 0:
        raise ValueError("data is empty: there is nothing to evaluate")
    device = torch.device(device) if device is not None else data.device
    out = []
    with seeded(seed, device), torch.no_grad():
        for start in range(0, data.shape[0], batch_size):
            x = data[start:start + batch_size].to(device)
            out.append(log_weights(model, guide, x, 1)[0].cpu())
    return torch.cat(out)
