"""Per-datapoint, per-particle log densities read off Pyro traces.

Nothing here knows what a VAE is. Any model/guide pair works whose per-datapoint sample
sites all lie inside a data plate (``pyro.plate("data", B)``, the plate contract of
DESIGN.md): the log weight of particle s for datapoint n is read off Pyro traces as

.. math::

    \\log w_{s,n} = \\log p(x_n, z^{(s)}_n) - \\log q(z^{(s)}_n | x_n),
    \\qquad z^{(s)} \\sim q(\\cdot | x),

with the model replayed on the guide's samples and the particles drawn in one vectorized
outer ``pyro.plate`` (as ``pyro.infer.importance`` does).
"""

import pyro
import pyro.poutine as poutine
import torch
from pyro.distributions.util import scale_and_mask
from pyro.poutine.util import site_is_subsample

from ..errors import PyroVAEError
from .chunks import batch_args, batch_size_of, rows

#: Name of the outer plate over particles.
PARTICLE_PLATE = "particles"


class ModelGuideMismatch(PyroVAEError, ValueError):
    """The model and guide do not form a pair that log weights can be computed for."""


def is_sample(site):
    """True for a real sample site (not a plate's subsample site)."""
    return site["type"] == "sample" and not site_is_subsample(site)


def plate_nesting(model, guide, x):
    """The deepest plate nesting of any sample site, from one unvectorized trace."""
    with torch.no_grad(), poutine.block():
        guide_trace = poutine.trace(guide).get_trace(*batch_args(x))
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*batch_args(x))
    nesting = 0
    for trace in (guide_trace, model_trace):
        for site in trace.nodes.values():
            if is_sample(site):
                dims = [f.dim for f in site["cond_indep_stack"] if f.vectorized and f.dim is not None]
                if dims:
                    nesting = max(nesting, -min(dims))
    return nesting


def per_datapoint(trace, which, data_plate, num_particles, batch_size, nesting, include="all"):
    """Sum the unscaled, masked log densities of ``trace``'s sample sites to ``(k, B)``;
    ``include`` is ``"all"``, ``"latent"``, ``"observed"`` or a set of site names. Zeros if
    no site is included."""
    total = torch.zeros(())
    for name, site in trace.nodes.items():
        if not is_sample(site) or (include == "latent" and site["is_observed"]) or \
                (include == "observed" and not site["is_observed"]) or \
                (isinstance(include, (set, frozenset)) and name not in include):
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
        total = total + log_p
    return total.expand(num_particles, batch_size)


def log_weights(model, guide, x, num_particles=1, data_plate="data", max_plate_nesting=None):
    """Per-particle, per-datapoint log importance weights ``log p(x, z) - log q(z | x)``.

    :param callable model: a Pyro model taking ``x``; every sample site inside
        ``pyro.plate(data_plate, B)``; at least one observed site.
    :param callable guide: a Pyro guide taking ``x`` that samples every latent site of the model.
    :param torch.Tensor x: a batch, shape ``(B, *event_shape)``.
    :param int num_particles: k, particles drawn per datapoint (vectorized).
    :param str data_plate: the name of the data plate.
    :param int max_plate_nesting: the deepest plate nesting of model and guide (found
        from one extra trace when not given).
    :returns: tensor of shape ``(k, B)``, in nats. Scales set with ``poutine.scale``
        (e.g. KL annealing) are ignored: these are the weights of the true model.
    :raises ModelGuideMismatch: if a latent site of the model is not sampled by the guide,
        the guide samples a site the model lacks, the model observes nothing, or a site
        lies outside the data plate.
    :raises ValueError: if ``num_particles < 1``.
    """
    log_lik, log_prior, log_q = log_weight_parts(model, guide, x, num_particles, data_plate,
                                                 max_plate_nesting)
    return log_lik + log_prior - log_q


def particle_traces(model, guide, x, num_particles=1, max_plate_nesting=None):
    """The guide's trace inside an outer ``pyro.plate("particles", k)`` (left of the deepest
    plate) and the model's trace replayed on it.

    :returns: ``(model_trace, guide_trace, nesting)`` where ``nesting`` is the plate nesting
        the particle plate was placed left of.
    :raises ModelGuideMismatch: see :func:`log_weights`.
    :raises ValueError: if ``num_particles < 1``.
    """
    if int(num_particles) < 1:
        raise ValueError(f"num_particles must be at least 1, got {num_particles}")
    nesting = plate_nesting(model, guide, rows(x, 0, 1)) if max_plate_nesting is None \
        else int(max_plate_nesting)
    with pyro.plate(PARTICLE_PLATE, int(num_particles), dim=-(nesting + 1)):
        guide_trace = poutine.trace(guide).get_trace(*batch_args(x))
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*batch_args(x))
    model_latents = {n for n, s in model_trace.nodes.items()
                     if is_sample(s) and not s["is_observed"]}
    guide_latents = {n for n, s in guide_trace.nodes.items()
                     if is_sample(s) and not s["is_observed"]}
    if not any(is_sample(s) and s["is_observed"] for s in model_trace.nodes.values()):
        raise ModelGuideMismatch("the model has no observed site (pyro.sample(..., obs=x)); "
                                 "there is no likelihood to evaluate")
    if model_latents - guide_latents:
        raise ModelGuideMismatch(f"the guide does not sample the model's latent site(s) "
                                 f"{sorted(model_latents - guide_latents)}")
    if guide_latents - model_latents:
        raise ModelGuideMismatch(f"the guide samples site(s) {sorted(guide_latents - model_latents)} "
                                 "that the model does not have")
    return model_trace, guide_trace, nesting


def log_weight_parts(model, guide, x, num_particles=1, data_plate="data", max_plate_nesting=None):
    """The three parts of :func:`log_weights`: ``(log_lik, log_prior, log_q)``, each
    ``(k, B)`` in nats: the model's observed sites (log p(x | z)), the model's latent sites
    (log p(z)) and the guide's sites (log q(z | x)), unscaled. Differentiable (training
    objectives use them).

    :raises ModelGuideMismatch, ValueError: see :func:`log_weights`.
    """
    k, batch_size = int(num_particles), batch_size_of(x)
    model_trace, guide_trace, nesting = particle_traces(model, guide, x, k, max_plate_nesting)
    args = (data_plate, k, batch_size, nesting)
    return (per_datapoint(model_trace, "model", *args, include="observed"),
            per_datapoint(model_trace, "model", *args, include="latent"),
            per_datapoint(guide_trace, "guide", *args, include="all"))


def factorized_base(fn):
    """The univariate base distribution of ``Independent(base, 1)``, else ``None``."""
    if isinstance(fn, torch.distributions.Independent) and fn.reinterpreted_batch_ndims == 1:
        base = fn.base_dist
        if base.event_shape == ():
            return base
    return None


def latent_order(trace):
    """The names of a trace's latent (sampled, not observed) sites, in the order drawn."""
    return [name for name, site in trace.nodes.items()
            if is_sample(site) and not site["is_observed"]]
