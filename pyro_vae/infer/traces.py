"""Per-datapoint, per-particle log densities read off Pyro traces.

Nothing here knows what a VAE is. Any model/guide pair works whose per-datapoint sample
sites all lie inside a data plate (``pyro.plate("data", B)`` at any ``dim``, with further
plates inside it if need be; the plate contract of DESIGN.md): the log weight of
particle s for datapoint n is read off Pyro traces as

.. math::

    \\log w_{s,n} = \\log p(x_n, z^{(s)}_n) - \\log q(z^{(s)}_n | x_n),
    \\qquad z^{(s)} \\sim q(\\cdot | x),

with the model replayed on the guide's samples and the particles drawn in one vectorized
outer ``pyro.plate`` (as ``pyro.infer.importance`` does), or, for a model that cannot
broadcast over a leading particle dim, one after the other (``vectorize_particles=False``,
Pyro's name for it in :class:`~pyro.infer.Trace_ELBO`).
"""

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.distributions.util import scale_and_mask
from pyro.poutine.util import site_is_subsample

from ..errors import PyroVAEError
from .chunks import batch_args, batch_size_of, device_of, rows, seeded, to_device

#: Name of the outer plate over particles.
PARTICLE_PLATE = "particles"


class ModelGuideMismatch(PyroVAEError, ValueError):
    """The model and guide do not form a pair that log weights can be computed for."""


class ParticleBroadcastError(ModelGuideMismatch):
    """The model or guide fails inside an outer particle plate although it runs without
    one: it does not broadcast over a leading particle dim (it reshapes or concatenates
    with a fixed number of dims, as Pyro's ``examples/vae/ss_vae_M2.py`` does). Pass
    ``vectorize_particles=False`` to draw the particles one at a time."""


def is_sample(site):
    """True for a real sample site (not a plate's subsample site)."""
    return site["type"] == "sample" and not site_is_subsample(site)


def is_auxiliary(site):
    """True for a guide's auxiliary sample site (``infer={"is_auxiliary": True}``, as
    Pyro's autoguides draw ``z_unconstrained`` before the site ``z`` itself): part of
    q's density, not a latent of the model."""
    return is_sample(site) and bool(site["infer"].get("is_auxiliary"))


def with_kwargs(fn, kwargs):
    """``fn`` with the keyword arguments ``kwargs`` bound (``fn`` itself when there are none).

    The estimators pass ``model_kwargs`` and ``guide_kwargs`` this way: the same values go
    to every chunk of the data (per-datapoint tensors belong in the data, as positional
    arguments, so that they are chunked with it).

    :param callable fn: a Pyro model or guide.
    :param dict kwargs: keyword arguments, or ``None``.
    :returns: a callable taking the positional arguments of ``fn``.
    """
    if not kwargs:
        return fn
    kwargs = dict(kwargs)

    def bound(*args):
        return fn(*args, **kwargs)

    return bound


def plate_nesting(model, guide, x):
    """The deepest plate nesting of any sample site, from one unvectorized trace of
    ``model`` and ``guide`` on the batch ``x`` (gradients off, nothing recorded)."""
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


def prepare_estimate(model, guide, data, batch_size, seed, device, model_kwargs, guide_kwargs):
    """What every chunked estimator does before its chunks: bind the extra keyword
    arguments to model and guide, resolve the device (default: where ``data`` is) and find
    the plate nesting on the first datapoint under ``seed`` (:func:`data_nesting`).

    :returns: ``(model, guide, device, nesting)``.
    :raises: as :func:`data_nesting`.
    """
    model, guide = with_kwargs(model, model_kwargs), with_kwargs(guide, guide_kwargs)
    device = torch.device(device) if device is not None else device_of(data)
    with seeded(seed, device), torch.no_grad():
        nesting = data_nesting(model, guide, data, batch_size, device)
    return model, guide, device, nesting


def data_nesting(model, guide, data, batch_size, device):
    """:func:`plate_nesting` of ``data`` (on ``device``), from its first datapoint: what
    the estimators run before their chunks.

    When the model or guide fails on that one datapoint it is traced again on the first
    chunk (``batch_size`` datapoints, what the estimator would evaluate); an error it
    raises there (a shape check, for instance) is raised with the shape of the whole data
    added, so that "expected x of shape (B, 64), got (100, 8, 8)" also says that the data
    is ``(1797, 8, 8)`` (not the ``(1, 8, 8)`` of one datapoint).

    :param data: a tensor ``(N, *event_shape)`` or a tuple of model arguments.
    :param int batch_size: datapoints per chunk.
    :returns: int, the plate nesting.
    """
    kinds = (ValueError, RuntimeError, TypeError, IndexError)
    try:
        return plate_nesting(model, guide, to_device(rows(data, 0, 1), device))
    except kinds as error:
        if type(error) not in kinds:
            raise
    chunk = to_device(rows(data, 0, int(batch_size)), device)
    try:
        return plate_nesting(model, guide, chunk)
    except kinds as error:
        first, whole = batch_args(chunk)[0], batch_args(data)[0]
        if type(error) not in kinds or first.shape == whole.shape:
            raise
        # after the first line: Pyro appends the trace's shapes to the message
        head, newline, rest = str(error).partition("\n")
        raise type(error)(f"{head} (raised on the first chunk of the data, shape "
                          f"{tuple(first.shape)}; the data has shape {tuple(whole.shape)})"
                          f"{newline}{rest}") from error


def _plates(trace):
    """The names of the plates that enclose any sample site of ``trace``, outermost first."""
    names = []
    for site in trace.nodes.values():
        if is_sample(site):
            for frame in reversed(site["cond_indep_stack"]):
                if frame.name != PARTICLE_PLATE and frame.name not in names:
                    names.append(frame.name)
    return names


def datapoint_sum(log_p, data_dim, nesting):
    """Sum a site's log density to ``(k, B)``: over every dim but the particle dim (the
    leftmost, after padding to ``nesting + 1`` dims) and the data plate's ``data_dim``.

    :param torch.Tensor log_p: batch-shaped, at most ``nesting + 1`` dims.
    :param int data_dim: the data plate's dim (negative, e.g. -1 or -2).
    :param int nesting: the plate nesting (see :func:`plate_nesting`).
    :returns: tensor ``(k, B)`` (``k`` is 1 when ``log_p`` has no particle dim).
    """
    full = nesting + 1
    log_p = log_p.reshape((1,) * (full - log_p.dim()) + tuple(log_p.shape))
    keep = {0, full + data_dim}
    other = [d for d in range(full) if d not in keep]
    if other:
        log_p = log_p.sum(other, keepdim=True)
    return log_p.reshape(log_p.shape[0], log_p.shape[full + data_dim])


def data_plate_dim(trace, which, name, data_plate):
    """The dim of the data plate that encloses site ``name`` of ``trace``.

    :raises ModelGuideMismatch: if the site is not inside a plate named ``data_plate``,
        naming the plates the site is in and the plates found in the trace.
    """
    site = trace.nodes[name]
    frames = [f for f in site["cond_indep_stack"] if f.name == data_plate]
    if not frames:
        inside = [f.name for f in reversed(site["cond_indep_stack"]) if f.name != PARTICLE_PLATE]
        raise ModelGuideMismatch(
            f"{which} site {name!r} is not inside the data plate {data_plate!r} (the "
            f"data_plate argument): it is inside " + (f"plates {inside}" if inside else "no plate")
            + f"; the {which}'s plates are {_plates(trace)}. Per-datapoint weights need every "
            "sample site inside pyro.plate(data_plate, B) (at any dim): move global sites "
            "into it, or pass data_plate= the name of your data plate")
    return frames[0].dim


def per_datapoint(trace, which, data_plate, num_particles, batch_size, nesting, include="all"):
    """Sum the unscaled, masked log densities of ``trace``'s sample sites to ``(k, B)``;
    ``include`` is ``"all"``, ``"latent"``, ``"observed"`` or a set of site names. Zeros if
    no site is included.

    :raises ModelGuideMismatch: for an included site outside the data plate (see
        :func:`data_plate_dim`).
    """
    total = torch.zeros(())
    for name, site in trace.nodes.items():
        if not is_sample(site) or (include == "latent" and site["is_observed"]) or \
                (include == "observed" and not site["is_observed"]) or \
                (isinstance(include, (set, frozenset)) and name not in include):
            continue
        data_dim = data_plate_dim(trace, which, name, data_plate)
        log_p = site["fn"].log_prob(site["value"], *site["args"], **site["kwargs"])
        log_p = scale_and_mask(log_p, 1.0, site["mask"])
        total = total + datapoint_sum(log_p, data_dim, nesting)
    return total.expand(num_particles, batch_size)


def log_weights(model, guide, x, num_particles=1, data_plate="data", max_plate_nesting=None,
                vectorize_particles=True, model_kwargs=None, guide_kwargs=None):
    """Per-particle, per-datapoint log importance weights ``log p(x, z) - log q(z | x)``.

    :param callable model: a Pyro model taking ``x``; every sample site inside
        ``pyro.plate(data_plate, B)`` (at any dim); at least one observed site.
    :param callable guide: a Pyro guide taking ``x`` that samples every latent site of the model.
    :param torch.Tensor x: a batch, shape ``(B, *event_shape)``, or a tuple of model arguments.
    :param int num_particles: k, particles drawn per datapoint.
    :param str data_plate: the name of the data plate.
    :param int max_plate_nesting: the deepest plate nesting of model and guide (found
        from one extra trace when not given).
    :param bool vectorize_particles: draw the k particles in one outer ``pyro.plate``
        (default); ``False`` draws them one at a time, for a model that cannot broadcast
        over a leading particle dim (slower, the same weights in distribution).
    :param dict model_kwargs: keyword arguments passed to the model (as given, every call).
    :param dict guide_kwargs: keyword arguments passed to the guide.
    :returns: tensor of shape ``(k, B)``, in nats. Scales set with ``poutine.scale``
        (e.g. KL annealing) are ignored: these are the weights of the true model.
    :raises ModelGuideMismatch: if a latent site of the model is not sampled by the guide,
        the guide samples a site the model lacks, the model observes nothing, or a site
        lies outside the data plate.
    :raises ParticleBroadcastError: if the model fails inside the particle plate but not
        without it (pass ``vectorize_particles=False``).
    :raises ValueError: if ``num_particles < 1``.
    """
    log_lik, log_prior, log_q = log_weight_parts(
        with_kwargs(model, model_kwargs), with_kwargs(guide, guide_kwargs), x, num_particles,
        data_plate, max_plate_nesting, vectorize_particles)
    return log_lik + log_prior - log_q


def check_densities(guide_trace):
    """Refuse a guide whose latent site is a point mass (``Delta``): its samples have no
    density, so ``log p(x, z) - log q(z|x)`` is not an importance weight and the average
    would not bound log p(x). Evaluate such a guide through a proposal with a density
    (e.g. a Gaussian around the point). A Delta site ``z`` drawn as the transform of an
    auxiliary site ``z_unconstrained`` passes (Pyro's
    :class:`~pyro.infer.autoguide.AutoNormal`): its ``log_density`` is the Jacobian. So
    does a point mass on a discrete variable (a distribution with ``on_discrete_code =
    True``, e.g. :class:`~pyro_vae.vq.QuantizedCode`): it has probability 1 at its point, so
    its weight ``p(x, z)`` bounds ``p(x) = sum_z p(x, z)`` from below.

    :raises ModelGuideMismatch: naming the site.
    """
    for name, site in guide_trace.nodes.items():
        auxiliary = guide_trace.nodes.get(f"{name}_unconstrained")
        if auxiliary is not None and is_auxiliary(auxiliary):
            continue  # AutoNormal: z is a transform of z_unconstrained, its log_density the
            # Jacobian, so the two sites together have a density
        if is_sample(site) and not site["is_observed"]:
            fn = site["fn"]
            while hasattr(fn, "base_dist"):
                fn = fn.base_dist
            if isinstance(fn, dist.Delta) and not getattr(fn, "on_discrete_code", False):
                raise ModelGuideMismatch(
                    f"the guide's site {name!r} is a point mass (Delta): importance weights "
                    "need a proposal with a density. Evaluate a Gaussian around the point "
                    "instead (pyro_vae: vae.proposal(), or "
                    "pyro_vae.distributions.GaussianProposal(guide, scale))")


def pair_traces(model, guide, x):
    """The guide's trace on ``x`` and the model's trace replayed on it, in the current
    context (no particle plate of its own), checked as a pair.

    :returns: ``(model_trace, guide_trace)``.
    :raises ModelGuideMismatch: see :func:`log_weights`.
    """
    guide_trace = poutine.trace(guide).get_trace(*batch_args(x))
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*batch_args(x))
    model_latents = {n for n, s in model_trace.nodes.items()
                     if is_sample(s) and not s["is_observed"]}
    guide_latents = {n for n, s in guide_trace.nodes.items()
                     if is_sample(s) and not s["is_observed"] and not is_auxiliary(s)}
    if not any(is_sample(s) and s["is_observed"] for s in model_trace.nodes.values()):
        raise ModelGuideMismatch("the model has no observed site (pyro.sample(..., obs=x)); "
                                 "there is no likelihood to evaluate")
    if model_latents - guide_latents:
        raise ModelGuideMismatch(f"the guide does not sample the model's latent site(s) "
                                 f"{sorted(model_latents - guide_latents)}")
    if guide_latents - model_latents:
        raise ModelGuideMismatch(f"the guide samples site(s) {sorted(guide_latents - model_latents)} "
                                 "that the model does not have")
    return model_trace, guide_trace


def _runs_unvectorized(model, guide, x):
    """Whether model and guide run on ``x`` without a particle plate."""
    try:
        with torch.no_grad(), poutine.block():
            pair_traces(model, guide, x)
    except Exception:  # noqa: BLE001 - any failure means: not a vectorization problem
        return False
    return True


def particle_traces(model, guide, x, num_particles=1, max_plate_nesting=None):
    """The guide's trace inside an outer ``pyro.plate("particles", k)`` (left of the deepest
    plate) and the model's trace replayed on it.

    :returns: ``(model_trace, guide_trace, nesting)`` where ``nesting`` is the plate nesting
        the particle plate was placed left of.
    :raises ModelGuideMismatch: see :func:`log_weights`.
    :raises ParticleBroadcastError: if model or guide fails inside the particle plate but
        runs without it; the message says to pass ``vectorize_particles=False``.
    :raises ValueError: if ``num_particles < 1``.
    """
    if int(num_particles) < 1:
        raise ValueError(f"num_particles must be at least 1, got {num_particles}")
    nesting = plate_nesting(model, guide, x) if max_plate_nesting is None \
        else int(max_plate_nesting)
    try:
        with pyro.plate(PARTICLE_PLATE, int(num_particles), dim=-(nesting + 1)):
            model_trace, guide_trace = pair_traces(model, guide, x)
    except PyroVAEError:
        raise
    except Exception as error:
        if not _runs_unvectorized(model, guide, x):
            raise
        raise ParticleBroadcastError(
            f"the model or guide fails with the particles in an outer "
            f"pyro.plate({PARTICLE_PLATE!r}, {int(num_particles)}, dim={-(nesting + 1)}) but "
            f"runs without it ({type(error).__name__}: {error}): it does not broadcast over "
            "a leading particle dim (e.g. it reshapes or concatenates with a fixed number of "
            "dims). Pass vectorize_particles=False to draw the particles one at a time") from error
    return model_trace, guide_trace, nesting


def log_weight_parts(model, guide, x, num_particles=1, data_plate="data", max_plate_nesting=None,
                     vectorize_particles=True):
    """The three parts of :func:`log_weights`: ``(log_lik, log_prior, log_q)``, each
    ``(k, B)`` in nats: the model's observed sites (log p(x | z)), the model's latent sites
    (log p(z)) and the guide's sites (log q(z | x)), unscaled. Differentiable (training
    objectives use them). With ``vectorize_particles=False`` the particles are traced
    one at a time, each without a particle plate.

    :raises ModelGuideMismatch, ParticleBroadcastError, ValueError: see :func:`log_weights`.
    """
    k, batch_size = int(num_particles), batch_size_of(x)
    if vectorize_particles:
        model_trace, guide_trace, nesting = particle_traces(model, guide, x, k, max_plate_nesting)
        pairs, size = [(model_trace, guide_trace)], k
    else:
        if k < 1:
            raise ValueError(f"num_particles must be at least 1, got {num_particles}")
        nesting = plate_nesting(model, guide, x) if max_plate_nesting is None \
            else int(max_plate_nesting)
        pairs, size = (pair_traces(model, guide, x) for _ in range(k)), 1
    parts = []
    for model_trace, guide_trace in pairs:
        check_densities(guide_trace)
        args = (data_plate, size, batch_size, nesting)
        parts.append((per_datapoint(model_trace, "model", *args, include="observed"),
                      per_datapoint(model_trace, "model", *args, include="latent"),
                      per_datapoint(guide_trace, "guide", *args, include="all")))
    return tuple(torch.cat(p) if len(p) > 1 else p[0] for p in zip(*parts))


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
