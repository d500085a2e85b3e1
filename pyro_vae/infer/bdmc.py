"""Bidirectional Monte Carlo (BDMC): AIS bounds of log p(x) from both sides, on data
simulated from the model (Grosse et al. 2015, arXiv:1511.02543; for VAEs Wu et al. 2017,
arXiv:1611.04273).

For each row of the data, one pair ``(z*, x*)`` is drawn from the model's joint (the
model with its observed site freed, Pyro's ``poutine.uncondition``). On ``x*``, forward AIS
from the guide gives a stochastic lower bound of log p(x*), and reverse AIS started at
``z*`` (an exact sample of p(z | x*)) gives a stochastic upper bound: its weights estimate
1/p(x*) without bias. The gap between the two bounds bounds the error of AIS with these
settings on data like the model's own, which tells how many steps real data needs.
"""

import time
from dataclasses import dataclass

import pyro
import pyro.poutine as poutine
import torch

from .ais import (DEFAULT_NUM_CHAINS, DEFAULT_NUM_LEAPFROG, DEFAULT_NUM_STEPS,
                  AnnealingSettings, prepare_annealing, step_size_schedule, weight_summary)
from .annealing import AnnealedChains
from .chunks import batch_args, map_chunks
from .diagnostics import standard_error
from .traces import ModelGuideMismatch, is_sample


@dataclass
class BDMCResult(AnnealingSettings):
    """BDMC's two bounds of log p(x*) on simulated data ``x*``, and the settings (the
    fields of :class:`~pyro_vae.infer.ais.AnnealingSettings`; ``fingerprint`` is that of the
    simulated data).

    :ivar lower: ``(N,)`` nats, forward AIS from the guide: a stochastic lower bound.
    :ivar upper: ``(N,)`` nats, reverse AIS from the simulated latents: a stochastic upper
        bound.
    :ivar data: ``(N, *event_shape)`` the simulated ``x*`` (the model's first argument).
    :ivar lower_mc_se: ``(N,)`` delta-method standard error of ``lower`` across chains.
    :ivar upper_mc_se: ``(N,)`` the same for ``upper``; optimistic, since all reverse
        chains of a datapoint start from its one simulated ``z*`` and are correlated (the
        estimate stays an unbiased one of 1/p(x*)).
    :ivar forward_acceptance: ``(N, bins)`` binned acceptance of the forward chains (as
        :attr:`~pyro_vae.infer.ais.AISResult.acceptance`).
    :ivar reverse_acceptance: ``(N, bins)`` the same for the reverse chains, in the order
        they ran (from the posterior down to the guide).
    :ivar float seconds: wall time.
    """

    lower: torch.Tensor
    upper: torch.Tensor
    data: torch.Tensor
    lower_mc_se: torch.Tensor
    upper_mc_se: torch.Tensor
    forward_acceptance: torch.Tensor
    reverse_acceptance: torch.Tensor
    seconds: float = 0.0

    @property
    def width(self):
        """``(N,)`` ``upper - lower``, nats: how far AIS may be from log p(x*) here."""
        return self.upper - self.lower

    def summary(self):
        """A JSON-safe dict of the means, their standard errors across datapoints and the
        settings."""
        return {
            "bdmc_lower": float(self.lower.mean()), "bdmc_lower_se": standard_error(self.lower),
            "bdmc_upper": float(self.upper.mean()), "bdmc_upper_se": standard_error(self.upper),
            "bdmc_width": float(self.width.mean()), "bdmc_width_se": standard_error(self.width),
            "bdmc_settings": {"num_chains": self.num_chains, "num_steps": self.num_steps,
                              "num_leapfrog": self.num_leapfrog, "step_size": self.step_size_rule,
                              "schedule": "sigmoid", "seed": self.seed},
            "bdmc_num_simulated": int(self.lower.shape[0]),
            "bdmc_fingerprint": self.fingerprint,
            "bdmc_seconds": self.seconds,
        }


def simulate(model, x):
    """One draw ``(z*, x*)`` from the model's joint per row of ``x``.

    :param callable model: a Pyro model with exactly one observed site, whose value has
        the shape of its first argument.
    :param x: a chunk ``(B, *event_shape)`` or a tuple of model arguments (the first is
        replaced by the simulated data; the others are kept, e.g. a condition ``y``).
    :returns: ``(args, latents)``: the model's arguments with ``x*`` first, and
        ``{site: value}`` of the latent sites (without a particle dim).
    :raises ModelGuideMismatch: if the model observes no site or several, or its observed
        value does not have the first argument's shape.
    """
    args = batch_args(x)
    trace = poutine.trace(poutine.uncondition(model)).get_trace(*args)
    observed = [name for name, site in trace.nodes.items()
                if is_sample(site) and site["infer"].get("was_observed")]
    if len(observed) != 1:
        raise ModelGuideMismatch(
            f"BDMC simulates the data from the model and passes it as the model's first "
            f"argument, so the model must observe exactly one site; it observes {observed}")
    value = trace.nodes[observed[0]]["value"]
    if value.shape != args[0].shape:
        raise ModelGuideMismatch(
            f"the model's observed site {observed[0]!r} has shape {tuple(value.shape)}, not "
            f"that of its first argument {tuple(args[0].shape)}: BDMC cannot pass the "
            "simulated data back to the model")
    latents = {name: site["value"].detach() for name, site in trace.nodes.items()
               if is_sample(site) and not site["is_observed"] and name not in observed}
    return (value.detach(),) + args[1:], latents


def bdmc(model, guide, data, num_chains=DEFAULT_NUM_CHAINS, num_steps=DEFAULT_NUM_STEPS,
         num_leapfrog=DEFAULT_NUM_LEAPFROG, step_size=None, pilot_chains=4,
         initial_step_size=0.05, batch_size=100, seed=0, device=None, data_plate="data",
         schedule_delta=4.0, progress=False, world=None, model_kwargs=None, guide_kwargs=None):
    """Bidirectional Monte Carlo: a lower and an upper bound of log p(x*) for one
    simulated ``x*`` per row of ``data`` (Grosse et al. 2015, arXiv:1511.02543).

    ``data`` serves only for its shape and any further model arguments (a condition is
    kept, the first argument replaced by the simulated ``x*``). Both directions use the same
    schedule of ``num_steps`` temperatures and the same step sizes: ``step_size``, or a
    schedule tuned by a forward pilot run on ``x*`` (see :mod:`pyro_vae.infer.ais`), run
    backwards by the reverse chains. Settings and cost as
    :func:`~pyro_vae.infer.ais_log_likelihood`, twice over.

    :param callable model: a Pyro model following the plate contract, continuous latents,
        exactly one observed site with the shape of its first argument.
    :param callable guide: its guide (the start of the forward chains).
    :param data: ``(N, *event_shape)`` or a tuple of model arguments: one simulation per row.
    :param int num_chains: chains per datapoint in each direction.
    :param int num_steps: T, intermediate distributions.
    :param int num_leapfrog: leapfrog steps per transition.
    :param float step_size: a fixed step size, or ``None`` for the pilot-tuned schedule.
    :param int pilot_chains: chains per datapoint of the pilot run.
    :param float initial_step_size: the pilot run's first step size.
    :param int batch_size: datapoints per chunk (memory grows with it times ``num_chains``).
    :param int seed: seeds the simulation and the chains, chunk by chunk.
    :param device: where chunks run (default: where ``data`` is).
    :param str data_plate: the name of the data plate.
    :param float schedule_delta: steepness of the sigmoidal schedule.
    :param bool progress: a tqdm bar over chunks.
    :param world: a :class:`~pyro_vae.distributed.World` to share the chunks among ranks.
    :param dict model_kwargs: keyword arguments for every call of the model.
    :param dict guide_kwargs: keyword arguments for every call of the guide.
    :returns: :class:`BDMCResult`, lower and upper ``(N,)`` in nats.
    :raises ValueError: for bad data or settings.
    :raises ModelGuideMismatch: see :func:`simulate` and
        :func:`~pyro_vae.infer.ais_log_likelihood`.
    """
    start_time = time.perf_counter()
    model, guide, device, nesting, betas = prepare_annealing(
        model, guide, data, num_chains, num_steps, num_leapfrog, step_size, pilot_chains,
        batch_size, seed, device, schedule_delta, model_kwargs, guide_kwargs)

    def compute(x):
        x_sim, latents = simulate(model, x)
        eps = step_size_schedule(model, guide, x_sim, betas, step_size, num_leapfrog,
                                 pilot_chains, initial_step_size, data_plate, nesting)
        forward = AnnealedChains(model, guide, x_sim, num_chains, data_plate, nesting)
        log_w, accept, _ = forward.run(betas, eps, num_leapfrog)
        lower = weight_summary(log_w, accept, eps, betas)
        reverse = AnnealedChains(model, guide, x_sim, num_chains, data_plate, nesting,
                                 start=latents)
        log_w, accept, _ = reverse.run(betas.flip(0), eps.flip(0), num_leapfrog)
        upper = weight_summary(log_w, accept, eps, betas.flip(0), sign=-1.0)
        return {"lower": lower["ll"], "upper": upper["ll"], "data": x_sim[0],
                "lower_mc_se": lower["mc_se"], "upper_mc_se": upper["mc_se"],
                "forward_acceptance": lower["acceptance"],
                "reverse_acceptance": upper["acceptance"]}

    with pyro.validation_enabled(False):
        out = map_chunks(compute, data, batch_size, seed, device, world, progress,
                         desc=f"BDMC, {num_steps} steps")
    return BDMCResult(
        lower=out["lower"], upper=out["upper"], data=out["data"],
        lower_mc_se=out["lower_mc_se"], upper_mc_se=out["upper_mc_se"],
        forward_acceptance=out["forward_acceptance"],
        reverse_acceptance=out["reverse_acceptance"],
        **AnnealingSettings.of(num_chains, num_steps, num_leapfrog, step_size, seed,
                               out["data"]),
        seconds=time.perf_counter() - start_time)
