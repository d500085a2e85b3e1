"""The inference gap of an amortized guide, split into its approximation and amortization
parts (Cremer et al. 2018, arXiv:1801.03558), for any Pyro model/guide pair.

Per datapoint::

    log p(x) - ELBO(q_amortized) = [log p(x) - ELBO(q*)] + [ELBO(q*) - ELBO(q_amortized)]
                                    approximation gap      amortization gap

where ``q*`` is the best guide of a fixed family for that datapoint alone: here Pyro's
:class:`~pyro.infer.autoguide.AutoNormal` (a diagonal Gaussian per latent site, in each
site's unconstrained space), fitted inside the data plate with Pyro's ``Trace_ELBO``, one
set of local parameters per datapoint, started at the amortized guide's output. log p(x) is
the best estimate available: AIS (:func:`~pyro_vae.infer.ais_log_likelihood`) or, if asked,
the IWAE bound.

The local family is the amortized guide's family when that guide is a diagonal Gaussian
(the usual VAE encoder). For a richer guide (a flow, a structured hierarchy) the local
diagonal Gaussian is a poorer family and the amortization gap can come out negative: the
decomposition then compares families, and says so by its sign.
"""

import time
from dataclasses import dataclass

import pyro
import torch
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide import AutoNormal
from pyro.infer.autoguide.utils import deep_setattr
from pyro.nn import PyroParam
from torch.distributions import biject_to

from .ais import (DEFAULT_NUM_CHAINS, DEFAULT_NUM_LEAPFROG, DEFAULT_NUM_STEPS, AISResult,
                  prepare_annealing, step_size_schedule)
from .annealing import AnnealedChains, log_mean_exp
from .chunks import batch_args, check_data, data_fingerprint, map_chunks
from .diagnostics import standard_error
from .traces import factorized_base, is_sample, log_weights, particle_traces

#: The estimates of log p(x) :func:`inference_gaps` can use.
LOG_LIKELIHOOD_METHODS = ("ais", "iwae")


@dataclass
class GapsResult:
    """Per-datapoint ELBOs, log p(x) and the two parts of the inference gap, each ``(N,)``
    in nats on the CPU.

    :ivar elbo: the amortized guide's ELBO (mean of ``num_particles`` log weights).
    :ivar local_elbo: the ELBO of the locally fitted diagonal Gaussian (the same estimate).
    :ivar log_likelihood: AIS (or IWAE) estimate of log p(x).
    :ivar str method: ``"ais"`` or ``"iwae"``.
    :ivar dict settings: the settings of the estimates and of the local fit.
    :ivar str fingerprint: :func:`~pyro_vae.infer.data_fingerprint` of the data.
    :ivar float seconds: wall time.
    """

    elbo: torch.Tensor
    local_elbo: torch.Tensor
    log_likelihood: torch.Tensor
    method: str
    settings: dict
    fingerprint: str
    seconds: float = 0.0

    @property
    def approximation_gap(self):
        """``(N,)`` log p(x) - local ELBO: what the guide family costs, nats."""
        return self.log_likelihood - self.local_elbo

    @property
    def amortization_gap(self):
        """``(N,)`` local ELBO - amortized ELBO: what sharing one encoder costs, nats."""
        return self.local_elbo - self.elbo

    @property
    def inference_gap(self):
        """``(N,)`` log p(x) - amortized ELBO, the sum of the two gaps, nats."""
        return self.log_likelihood - self.elbo

    def summary(self):
        """A JSON-safe dict: each quantity's mean and standard error across datapoints."""
        out = {}
        for name in ("elbo", "local_elbo", "log_likelihood", "approximation_gap",
                     "amortization_gap", "inference_gap"):
            values = getattr(self, name)
            out[name], out[f"{name}_se"] = float(values.mean()), standard_error(values)
        # a local family that does not contain the guide's (a flow, a structured
        # hierarchical guide) fits worse than the amortized guide: the gaps then compare
        # families, not amortization
        out["local_family_worse"] = out["amortization_gap"] < 0
        return {**out, "method": self.method, "settings": dict(self.settings),
                "num_test": int(self.elbo.shape[0]), "fingerprint": self.fingerprint,
                "seconds": self.seconds}


def local_guide(model, guide, x, nesting, num_draws=100):
    """An :class:`~pyro.infer.autoguide.AutoNormal` of ``model`` on the chunk ``x``, its
    locations and scales set to the amortized guide's: read off the guide's distribution
    where a site is a factorized Normal not depending on other latents, else the mean and
    standard deviation of ``num_draws`` guide draws (in unconstrained space).

    Create and use it under ``pyro.settings.context(module_local_params=True)``, so that
    its parameters stay out of the param store (a model's ``pyro.param`` values are kept).

    :param callable model: the Pyro model (keyword arguments bound).
    :param callable guide: the amortized guide.
    :param x: a chunk ``(B, *event_shape)`` or a tuple of model arguments.
    :param int nesting: the plate nesting of model and guide.
    :param int num_draws: guide draws behind the moments.
    :returns: the AutoNormal, set up on ``x``: per latent site, locations and scales of the
        site's shape (e.g. ``(B, D)``), one diagonal Gaussian per datapoint (Cremer et al.
        2018, arXiv:1801.03558).
    """
    auto = AutoNormal(model)
    with torch.no_grad(), pyro.poutine.block():
        auto(*batch_args(x))
        _, trace, _ = particle_traces(model, guide, x, num_draws, nesting)
    for name, site in trace.nodes.items():
        if not is_sample(site) or site["is_observed"]:
            continue
        base = factorized_base(site["fn"])
        if isinstance(base, torch.distributions.Normal) and \
                _constant_over_draws(base.loc) and _constant_over_draws(base.scale):
            loc, scale = _first_draw(base.loc), _first_draw(base.scale)
        else:
            u = biject_to(site["fn"].support).inv(site["value"])
            loc, scale = u.mean(0), u.std(0).clamp(min=1e-4)
        proto = auto.prototype_trace.nodes[name]
        # the unconstrained event dim, as AutoNormal computes it
        event_dim = proto["fn"].event_dim + biject_to(proto["fn"].support).inv(
            proto["value"]).dim() - proto["value"].dim()
        shape = getattr(auto.locs, name).shape
        deep_setattr(auto.locs, name, PyroParam(loc.detach().expand(shape).clone(),
                                                torch.distributions.constraints.real, event_dim))
        deep_setattr(auto.scales, name, PyroParam(scale.detach().expand(shape).clone(),
                                                  auto.scale_constraint, event_dim))
    return auto


def _constant_over_draws(t):
    """Whether a tensor from a particle-plate trace is the same for every particle."""
    return t.dim() == 0 or t.shape[0] == 1 or bool((t == t[:1]).all())


def _first_draw(t):
    return t[0] if t.dim() > 0 else t


def fit_local(model, auto, x, nesting, steps, lr, num_particles):
    """Fit the AutoNormal ``auto`` to ``model`` on the chunk ``x`` by ``steps`` Adam steps on
    Pyro's ``Trace_ELBO`` (``num_particles`` particles, vectorized), the learning rate
    decaying from ``lr`` to ``lr / 100`` along a cosine. Only ``auto``'s own
    parameters move: gradients are taken with respect to them alone. The datapoints'
    parameters do not interact, so the joint fit is each datapoint's own (Cremer et al.
    2018, arXiv:1801.03558). ``Trace_ELBO`` obeys ``poutine.scale``: a model that scales
    its sites is fitted under those scales.

    :param int steps: Adam steps (0: ``auto`` is left as it is).
    :param float lr: the first learning rate.
    :param int num_particles: particles of each gradient estimate."""
    loss_fn = Trace_ELBO(num_particles=int(num_particles), vectorize_particles=True,
                         max_plate_nesting=nesting).differentiable_loss
    with torch.enable_grad():
        params = [p for p in auto.parameters()]
        optimizer = torch.optim.Adam(params, lr=lr)
        # cosine decay to 1% of lr: the noise of the stochastic gradients dies out at the end
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(int(steps), 1),
                                                              eta_min=lr / 100)
        for _ in range(int(steps)):
            loss = loss_fn(model, auto, *batch_args(x))
            grads = torch.autograd.grad(loss, params)
            for p, g in zip(params, grads):
                p.grad = g
            optimizer.step()
            schedule.step()


def inference_gaps(model, guide, data, log_likelihood="ais", num_particles=100,
                   local_steps=500, local_lr=0.05, local_particles=10,
                   num_chains=DEFAULT_NUM_CHAINS, num_steps=DEFAULT_NUM_STEPS,
                   num_leapfrog=DEFAULT_NUM_LEAPFROG, step_size=None, pilot_chains=4,
                   initial_step_size=0.05, batch_size=100, seed=0, device=None, data_plate="data",
                   schedule_delta=4.0, progress=False, world=None, model_kwargs=None,
                   guide_kwargs=None):
    """Per datapoint: the amortized ELBO, the ELBO of a local diagonal Gaussian fitted to
    that datapoint alone, log p(x), and the approximation and amortization gaps between
    them (Cremer et al. 2018, arXiv:1801.03558; see the module's docstring).

    :param callable model: a Pyro model following the plate contract.
    :param callable guide: its amortized guide.
    :param data: ``(N, *event_shape)``, or a tuple of model arguments.
    :param log_likelihood: ``"ais"`` (:func:`~pyro_vae.infer.ais_log_likelihood` with
        ``num_chains``, ``num_steps``, ``num_leapfrog``, ``step_size``, ``pilot_chains``,
        ``initial_step_size``), ``"iwae"`` (the IWAE bound with ``k = num_chains *
        num_steps`` particles: the same number of model evaluations as AIS, roughly), or an
        :class:`~pyro_vae.infer.AISResult` of the same data, whose estimates are used as
        they are (no chains are run; method and settings are taken from it).
    :param int num_particles: particles of each ELBO estimate.
    :param int local_steps: Adam steps of the local fit.
    :param float local_lr: its first learning rate (cosine decay to 1%). At 0.05 the local
        fits of the 50-epoch Fashion-MNIST recipes converge in 500 steps (to 0.1 nats on 10
        images, against 1000 steps); at 0.01 a local Gaussian started from the moments of an
        IAF guide's draws stayed 3 nats short.
    :param int local_particles: particles of the local fit's ELBO gradient.
    :param int batch_size: datapoints per chunk (each chunk is fitted jointly; the
        datapoints' local parameters do not interact).
    :param int seed: seeds everything, chunk by chunk.
    :param device: where chunks run (default: where ``data`` is).
    :param str data_plate: the name of the data plate.
    :param float schedule_delta: steepness of AIS's sigmoidal schedule.
    :param bool progress: a tqdm bar over chunks.
    :param world: a :class:`~pyro_vae.distributed.World` to share the chunks among ranks.
    :param dict model_kwargs: keyword arguments for every call of the model.
    :param dict guide_kwargs: keyword arguments for every call of the guide.
    :returns: :class:`GapsResult`, every field ``(N,)`` in nats.
    :raises ValueError: for bad data or settings, or an unknown ``log_likelihood``.
    :raises ModelGuideMismatch: see :func:`~pyro_vae.infer.ais_log_likelihood`.
    """
    given = log_likelihood if isinstance(log_likelihood, AISResult) else None
    if given is not None:
        if given.fingerprint != data_fingerprint(data):
            raise ValueError("the AIS result given as log_likelihood is of other data "
                             f"(fingerprint {given.fingerprint}, the data's "
                             f"{data_fingerprint(data)}): pass the AIS result of this data")
        num_chains, num_steps, num_leapfrog = (given.num_chains, given.num_steps,
                                               given.num_leapfrog)
        step_size = None if given.step_size_rule == "pilot" else float(given.step_size[0])
        seed_ais = given.seed
    elif log_likelihood not in LOG_LIKELIHOOD_METHODS:
        raise ValueError(f"log_likelihood must be one of {LOG_LIKELIHOOD_METHODS} or an "
                         f"AISResult, got {log_likelihood!r}")
    check_data(data, num_particles, batch_size, 1)
    for name, value in (("local_steps", local_steps), ("local_particles", local_particles)):
        if int(value) != value or value < 0 or (name == "local_particles" and value < 1):
            raise ValueError(f"{name} must be a non-negative integer (local_particles at "
                             f"least 1), got {value}")
    if not local_lr > 0:
        raise ValueError(f"local_lr must be positive, got {local_lr}")
    start_time = time.perf_counter()
    model, guide, device, nesting, betas = prepare_annealing(
        model, guide, data, num_chains, num_steps, num_leapfrog, step_size, pilot_chains,
        batch_size, seed, device, schedule_delta, model_kwargs, guide_kwargs)
    k = int(num_chains) * int(num_steps)

    def elbo_of(q, x):
        return log_weights(model, q, x, num_particles, data_plate, nesting).double().mean(0)

    def compute(x):
        out = {"elbo": elbo_of(guide, x)}
        # the AutoNormal's parameters live in the module, not in the param store, where
        # the model's own (trained) parameters stay as they are
        with pyro.settings.context(module_local_params=True):
            auto = local_guide(model, guide, x, nesting)
            fit_local(model, auto, x, nesting, local_steps, local_lr, local_particles)
            out["local_elbo"] = elbo_of(auto, x)
        if given is not None:
            pass
        elif log_likelihood == "ais":
            eps = step_size_schedule(model, guide, x, betas, step_size, num_leapfrog,
                                     pilot_chains, initial_step_size, data_plate, nesting)
            chains = AnnealedChains(model, guide, x, num_chains, data_plate, nesting)
            out["ll"] = log_mean_exp(chains.run(betas, eps, num_leapfrog)[0])
        else:
            lw = torch.cat([log_weights(model, guide, x, min(500, k - s), data_plate, nesting)
                            for s in range(0, k, 500)]).double()
            out["ll"] = log_mean_exp(lw)
        return out

    with pyro.validation_enabled(False):
        out = map_chunks(compute, data, batch_size, seed, device, world, progress,
                         desc="inference gaps")
    if given is not None:
        out["ll"], log_likelihood = given.log_likelihood.double(), "ais"
    settings = {"seed": int(seed), "num_particles": int(num_particles),
                "local_steps": int(local_steps),
                "local_lr": float(local_lr), "local_particles": int(local_particles),
                "local_family": "AutoNormal"}
    settings.update({"num_chains": int(num_chains), "num_steps": int(num_steps),
                     "num_leapfrog": int(num_leapfrog),
                     "step_size": "pilot" if step_size is None else float(step_size),
                     "schedule": "sigmoid", "schedule_delta": float(schedule_delta)}
                    if log_likelihood == "ais" else {"k": k})
    if given is not None:  # the given run's own seed and schedule
        settings["ais_seed"] = int(seed_ais)
    return GapsResult(elbo=out["elbo"], local_elbo=out["local_elbo"], log_likelihood=out["ll"],
                      method=log_likelihood, settings=settings,
                      fingerprint=data_fingerprint(data), seconds=time.perf_counter() - start_time)
