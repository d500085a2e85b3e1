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

import hashlib
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, fields

import pyro
import pyro.poutine as poutine
import torch
from pyro.distributions.util import scale_and_mask
from pyro.infer.util import is_validation_enabled
from pyro.poutine.util import site_is_subsample

from .errors import PyroVAEError

#: Name of the outer plate over particles.
PARTICLE_PLATE = "particles"


# Data given to the functions below is one tensor ``(N, *event_shape)``, the model's only
# argument, or a tuple of tensors with the same first dimension N, the model's and the
# guide's arguments: ``(x, y)`` for a model conditioned on y (log p(x | y)).


def batch_args(data):
    """The model's positional arguments for ``data`` (a tensor or a tuple of tensors)."""
    return tuple(data) if isinstance(data, (tuple, list)) else (data,)


def batch_size_of(data):
    """N, the first dimension of ``data``."""
    return batch_args(data)[0].shape[0]


def rows(data, start, stop):
    """Datapoints ``start:stop`` of ``data`` (of every tensor of a tuple)."""
    if isinstance(data, (tuple, list)):
        return tuple(a[start:stop] for a in data)
    return data[start:stop]


def to_device(data, device):
    """``data`` (a tensor or a tuple of tensors) on ``device``."""
    if isinstance(data, (tuple, list)):
        return tuple(a.to(device) for a in data)
    return data.to(device)


def device_of(data):
    """The device of ``data``'s first tensor."""
    return batch_args(data)[0].device


class ModelGuideMismatch(PyroVAEError, ValueError):
    """The model and guide do not form a pair that log weights can be computed for."""


def _is_sample(site):
    """True for a real sample site (not a plate's subsample site)."""
    return site["type"] == "sample" and not site_is_subsample(site)


def _max_plate_nesting(model, guide, x):
    """The deepest plate nesting of any sample site, from one unvectorized trace."""
    with torch.no_grad(), poutine.block():
        guide_trace = poutine.trace(guide).get_trace(*batch_args(x))
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*batch_args(x))
    nesting = 0
    for trace in (guide_trace, model_trace):
        for site in trace.nodes.values():
            if _is_sample(site):
                dims = [f.dim for f in site["cond_indep_stack"] if f.vectorized and f.dim is not None]
                if dims:
                    nesting = max(nesting, -min(dims))
    return nesting


def _per_datapoint(trace, which, data_plate, num_particles, batch_size, nesting, include="all"):
    """Sum the unscaled, masked log densities of ``trace``'s sample sites to ``(k, B)``;
    ``include`` is ``"all"``, ``"latent"``, ``"observed"`` or a set of site names. Zeros if
    no site is included."""
    total = torch.zeros(())
    for name, site in trace.nodes.items():
        if not _is_sample(site) or (include == "latent" and site["is_observed"]) or \
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
    nesting = _max_plate_nesting(model, guide, rows(x, 0, 1)) if max_plate_nesting is None \
        else int(max_plate_nesting)
    with pyro.plate(PARTICLE_PLATE, int(num_particles), dim=-(nesting + 1)):
        guide_trace = poutine.trace(guide).get_trace(*batch_args(x))
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*batch_args(x))
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
    return (_per_datapoint(model_trace, "model", *args, include="observed"),
            _per_datapoint(model_trace, "model", *args, include="latent"),
            _per_datapoint(guide_trace, "guide", *args, include="all"))


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


def map_chunks(compute, data, batch_size, seed=0, device=None, world=None, progress=False,
               desc=None):
    """Apply ``compute`` to the data chunk by chunk, each chunk seeded by its index, and
    concatenate the results in data order.

    With a :class:`~pyro_vae.distributed.World` of several ranks the chunks are dealt
    round-robin and the results gathered on every rank; since a chunk's draws depend only
    on ``(seed, chunk index)``, the result is the same for any number of ranks.

    :param callable compute: ``compute(x)`` for a chunk ``x`` of ``(b, *event_shape)`` on
        ``device``, returning a dict of tensors whose first dimension is ``b``.
    :param torch.Tensor data: ``(N, *event_shape)``.
    :param int batch_size: datapoints per chunk.
    :param int seed: seeds the chunks (see :func:`~pyro_vae.distributed.chunk_seed`); the
        caller's RNG state is restored afterwards.
    :param device: where chunks are sent (default: where ``data`` is).
    :param world: a :class:`~pyro_vae.distributed.World` (default: one process).
    :returns: dict of CPU tensors with first dimension ``N``.
    """
    from tqdm.auto import tqdm

    from .distributed import SINGLE, chunk_seed

    world = SINGLE if world is None else world
    device = torch.device(device) if device is not None else device_of(data)
    starts = list(range(0, batch_size_of(data), int(batch_size)))
    mine = {}
    for index in tqdm(world.shard(len(starts)), disable=not progress or not world.is_main,
                      unit="chunk", desc=desc):
        x = to_device(rows(data, starts[index], starts[index] + batch_size), device)
        with seeded(chunk_seed(seed, index), device), torch.no_grad():
            mine[index] = {key: value.cpu() for key, value in compute(x).items()}
    chunks = {}
    for part in world.all_gather(mine):
        chunks.update(part)
    keys = chunks[0].keys()
    return {key: torch.cat([chunks[i][key] for i in range(len(starts))]) for key in keys}


def elbo(model, guide, data, batch_size=1000, seed=0, device=None, world=None):
    """Single-sample ELBO of every datapoint, in nats.

    :param callable model: a Pyro model (see :func:`log_weights`).
    :param callable guide: its guide.
    :param torch.Tensor data: ``(N, *event_shape)``.
    :param int batch_size: datapoints per chunk.
    :param int seed: seeds the guide's samples, chunk by chunk (:func:`map_chunks`); the
        caller's RNG state is restored after.
    :param device: where chunks are sent (default: where ``data`` is).
    :param world: a :class:`~pyro_vae.distributed.World` to share the work with.
    :returns: tensor ``(N,)`` on the CPU.
    :raises ValueError: if ``data`` is empty.
    """
    if batch_size_of(data) == 0:
        raise ValueError("data is empty: there is nothing to evaluate")
    return map_chunks(lambda x: {"elbo": log_weights(model, guide, x, 1)[0]}, data,
                      batch_size, seed, device, world)["elbo"]


def elbo_terms(model, guide, data, batch_size=1000, seed=0, device=None, data_plate="data",
               world=None):
    """The single-sample ELBO of every datapoint split into its terms, in nats:
    ``reconstruction`` (log p(x | z) of the observed sites) and, per latent site, the
    Monte Carlo KL term ``log q(z_s | .) - log p(z_s | .)`` at the joint sample (right for
    any order of sampling in model and guide; its sum over sites is the ELBO's KL).

    The chunks are seeded by their index (:func:`map_chunks`); ``world`` shares them
    among the ranks of a distributed job.

    :returns: dict of ``(N,)`` CPU tensors: ``"elbo"``, ``"reconstruction"`` and
        ``"kl/<site>"`` for every latent site.
    :raises ValueError: if ``data`` is empty.
    :raises ModelGuideMismatch: see :func:`log_weights`.
    """
    if batch_size_of(data) == 0:
        raise ValueError("data is empty: there is nothing to evaluate")
    device = torch.device(device) if device is not None else device_of(data)
    with seeded(seed, device), torch.no_grad():
        nesting = _max_plate_nesting(model, guide, to_device(rows(data, 0, 1), device))

    def compute(x):
        model_trace, guide_trace, _ = particle_traces(model, guide, x, 1, nesting)
        args = (data_plate, 1, batch_size_of(x), nesting)
        terms = {"reconstruction": _per_datapoint(model_trace, "model", *args,
                                                  include="observed")[0]}
        for name in _latent_order(guide_trace):
            terms[f"kl/{name}"] = (
                _per_datapoint(guide_trace, "guide", *args, include={name}) -
                _per_datapoint(model_trace, "model", *args, include={name}))[0]
        terms["elbo"] = terms["reconstruction"] - sum(
            v for k, v in terms.items() if k.startswith("kl/"))
        return terms

    return map_chunks(compute, data, batch_size, seed, device, world)


# --------------------------------------------------------------------------------------
# Importance-weighted log-likelihood with error bars and diagnostics


def default_ladder(num_particles):
    """``1, 10, 100, ...`` below ``k``, then ``k`` itself."""
    ks, k = [], 1
    while k < num_particles:
        ks.append(k)
        k *= 10
    return ks + [int(num_particles)]


def data_fingerprint(data):
    """A short SHA-256 of the data's bytes, to check that two results share test points."""
    digest = hashlib.sha256()
    for tensor in batch_args(data):
        array = tensor.detach().cpu().contiguous().numpy()
        digest.update(array.tobytes() + str(array.shape).encode())
    return digest.hexdigest()[:16]


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


@dataclass
class LogLikelihoodResult:
    """Per-datapoint importance-weighted estimates of log p(x) and their diagnostics.

    All per-datapoint tensors have shape ``(N,)``, are in nats and live on the CPU.

    :ivar log_likelihood: the IWAE bound with ``k`` particles,
        ``logsumexp_s log w_s - log k`` (Burda et al. 2016, arXiv:1509.00519).
    :ivar elbo: the mean of the ``k`` log weights: the ELBO (the bound at k = 1),
        estimated with ``k`` samples.
    :ivar ess: effective sample size of the normalized weights, ``(sum w)^2 / sum w^2``,
        between 1 and ``k``.
    :ivar khat: Pareto k-hat of the weights (see :func:`pareto_khat`); NaN where not fitted.
    :ivar mc_se: delta-method Monte Carlo standard error of each estimate,
        ``sqrt(1/ess - 1/k)`` nats: how far another set of ``k`` particles could move it.
    :ivar ladder: ``{k': (N,)}`` the bound from the first ``k'`` of the same particles.
    :ivar int num_particles: k.
    :ivar int event_size: scalars per datapoint (for bits/dim).
    :ivar int seed: the seed of the guide's samples.
    :ivar str fingerprint: :func:`data_fingerprint` of the data evaluated.
    :ivar float seconds: wall time of the estimate.
    :ivar bool khat_fitted: whether k-hat was fitted (see :func:`pareto_khat`).
    """

    log_likelihood: torch.Tensor
    elbo: torch.Tensor
    ess: torch.Tensor
    khat: torch.Tensor
    mc_se: torch.Tensor
    ladder: dict
    num_particles: int
    event_size: int
    seed: int
    fingerprint: str
    seconds: float = 0.0
    khat_fitted: bool = True

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
        return _se(self.log_likelihood)

    @property
    def bits_per_dim(self):
        """``-mean / (event_size * ln 2)``: negative log-likelihood in bits per dimension."""
        return -self.mean / (self.event_size * math.log(2))

    @property
    def khat_above_07(self):
        """Fraction of datapoints whose k-hat exceeds 0.7 (estimates not to be trusted);
        ``None`` when k-hat was not fitted (``k`` below :data:`MIN_PARTICLES_KHAT` or
        ``diagnostics=False``). Points with equal weights (NaN k-hat) count as trusted."""
        if not self.khat_fitted:
            return None
        return float((self.khat > 0.7).double().mean())

    def summary(self):
        """A JSON-safe dict of the headline numbers (keys as in ``eval.json``)."""
        finite_khat = self.khat[torch.isfinite(self.khat)]
        return {
            "test_log_likelihood": self.mean,
            "test_log_likelihood_se": self.se,
            "k": self.num_particles,
            "bits_per_dim": self.bits_per_dim,
            "test_elbo": float(self.elbo.mean()),
            "test_elbo_se": _se(self.elbo),
            "khat_above_0.7": self.khat_above_07,
            "khat_median": float(finite_khat.median()) if finite_khat.numel() else None,
            "ess_mean": float(self.ess.mean()),
            "ess_min": float(self.ess.min()),
            "mc_se_mean": float(self.mc_se.mean()),
            "ladder": {str(k): float(v.mean()) for k, v in self.ladder.items()},
            "ladder_se": {str(k): _se(v) for k, v in self.ladder.items()},
            "num_test": self.num_datapoints,
            "seed": self.seed,
            "fingerprint": self.fingerprint,
            "seconds": self.seconds,
        }

    def state_dict(self):
        """Tensors and plain data, for ``torch.save`` / ``torch.load(weights_only=True)``."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["ladder"] = {int(k): v for k, v in self.ladder.items()}
        return d

    @classmethod
    def from_state_dict(cls, d):
        """Inverse of :meth:`state_dict`."""
        return cls(**d)


def _se(values):
    n = values.shape[0]
    return float(values.double().std() / math.sqrt(n)) if n > 1 else 0.0


def _check_data(data, num_particles, batch_size, particle_batch):
    if isinstance(data, (tuple, list)) and data and \
            all(isinstance(a, torch.Tensor) and a.dim() >= 1 for a in data):
        if len({a.shape[0] for a in data}) > 1:
            raise ValueError(f"the tensors of data disagree on N: {[tuple(a.shape) for a in data]}")
        data = data[0]
    if not isinstance(data, torch.Tensor):
        raise ValueError(f"data must be a torch.Tensor of shape (N, *event_shape) (or a tuple "
                         f"(x, y) for a conditional model), got {type(data)}")
    if data.dim() < 1 or data.shape[0] == 0:
        raise ValueError(f"data is empty (shape {tuple(data.shape)}): there is nothing to evaluate")
    if data.is_floating_point() and torch.isnan(data).any():
        raise ValueError(f"data holds {int(torch.isnan(data).sum())} NaN values; clean it first")
    for name, value in (("num_particles", num_particles), ("batch_size", batch_size),
                        ("particle_batch", particle_batch)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be an integer of at least 1, got {value}")


def log_likelihood(model, guide, data, num_particles=1000, batch_size=100, particle_batch=500,
                   seed=0, device=None, ladder=None, diagnostics=True, data_plate="data",
                   progress=False, world=None):
    """Importance-weighted estimate of log p(x) for every datapoint, with error bars.

    For each datapoint, ``k`` particles ``z_s ~ q(z | x)`` give log weights
    ``log w_s = log p(x, z_s) - log q(z_s | x)`` read off Pyro traces (any model/guide
    pair that follows the plate contract, hierarchical or not, hand-written or a
    :class:`~pyro_vae.vae.VAE`), and

    .. math:: \\hat{\\mathcal{L}}_k(x) = \\log \\frac{1}{k} \\sum_{s=1}^{k} w_s \\le \\log p(x),

    the IWAE bound (Burda et al. 2016, arXiv:1509.00519), which rises to log p(x) as k
    grows. Work is vectorized over particles and datapoints, and chunked over both so that
    memory stays bounded (it grows with ``batch_size * particle_batch``).

    :param callable model: a Pyro model taking one batch ``x``.
    :param callable guide: its guide, sampling every latent site of the model.
    :param torch.Tensor data: ``(N, *event_shape)``.
    :param int num_particles: k.
    :param int batch_size: datapoints per chunk.
    :param int particle_batch: particles per chunk.
    :param int seed: seeds the guide's samples, chunk by chunk (:func:`map_chunks`): the
        same arguments give the same numbers, and the caller's RNG state is restored
        afterwards.
    :param device: where chunks are evaluated (default: where ``data`` is); put the model
        there first.
    :param ladder: the k' at which the bound is also reported, from nested subsets of the
        same particles (default :func:`default_ladder`: 1, 10, 100, ..., k).
    :param bool diagnostics: fit Pareto k-hat with arviz (needs k >= 25; ESS is always
        computed).
    :param str data_plate: the name of the data plate.
    :param bool progress: show a tqdm bar over datapoint chunks.
    :param world: a :class:`~pyro_vae.distributed.World`: with several ranks (torchrun)
        each evaluates its share of the chunks and every rank gets the whole result, equal
        to a one-process evaluation with the same seed.
    :returns: :class:`LogLikelihoodResult`.
    :raises ValueError: for data that is empty, not a tensor or holds NaN; k, batch_size or
        particle_batch below 1; a ladder value outside [1, k].
    :raises ModelGuideMismatch: see :func:`log_weights`.
    """
    _check_data(data, num_particles, batch_size, particle_batch)
    k = int(num_particles)
    ladder = default_ladder(k) if ladder is None else sorted({int(v) for v in ladder})
    if ladder and (ladder[0] < 1 or ladder[-1] > k):
        raise ValueError(f"ladder values must lie in [1, {k}], got {ladder}")
    device = torch.device(device) if device is not None else device_of(data)
    start_time = time.perf_counter()
    with seeded(seed, device), torch.no_grad():
        nesting = _max_plate_nesting(model, guide, to_device(rows(data, 0, 1), device))
    if is_validation_enabled():
        # Pyro's checks (data in the likelihood's support, shapes) on every datapoint once,
        # at k = 1: 1/k of the work. The k-particle passes then skip them: there they would
        # check every value k times over.
        map_chunks(lambda x: {"lw": log_weights(model, guide, x, 1, data_plate, nesting)[0]},
                   data, batch_size, seed, device, world)

    def compute(x):
        lw = torch.cat([log_weights(model, guide, x, min(particle_batch, k - s), data_plate,
                                    nesting)
                        for s in range(0, k, particle_batch)]).double()
        lse = torch.logsumexp(lw, 0)
        ess = torch.exp(2 * lse - torch.logsumexp(2 * lw, 0))
        out = {"ll": lse - math.log(k), "elbo": lw.mean(0), "ess": ess,
               "mc_se": torch.sqrt((1 / ess - 1 / k).clamp(min=0)),
               "khat": (pareto_khat(lw) if diagnostics else
                        torch.full((batch_size_of(x),), float("nan"), dtype=torch.float64))}
        for kk in ladder:
            out[f"ladder/{kk}"] = torch.logsumexp(lw[:kk], 0) - math.log(kk)
        return out

    with pyro.validation_enabled(False):
        cat = map_chunks(compute, data, batch_size, seed, device, world, progress,
                         desc=f"log p(x), k={k}")
    return LogLikelihoodResult(
        log_likelihood=cat["ll"], elbo=cat["elbo"], ess=cat["ess"], khat=cat["khat"],
        mc_se=cat["mc_se"], ladder={kk: cat[f"ladder/{kk}"] for kk in ladder},
        num_particles=k, event_size=int(batch_args(data)[0][0].numel()), seed=int(seed),
        fingerprint=data_fingerprint(data), seconds=time.perf_counter() - start_time,
        khat_fitted=bool(diagnostics) and k >= MIN_PARTICLES_KHAT)


# --------------------------------------------------------------------------------------
# Paired comparison


@dataclass
class Comparison:
    """Paired comparison of two models' log-likelihood estimates on the same test points.

    :ivar float difference: mean over datapoints of ``log p_A(x_n) - log p_B(x_n)``, nats.
    :ivar float se: its paired standard error, ``std_n(d_n) / sqrt(N)``, nats.
    :ivar float z: ``difference / se``.
    :ivar str verdict: a plain sentence: which is better, or that the difference is
        within two standard errors.
    """

    name_a: str
    name_b: str
    difference: float
    se: float
    z: float
    verdict: str
    num_datapoints: int

    def summary(self):
        """JSON-safe dict."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def compare(result_a, result_b, name_a="A", name_b="B"):
    """Paired comparison of two :class:`LogLikelihoodResult` on the same test points.

    Pairing removes the spread between datapoints (some images are simply harder) from the
    error of the difference, so the paired standard error is usually far smaller than
    either model's own standard error.

    :returns: :class:`Comparison`. A difference larger than twice its standard error is
        called significant.
    :raises ValueError: if the results were not computed on the same data (their
        fingerprints or sizes differ).
    """
    if result_a.fingerprint != result_b.fingerprint or \
            result_a.num_datapoints != result_b.num_datapoints:
        raise ValueError(f"{name_a} and {name_b} were evaluated on different data "
                         f"(fingerprints {result_a.fingerprint} vs {result_b.fingerprint}, "
                         f"{result_a.num_datapoints} vs {result_b.num_datapoints} points); a paired "
                         "comparison needs the same test points, binarized the same way")
    d = result_a.log_likelihood.double() - result_b.log_likelihood.double()
    diff, se = float(d.mean()), _se(d)
    z = diff / se if se > 0 else (math.inf if diff != 0 else 0.0)
    if abs(z) > 2:
        better, worse = (name_a, name_b) if diff > 0 else (name_b, name_a)
        verdict = (f"{better} has the higher test log-likelihood: by {abs(diff):.3f} +- {se:.3f} "
                   f"nats per datapoint ({abs(z):.1f} paired standard errors) over {worse}")
    else:
        verdict = (f"no significant difference: {diff:+.3f} +- {se:.3f} nats per datapoint is "
                   "within two paired standard errors")
    if result_a.num_particles != result_b.num_particles:
        verdict += (f" (note: k differs, {result_a.num_particles} vs {result_b.num_particles}; "
                    "the bound with fewer particles is looser)")
    return Comparison(name_a, name_b, diff, se, z, verdict, result_a.num_datapoints)


# --------------------------------------------------------------------------------------
# Posterior collapse: KL per latent dimension and active units


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


def _factorized_base(fn):
    """The univariate base distribution of ``Independent(base, 1)``, else ``None``."""
    if isinstance(fn, torch.distributions.Independent) and fn.reinterpreted_batch_ndims == 1:
        base = fn.base_dist
        if base.event_shape == ():
            return base
    return None


def _latent_order(trace):
    return [name for name, site in trace.nodes.items()
            if _is_sample(site) and not site["is_observed"]]


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
    _check_data(data, num_samples, batch_size, 1)
    device = torch.device(device) if device is not None else device_of(data)
    kl_dims, kl_total, means = {}, {}, {}
    m = int(num_samples)
    with seeded(seed, device), torch.no_grad():
        nesting = _max_plate_nesting(model, guide, to_device(rows(data, 0, 1), device))
        for start in range(0, batch_size_of(data), batch_size):
            x = to_device(rows(data, start, start + batch_size), device)
            b = batch_size_of(x)
            with pyro.plate(PARTICLE_PLATE, m, dim=-(nesting + 1)):
                guide_trace = poutine.trace(guide).get_trace(*batch_args(x))
                model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*batch_args(x))
            guide_order = _latent_order(guide_trace)
            model_order = _latent_order(model_trace)
            for name, site in guide_trace.nodes.items():
                if not _is_sample(site) or site["is_observed"] or name not in model_trace.nodes:
                    continue
                q, p, z = site["fn"], model_trace.nodes[name]["fn"], site["value"]
                q_base, p_base = _factorized_base(q), _factorized_base(p)
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
