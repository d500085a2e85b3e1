"""The importance-weighted estimate of log p(x) (the IWAE bound) and its result.

For k guide draws per datapoint the bound is ``logsumexp_s log w_s - log k`` (Burda et al.
2016, arXiv:1509.00519), a stochastic lower bound of log p(x) that rises to it as k grows.
:func:`log_likelihood` computes it per datapoint, chunked, seeded, with the bound at a sweep
of smaller k from nested subsets of the same particles, ESS and Pareto k-hat.
"""

import math
import time
from dataclasses import dataclass, fields

import pyro
import torch
from pyro.infer.util import is_validation_enabled

from .chunks import batch_args, batch_size_of, check_data, data_fingerprint, map_chunks
from .diagnostics import (MIN_PARTICLES_KHAT, PerDatapointEstimate, flat_weights, pareto_khat,
                          standard_error)
from .traces import log_weights, prepare_estimate


def default_k_sweep(num_particles):
    """The k' at which :func:`log_likelihood` also reports the bound by default:
    ``1, 10, 100, ...`` below ``k``, then ``k`` itself.

    :param int num_particles: k.
    :returns: list of ints, increasing, ending with ``k``.
    """
    ks, k = [], 1
    while k < num_particles:
        ks.append(k)
        k *= 10
    return ks + [int(num_particles)]


@dataclass
class LogLikelihoodResult(PerDatapointEstimate):
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
    :ivar k_sweep: ``{k': (N,)}`` the bound from the first ``k'`` of the same particles
        (the sweep over k; eval.json's ``k_sweep``, formerly ``ladder``).
    :ivar int num_particles: k.
    :ivar int event_size: scalars per datapoint (for bits/dim).
    :ivar int seed: the seed of the guide's samples.
    :ivar str fingerprint: :func:`data_fingerprint` of the data evaluated.
    :ivar float seconds: wall time of the estimate.
    :ivar bool khat_fitted: whether k-hat was fitted (see :func:`pareto_khat`).
    :ivar khat_unfitted: ``(N,)`` bool: the datapoints whose weights' tail takes too few
        distinct values for the Pareto fit (a discrete guide; their k-hat is NaN), or
        ``None`` (a result saved before this was recorded).
    """

    log_likelihood: torch.Tensor
    elbo: torch.Tensor
    ess: torch.Tensor
    khat: torch.Tensor
    mc_se: torch.Tensor
    k_sweep: dict
    num_particles: int
    event_size: int
    seed: int
    fingerprint: str
    seconds: float = 0.0
    khat_fitted: bool = True
    khat_unfitted: torch.Tensor = None

    @property
    def bits_per_dim(self):
        """``-mean / (event_size * ln 2)``: negative log-likelihood in bits per dimension."""
        return -self.mean / (self.event_size * math.log(2))

    def _unfitted(self):
        """``(N,)`` bool: datapoints whose tail could not be fitted (see :attr:`khat_unfitted`)."""
        if self.khat_unfitted is None:
            return torch.zeros(self.num_datapoints, dtype=torch.bool)
        return self.khat_unfitted.bool()

    @property
    def khat_above_07(self):
        """Fraction of datapoints whose k-hat exceeds 0.7 (estimates not to be trusted),
        among those with a k-hat; ``None`` when there is none: k-hat not fitted (``k``
        below :data:`MIN_PARTICLES_KHAT` or ``diagnostics=False``) or no datapoint's
        weights fit a tail (all take few distinct values, see :attr:`khat_note`). Points
        with equal weights (an exact guide; NaN k-hat) count as trusted; points whose
        tail could not be fitted are left out."""
        if not self.khat_fitted:
            return None
        usable = ~self._unfitted()
        if not usable.any():
            return None
        return float((self.khat[usable] > 0.7).double().mean())

    @property
    def khat_note(self):
        """Why k-hat is missing (NaN) where it is, as a sentence; ``None`` when every
        datapoint has one."""
        n = self.num_datapoints
        if not self.khat_fitted:
            if self.num_particles < MIN_PARTICLES_KHAT:
                return (f"k-hat not fitted: k = {self.num_particles} is below "
                        f"{MIN_PARTICLES_KHAT}, too few weights for the Pareto tail fit")
            return "k-hat not fitted (diagnostics=False)"
        notes = []
        unfitted = int(self._unfitted().sum())
        if unfitted:
            notes.append(
                f"k-hat not fitted for {unfitted} of {n} datapoints: their largest weights "
                "take too few distinct values for a generalized Pareto fit (a discrete "
                "guide?); judge them by ESS; khat_above_0.7 "
                + ("is None" if unfitted == n else f"counts the other {n - unfitted}"))
        flat = int((torch.isnan(self.khat) & ~self._unfitted()).sum())
        if flat:
            notes.append(f"{flat} of {n} datapoints have equal weights (an exact guide): no "
                         "tail to fit, k-hat NaN, counted as trusted")
        return "; ".join(notes) or None

    def summary(self):
        """A JSON-safe dict of the headline numbers (keys as in ``eval.json``)."""
        finite_khat = self.khat[torch.isfinite(self.khat)]
        return {
            "test_log_likelihood": self.mean,
            "test_log_likelihood_se": self.se,
            "k": self.num_particles,
            "bits_per_dim": self.bits_per_dim,
            "test_elbo": float(self.elbo.mean()),
            "test_elbo_se": standard_error(self.elbo),
            "khat_above_0.7": self.khat_above_07,
            "khat_note": self.khat_note,
            "khat_median": float(finite_khat.median()) if finite_khat.numel() else None,
            "ess_mean": float(self.ess.mean()),
            "ess_min": float(self.ess.min()),
            "mc_se_mean": float(self.mc_se.mean()),
            "k_sweep": {str(k): float(v.mean()) for k, v in self.k_sweep.items()},
            "k_sweep_se": {str(k): standard_error(v) for k, v in self.k_sweep.items()},
            "num_test": self.num_datapoints,
            "seed": self.seed,
            "fingerprint": self.fingerprint,
            "seconds": self.seconds,
        }

    def state_dict(self):
        """Tensors and plain data, for ``torch.save`` / ``torch.load(weights_only=True)``."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["k_sweep"] = {int(k): v for k, v in self.k_sweep.items()}
        return d

    @classmethod
    def from_state_dict(cls, d):
        """Inverse of :meth:`state_dict`; also reads a result saved before the k-sweep
        was renamed (its key ``ladder``) or before ``khat_unfitted`` was recorded."""
        d = dict(d)
        if "ladder" in d and "k_sweep" not in d:
            d["k_sweep"] = d.pop("ladder")
        return cls(**d)


def log_likelihood(model, guide, data, num_particles=1000, batch_size=100, particle_batch=500,
                   seed=0, device=None, k_sweep=None, diagnostics=True, data_plate="data",
                   progress=False, world=None, vectorize_particles=True, model_kwargs=None,
                   guide_kwargs=None):
    """Importance-weighted estimate of log p(x) for every datapoint, with error bars.

    For each datapoint, ``k`` particles ``z_s ~ q(z | x)`` give log weights
    ``log w_s = log p(x, z_s) - log q(z_s | x)`` read off Pyro traces (any model/guide
    pair that follows the plate contract, hierarchical or not, hand-written or a
    :class:`~pyro_vae.vae.VAE`), and

    .. math:: \\hat{\\mathcal{L}}_k(x) = \\log \\frac{1}{k} \\sum_{s=1}^{k} w_s \\le \\log p(x),

    the IWAE bound (Burda et al. 2016, arXiv:1509.00519), which rises to log p(x) as k
    grows. Work is vectorized over particles and datapoints, and chunked over both so that
    memory stays bounded (it grows with ``batch_size * particle_batch``).

    :param callable model: a Pyro model taking one batch ``x`` (or the tensors of a tuple
        ``data`` as its positional arguments); every sample site inside
        ``pyro.plate(data_plate, B)``, at any ``dim`` (e.g. ``dim=-2`` with a plate over
        features at ``dim=-1`` inside it).
    :param callable guide: its guide, sampling every latent site of the model.
    :param torch.Tensor data: ``(N, *event_shape)``, or a tuple of such tensors.
    :param int num_particles: k.
    :param int batch_size: datapoints per chunk.
    :param int particle_batch: particles per chunk.
    :param int seed: seeds the guide's samples, chunk by chunk (:func:`map_chunks`): the
        same arguments give the same numbers, and the caller's RNG state is restored
        afterwards.
    :param device: where chunks are evaluated (default: where ``data`` is); put the model
        there first.
    :param k_sweep: the k' at which the bound is also reported, from nested subsets of the
        same particles (default :func:`default_k_sweep`: 1, 10, 100, ..., k).
    :param bool diagnostics: fit Pareto k-hat with arviz (needs k >= 25; ESS is always
        computed).
    :param str data_plate: the name of the data plate.
    :param bool progress: show a tqdm bar over datapoint chunks.
    :param world: a :class:`~pyro_vae.distributed.World`: with several ranks (torchrun)
        each evaluates its share of the chunks and every rank gets the whole result, equal
        to a one-process evaluation with the same seed.
    :param bool vectorize_particles: draw each chunk's particles in one outer
        ``pyro.plate`` (default). ``False`` draws them one at a time, each trace without a
        particle plate, for a model that cannot broadcast over a leading particle dim
        (Pyro's ``examples/vae/ss_vae_M2.py`` with ``config_enum=None``): slower, the same
        estimates in distribution. Pyro's name for the same choice in ``Trace_ELBO``.
    :param dict model_kwargs: keyword arguments for every call of the model, e.g.
        ``{"ys": None}`` (not chunked: per-datapoint tensors belong in ``data``).
    :param dict guide_kwargs: keyword arguments for every call of the guide. The two are
        separate (Pyro's ``Trace_ELBO.loss(model, guide, *args, **kwargs)`` gives both the
        same), so that a name may go to one of them only; pass the same dict to both for
        Pyro's behaviour.
    :returns: :class:`LogLikelihoodResult`.
    :raises ValueError: for data that is empty, not a tensor or holds NaN; k, batch_size or
        particle_batch below 1; a k_sweep value outside [1, k]. An error the model raises
        on the first chunk (a shape check) is raised with the shape of the whole data.
    :raises ModelGuideMismatch: see :func:`log_weights`.
    :raises ParticleBroadcastError: if the model fails inside the particle plate but runs
        without one: pass ``vectorize_particles=False``.
    """
    check_data(data, num_particles, batch_size, particle_batch)
    k = int(num_particles)
    k_sweep = default_k_sweep(k) if k_sweep is None else sorted({int(v) for v in k_sweep})
    if k_sweep and (k_sweep[0] < 1 or k_sweep[-1] > k):
        raise ValueError(f"k_sweep values must lie in [1, {k}], got {k_sweep}")
    start_time = time.perf_counter()
    model, guide, device, nesting = prepare_estimate(model, guide, data, batch_size, seed, device,
                                                     model_kwargs, guide_kwargs)

    def weights(x, n):
        return log_weights(model, guide, x, n, data_plate, nesting, vectorize_particles)

    if is_validation_enabled():
        # Pyro's checks (data in the likelihood's support, shapes) on every datapoint once,
        # at k = 1: 1/k of the work. The k-particle passes then skip them: there they would
        # check every value k times over.
        map_chunks(lambda x: {"lw": weights(x, 1)[0]}, data, batch_size, seed, device, world)

    def compute(x):
        lw = torch.cat([weights(x, min(particle_batch, k - s))
                        for s in range(0, k, particle_batch)]).double()
        lse = torch.logsumexp(lw, 0)
        ess = torch.exp(2 * lse - torch.logsumexp(2 * lw, 0))
        if diagnostics:
            khat = pareto_khat(lw)
            unfitted = torch.isnan(khat) & ~flat_weights(lw) if k >= MIN_PARTICLES_KHAT else \
                torch.zeros(batch_size_of(x), dtype=torch.bool)
        else:
            khat = torch.full((batch_size_of(x),), float("nan"), dtype=torch.float64)
            unfitted = torch.zeros(batch_size_of(x), dtype=torch.bool)
        out = {"ll": lse - math.log(k), "elbo": lw.mean(0), "ess": ess,
               "mc_se": torch.sqrt((1 / ess - 1 / k).clamp(min=0)),
               "khat": khat, "khat_unfitted": unfitted}
        for kk in k_sweep:
            out[f"k_sweep/{kk}"] = torch.logsumexp(lw[:kk], 0) - math.log(kk)
        return out

    with pyro.validation_enabled(False):
        cat = map_chunks(compute, data, batch_size, seed, device, world, progress,
                         desc=f"log p(x), k={k}")
    return LogLikelihoodResult(
        log_likelihood=cat["ll"], elbo=cat["elbo"], ess=cat["ess"], khat=cat["khat"],
        mc_se=cat["mc_se"], k_sweep={kk: cat[f"k_sweep/{kk}"] for kk in k_sweep},
        num_particles=k, event_size=int(batch_args(data)[0][0].numel()), seed=int(seed),
        fingerprint=data_fingerprint(data), seconds=time.perf_counter() - start_time,
        khat_fitted=bool(diagnostics) and k >= MIN_PARTICLES_KHAT,
        khat_unfitted=cat["khat_unfitted"])
