"""Annealed importance sampling (AIS) estimates of log p(x) for any Pyro model/guide pair.

Per datapoint, ``C`` chains start at guide draws ``z ~ q(z|x)`` and are annealed to the
posterior along the geometric path with HMC transitions (:mod:`.annealing`); the mean of
their importance weights is an unbiased estimate of p(x), so its log is a stochastic lower
bound of log p(x) that, unlike the IWAE bound at a fixed ``k``, reaches log p(x) as the
number of temperatures grows, whatever the guide (Neal 2001, arXiv:physics/9803008; for
decoder-based models Wu et al. 2017, arXiv:1611.04273).

Step sizes. A chain whose step size is tuned from its own acceptance history during the
measured run is no longer a fixed sequence of Markov kernels, and its weights lose their
guarantee. Here the step sizes are tuned in a separate pilot run (``pilot_chains`` chains per
datapoint, their own random draws): each datapoint's step size follows its pilot chains'
mean acceptance towards :data:`~.annealing.TARGET_ACCEPTANCE` from one temperature to the
next, and the measured run then uses that schedule unchanged. Given the pilot, the measured
run's kernels are fixed, so its weights keep their expectation p(x) (and the reverse chain
of BDMC keeps its expectation 1/p(x)).
"""

import math
import numbers
import time
from dataclasses import dataclass

import pyro
import torch

from .annealing import AnnealedChains, log_mean_exp, sigmoid_schedule
from .chunks import batch_args, check_data, data_fingerprint, map_chunks
from .diagnostics import PerDatapointEstimate
from .traces import prepare_estimate

#: The pilot run's adaptation rate: a datapoint's log step size moves by this times
#: (acceptance - target) from one temperature to the next.
ADAPT_RATE = 0.5

#: The default settings of the annealed estimators: chains per datapoint, temperatures and
#: leapfrog steps per transition. Chosen on the 50-epoch ``vae`` recipe, 1000 Fashion-MNIST
#: test images (``analysis/ais_settings.py``, ``analysis/RESULTS.md``): doubling the steps
#: from 200 moves the mean estimate by 0.016 nats, 5 and 10 leapfrog steps give the same
#: estimate, and the chains' Monte Carlo error is below 0.01 nats. Check other models with
#: BDMC (:func:`~pyro_vae.infer.bdmc`).
DEFAULT_NUM_CHAINS, DEFAULT_NUM_STEPS, DEFAULT_NUM_LEAPFROG = 4, 200, 5

#: At most this many temperature bins are kept of the per-datapoint acceptance rates.
ACCEPTANCE_BINS = 100


@dataclass
class AnnealingSettings:
    """The settings an annealed estimate ran with (a base of :class:`AISResult` and
    :class:`~pyro_vae.infer.bdmc.BDMCResult`).

    :ivar int num_chains: C, chains per datapoint.
    :ivar int num_steps: T, the intermediate distributions (transitions: T - 1).
    :ivar int num_leapfrog: leapfrog steps per HMC transition.
    :ivar str step_size_rule: ``"pilot"`` (tuned in a pilot run) or ``"fixed"``.
    :ivar int seed: the seed of the chains.
    :ivar str fingerprint: :func:`~pyro_vae.infer.data_fingerprint` of the data.
    """

    num_chains: int
    num_steps: int
    num_leapfrog: int
    step_size_rule: str
    seed: int
    fingerprint: str

    @staticmethod
    def of(num_chains, num_steps, num_leapfrog, step_size, seed, data):
        """The settings' keyword arguments for a result, from the estimator's arguments
        (``step_size=None`` means the pilot rule) and the data it ran on."""
        return dict(num_chains=int(num_chains), num_steps=int(num_steps),
                    num_leapfrog=int(num_leapfrog),
                    step_size_rule="pilot" if step_size is None else "fixed", seed=int(seed),
                    fingerprint=data_fingerprint(data))

    def describe(self):
        """One line for a table: ``"T steps x C chains, L leapfrog, step size RULE"``."""
        return (f"{self.num_steps} steps x {self.num_chains} chains, {self.num_leapfrog} "
                f"leapfrog, step size {self.step_size_rule}")


@dataclass
class AISResult(PerDatapointEstimate, AnnealingSettings):
    """Per-datapoint AIS estimates of log p(x), the chains' diagnostics and the settings
    (the fields of :class:`AnnealingSettings`).

    :ivar log_likelihood: ``(N,)`` nats, ``log mean_c w_c`` over the ``C`` chains: a
        stochastic lower bound of log p(x) (its exponential is unbiased).
    :ivar mc_se: ``(N,)`` delta-method Monte Carlo standard error across chains,
        ``sqrt(1/ess - 1/C)`` nats (0 when the chains agree).
    :ivar ess: ``(N,)`` effective number of chains, ``(sum w)^2 / sum w^2``, in [1, C].
    :ivar acceptance: ``(N, bins)`` mean Metropolis acceptance probability of each
        datapoint's chains, averaged within at most :data:`ACCEPTANCE_BINS` consecutive
        blocks of transitions (all of them when fewer).
    :ivar acceptance_betas: ``(bins,)`` the mean temperature of each block.
    :ivar step_size: ``(N,)`` the mean leapfrog step size each datapoint's chains used.
    :ivar int event_size: scalars per datapoint (for bits/dim).
    :ivar float seconds: wall time.
    """

    log_likelihood: torch.Tensor
    mc_se: torch.Tensor
    ess: torch.Tensor
    acceptance: torch.Tensor
    acceptance_betas: torch.Tensor
    step_size: torch.Tensor
    event_size: int
    seconds: float = 0.0

    @property
    def chain_se(self):
        """Monte Carlo standard error of :attr:`mean` from the chains alone, nats:
        ``sqrt(sum_n mc_se_n^2) / N`` (how far other chains on the same data could move it)."""
        return float(self.mc_se.double().pow(2).sum().sqrt() / self.mc_se.shape[0])

    @property
    def acceptance_rate(self):
        """``(bins,)`` mean acceptance per block of temperatures, over all datapoints."""
        return self.acceptance.mean(0)

    def summary(self, prefix="test_log_likelihood_ais"):
        """A JSON-safe dict of the headline numbers and settings (``eval.json`` keys)."""
        return {
            prefix: self.mean, f"{prefix}_se": self.se, f"{prefix}_chain_se": self.chain_se,
            f"{prefix}_settings": {
                "num_chains": self.num_chains, "num_steps": self.num_steps,
                "num_leapfrog": self.num_leapfrog, "step_size": self.step_size_rule,
                "schedule": "sigmoid", "seed": self.seed},
            f"{prefix}_acceptance": float(self.acceptance.mean()) if self.acceptance.numel()
            else None,
            f"{prefix}_ess_mean": float(self.ess.mean()),
            f"{prefix}_seconds": self.seconds,
            f"{prefix}_num_test": int(self.log_likelihood.shape[0]),
            f"{prefix}_fingerprint": self.fingerprint,
        }


def check_ais_settings(num_chains, num_steps, num_leapfrog, step_size, pilot_chains):
    """Refuse AIS settings that are not positive integers (or a positive step size).

    :raises ValueError: naming the setting.
    """
    for name, value in (("num_chains", num_chains), ("num_steps", num_steps),
                        ("num_leapfrog", num_leapfrog), ("pilot_chains", pilot_chains)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be an integer of at least 1, got {value}")
    if step_size is not None and not (isinstance(step_size, numbers.Real) and step_size > 0
                                      and math.isfinite(step_size)):
        raise ValueError(f"step_size must be a positive number, or None to tune it in a "
                         f"pilot run; got {step_size!r}")


def bin_acceptance(acceptance, betas):
    """Average ``(B, T - 1)`` acceptances (and the temperatures ``betas[1:T]`` of the
    transitions) within at most :data:`ACCEPTANCE_BINS` consecutive blocks.

    :returns: ``(binned (B, bins), mean betas (bins,))``.
    """
    num = acceptance.shape[1]
    if num == 0:
        return acceptance, betas[1:1].float()
    bins = min(num, ACCEPTANCE_BINS)
    edges = torch.linspace(0, num, bins + 1).round().long().tolist()
    mids = betas[1:num + 1].float()
    return (torch.stack([acceptance[:, a:b].mean(1) for a, b in zip(edges, edges[1:])], 1),
            torch.stack([mids[a:b].mean() for a, b in zip(edges, edges[1:])]))


def prepare_annealing(model, guide, data, num_chains, num_steps, num_leapfrog, step_size,
                      pilot_chains, batch_size, seed, device, schedule_delta, model_kwargs,
                      guide_kwargs):
    """What the annealed estimators do before their chunks: check the data and settings,
    bind keyword arguments, find the device and plate nesting
    (:func:`~pyro_vae.infer.traces.prepare_estimate`) and the temperatures.

    :returns: ``(model, guide, device, nesting, betas)``.
    :raises ValueError: for bad data or settings.
    """
    check_data(data, num_chains, batch_size, 1)
    check_ais_settings(num_chains, num_steps, num_leapfrog, step_size, pilot_chains)
    model, guide, device, nesting = prepare_estimate(model, guide, data, batch_size, seed, device,
                                                     model_kwargs, guide_kwargs)
    return model, guide, device, nesting, sigmoid_schedule(num_steps, schedule_delta)


def step_size_schedule(model, guide, x, betas, step_size, num_leapfrog, pilot_chains,
                       initial_step_size, data_plate, nesting):
    """The per-datapoint step sizes ``(T + 1, B)`` a measured run uses at each temperature
    ``betas``: ``step_size`` everywhere when given, else those of a pilot run of
    ``pilot_chains`` chains that adapts them (see the module's docstring)."""
    batch = batch_args(x)[0].shape[0]
    if step_size is not None or betas.shape[0] <= 2:  # given, or no transition to tune
        value = initial_step_size if step_size is None else step_size
        return torch.full((betas.shape[0], batch), float(value))
    pilot = AnnealedChains(model, guide, x, pilot_chains, data_plate, nesting)
    start = torch.full((batch,), float(initial_step_size))
    _, _, used = pilot.run(betas, start, num_leapfrog, adapt_rate=ADAPT_RATE)
    return used


def ais_log_likelihood(model, guide, data, num_chains=DEFAULT_NUM_CHAINS,
                       num_steps=DEFAULT_NUM_STEPS, num_leapfrog=DEFAULT_NUM_LEAPFROG,
                       step_size=None, pilot_chains=4, initial_step_size=0.05, batch_size=100,
                       seed=0, device=None, data_plate="data", schedule_delta=4.0,
                       progress=False, world=None, model_kwargs=None, guide_kwargs=None):
    """Annealed importance sampling estimate of log p(x) for every datapoint.

    ``C = num_chains`` chains per datapoint start at guide draws and pass through ``T =
    num_steps`` temperatures of the sigmoidal schedule (:func:`sigmoid_schedule`) on the
    geometric path from q(z|x) to p(z|x), with one HMC transition of ``num_leapfrog``
    leapfrog steps at each (Wu et al. 2017, arXiv:1611.04273). The estimate
    ``log mean_c w_c`` is a stochastic lower bound of log p(x) that tends to it as ``T``
    grows, for any guide; with the exact posterior as guide it is log p(x) for any ``T``.
    ``num_steps=1`` is the IWAE bound with ``k = C``. A sweep over ``T`` needs one call
    per ``T`` (the weights of a shorter schedule are not a by-product of a longer one).

    Work is vectorized over chains and datapoints and chunked over datapoints (memory grows
    with ``batch_size * num_chains``); chunks are seeded as in
    :func:`~pyro_vae.infer.log_likelihood`. Cost: about ``num_steps * (num_leapfrog + 1)``
    gradient evaluations of ``log q + log p`` per chain, plus the pilot run's
    ``pilot_chains / num_chains`` share.

    :param callable model: a Pyro model following the plate contract (see
        :func:`~pyro_vae.infer.log_weights`), continuous latents only.
    :param callable guide: its guide (the start of the chains and one end of the path).
    :param data: ``(N, *event_shape)``, or a tuple of model arguments.
    :param int num_chains: C, chains per datapoint.
    :param int num_steps: T, intermediate distributions.
    :param int num_leapfrog: leapfrog steps per transition.
    :param float step_size: one leapfrog step size for every transition; ``None``
        (default) tunes a per-datapoint, per-temperature schedule in a pilot run.
    :param int pilot_chains: chains per datapoint of the pilot run.
    :param float initial_step_size: the pilot run's first step size.
    :param int batch_size: datapoints per chunk.
    :param int seed: seeds the chains, chunk by chunk.
    :param device: where chunks are evaluated (default: where ``data`` is).
    :param str data_plate: the name of the data plate.
    :param float schedule_delta: steepness of the sigmoidal schedule.
    :param bool progress: a tqdm bar over chunks.
    :param world: a :class:`~pyro_vae.distributed.World` to share the chunks among ranks.
    :param dict model_kwargs: keyword arguments for every call of the model.
    :param dict guide_kwargs: keyword arguments for every call of the guide.
    :returns: :class:`AISResult`.
    :raises ValueError: for bad data (see :func:`~pyro_vae.infer.check_data`) or settings.
    :raises ModelGuideMismatch: see :func:`~pyro_vae.infer.log_weights`, and for a
        discrete latent site.
    :raises ParticleBroadcastError: if the model does not broadcast over the chains'
        outer plate.
    """
    start_time = time.perf_counter()
    model, guide, device, nesting, betas = prepare_annealing(
        model, guide, data, num_chains, num_steps, num_leapfrog, step_size, pilot_chains,
        batch_size, seed, device, schedule_delta, model_kwargs, guide_kwargs)

    def compute(x):
        eps = step_size_schedule(model, guide, x, betas, step_size, num_leapfrog, pilot_chains,
                                 initial_step_size, data_plate, nesting)
        chains = AnnealedChains(model, guide, x, num_chains, data_plate, nesting)
        log_w, acceptance, _ = chains.run(betas, eps, num_leapfrog)
        return weight_summary(log_w, acceptance, eps, betas)

    with pyro.validation_enabled(False):
        out = map_chunks(compute, data, batch_size, seed, device, world, progress,
                         desc=f"AIS, {num_steps} steps")
    return AISResult(
        log_likelihood=out["ll"], mc_se=out["mc_se"], ess=out["ess"],
        acceptance=out["acceptance"], acceptance_betas=bin_acceptance(
            torch.zeros(1, int(num_steps) - 1), betas)[1],
        step_size=out["step_size"],
        **AnnealingSettings.of(num_chains, num_steps, num_leapfrog, step_size, seed, data),
        event_size=int(batch_args(data)[0][0].numel()), seconds=time.perf_counter() - start_time)


def weight_summary(log_w, acceptance, eps, betas, sign=1.0):
    """A chunk's per-datapoint numbers from the chains' log weights ``(C, B)``: the
    estimate ``sign * log mean_c w_c``, its chain ESS and delta-method standard error, the
    binned acceptance and the mean step size (a dict for :func:`map_chunks`)."""
    lse = torch.logsumexp(log_w, 0)
    ess = torch.exp(2 * lse - torch.logsumexp(2 * log_w, 0))
    binned, _ = bin_acceptance(acceptance.float(), betas)
    return {"ll": sign * log_mean_exp(log_w), "ess": ess,
            "mc_se": torch.sqrt((1 / ess - 1 / log_w.shape[0]).clamp(min=0)),
            "acceptance": binned, "step_size": eps[1:-1].mean(0) if eps.shape[0] > 2
            else eps.mean(0)}

