"""Training objectives for models with discrete latents: three gradient estimators of the
same ELBO.

- :class:`ConcreteELBO`: the Gumbel-softmax / Concrete relaxation (Jang et al. 2017,
  arXiv:1611.01144; Maddison et al. 2017, arXiv:1611.00712): the guide's discrete sites
  are replaced by their relaxation (a distribution's ``relaxed(temperature)``, e.g.
  :meth:`~pyro_vae.distributions.CategoricalCode.relaxed`), the likelihood reads the
  relaxed sample, and the KL of the discrete distributions is taken exactly, as Jang et
  al. do. Biased (the decoder sees points of the simplex, not codes) with low variance;
  the bias vanishes as the temperature goes to 0, which a schedule anneals it towards.
- :class:`EnumerationELBO`: the exact ELBO, every value of the guide's discrete sites
  summed out by Pyro's :class:`~pyro.infer.TraceEnum_ELBO` (parallel enumeration): no
  gradient variance at all, at the cost of one decoder pass per value; for small codes.
- :class:`VQObjective`: for a vector-quantized code (van den Oord et al. 2017,
  arXiv:1711.00937), the negative bound ``log p(x | z_q) + log p(z_q)`` of the point-mass
  guide plus the paper's commitment and codebook losses; the encoder learns through the
  straight-through value the guide samples.
- :class:`ScoreFunctionELBO`: the score-function (REINFORCE) estimator (Williams 1992;
  Mnih & Gregor 2014, arXiv:1402.0030), unbiased, with the leave-one-out baseline of S
  particles (Kool et al. 2019, "Buy 4 REINFORCE samples, get a baseline for free!"; Mnih &
  Rezende 2016, arXiv:1602.06725): each particle's learning signal is centred on the mean
  of the other S - 1, which keeps the estimator unbiased and needs no state.

Each follows the :class:`~pyro_vae.infer.objectives.Objective` contract, with the KL
weight on the latent terms, and works for any model/guide pair that follows the plate
contract. A model evaluated after training with any of them gets the same, valid
importance-weighted bound: the guide samples its discrete sites exactly.
"""

import torch
from pyro.infer import TraceEnum_ELBO, config_enumerate
from pyro.poutine.messenger import Messenger

from .chunks import batch_args, batch_size_of
from .objectives import Objective, scaled
from .traces import (data_plate_dim, datapoint_sum, is_sample, particle_traces, per_datapoint)


class Relax(Messenger):
    """Replace the distribution of every latent site that has a relaxation
    (``fn.relaxed(temperature, straight_through)``) by it; the names of the relaxed sites
    are kept in :attr:`sites`."""

    def __init__(self, temperature, straight_through=False):
        super().__init__()
        self.temperature = float(temperature)
        self.straight_through = bool(straight_through)
        self.sites = set()

    def _pyro_sample(self, msg):
        if msg["is_observed"] or not hasattr(msg["fn"], "relaxed"):
            return
        msg["fn"] = msg["fn"].relaxed(self.temperature, self.straight_through)
        self.sites.add(msg["name"])


def annealed_temperature(step, temperature, final_temperature, anneal_steps):
    """The temperature after ``step`` steps: ``temperature * r ** (step / anneal_steps)``
    with ``r = final_temperature / temperature``, held at ``final_temperature`` from
    ``anneal_steps`` on (an exponential schedule, as Jang et al. 2017, arXiv:1611.01144);
    ``temperature`` throughout when ``anneal_steps`` is 0."""
    if anneal_steps <= 0:
        return float(temperature)
    fraction = min(1.0, step / anneal_steps)
    return float(temperature) * (final_temperature / temperature) ** fraction


class ConcreteELBO(Objective):
    """The relaxed ELBO of Jang et al. 2017 (arXiv:1611.01144) for discrete latents: per
    datapoint, ``E[log p(x | z~)] - w KL(q(z|x) || p(z))`` with ``z~`` the Gumbel-softmax
    relaxation of the guide's sample at the current temperature and the KL between the
    discrete distributions (``torch.distributions.kl_divergence``); latent sites without a
    relaxation keep the Monte Carlo term ``log p(z) - log q(z|x)``. The loss is summed over
    the batch, in nats, averaged over ``num_particles`` vectorized particles.

    :param int num_particles: particles per datapoint.
    :param float temperature: the initial temperature (> 0).
    :param float final_temperature: the temperature reached after ``anneal_steps`` steps.
    :param int anneal_steps: steps of the exponential schedule (0: constant temperature).
    :param bool straight_through: the decoder reads one-hot codes carrying the relaxed
        samples' gradient (the straight-through Gumbel-softmax, Jang et al. 2017).
    :param int max_plate_nesting: plates nested in the model (1 for our VAEs).
    :raises ValueError: for temperatures that are not positive or no particles; (when
        called) if the guide has no site with a relaxation.
    """

    @classmethod
    def from_settings(cls, num_particles=1, free_bits=0.0, temperature=1.0,
                      final_temperature=0.5, anneal_steps=0, straight_through=False, **options):
        """Build from ``train.num_particles``, the temperature schedule and
        ``train.straight_through``."""
        return cls(num_particles, temperature, final_temperature, anneal_steps, straight_through)

    def __init__(self, num_particles=1, temperature=1.0, final_temperature=0.5, anneal_steps=0,
                 straight_through=False, max_plate_nesting=1):
        if not (float(temperature) > 0 and float(final_temperature) > 0):
            raise ValueError(f"temperatures must be positive, got {temperature} and "
                             f"{final_temperature}")
        if int(num_particles) < 1:
            raise ValueError(f"num_particles must be at least 1, got {num_particles}")
        self.num_particles = int(num_particles)
        self.initial_temperature = float(temperature)
        self.final_temperature = float(final_temperature)
        self.anneal_steps = int(anneal_steps)
        self.straight_through = bool(straight_through)
        self.max_plate_nesting = max_plate_nesting
        self.temperature = self.initial_temperature

    def set_step(self, step):
        """Set the temperature of step ``step`` (:func:`annealed_temperature`)."""
        self.temperature = annealed_temperature(step, self.initial_temperature,
                                                self.final_temperature, self.anneal_steps)

    def differentiable_loss(self, model, guide, x, kl_weight=1.0):
        """Negative relaxed ELBO summed over the batch, nats."""
        k, batch = self.num_particles, batch_size_of(x)
        relax = Relax(self.temperature, self.straight_through)
        model_trace, guide_trace, nesting = particle_traces(model, relax(guide), x, k,
                                                            self.max_plate_nesting)
        if not relax.sites:
            raise ValueError("the Concrete objective found no latent site with a relaxation "
                             "(a distribution with .relaxed(temperature), e.g. a categorical "
                             "code); use objective 'elbo' for continuous latents")
        args = ("data", k, batch, nesting)
        log_lik = per_datapoint(model_trace, "model", *args, include="observed")
        others = {n for n, s in guide_trace.nodes.items()
                  if is_sample(s) and not s["is_observed"] and n not in relax.sites}
        latent = per_datapoint(model_trace, "model", *args, include=others) - \
            per_datapoint(guide_trace, "guide", *args, include=others)
        for name in relax.sites:
            q = guide_trace.nodes[name]["fn"].discrete
            kl = torch.distributions.kl_divergence(q, model_trace.nodes[name]["fn"])
            latent = latent - datapoint_sum(kl, data_plate_dim(guide_trace, "guide", name, "data"),
                                            nesting)
        return -(log_lik + kl_weight * latent).sum() / k


class EnumerationELBO(Objective):
    """The exact ELBO of a model with discrete latents: the guide's enumerable sites
    (``has_enumerate_support``) are enumerated in parallel and summed out by Pyro's
    :class:`~pyro.infer.TraceEnum_ELBO` (``config_enumerate(guide, "parallel")``), so the
    gradient has no Monte Carlo variance; continuous sites, if any, are sampled. One decoder
    pass per joint value: for small codes only (see
    :data:`~pyro_vae.distributions.MAX_ENUMERATION`).

    :param int num_particles: must be 1 (nothing is sampled for an enumerated code).
    :param int max_plate_nesting: plates nested in the model (1 for our VAEs).
    :raises ValueError: for ``num_particles`` other than 1; (when called) for a code too
        large to enumerate.
    """

    def __init__(self, num_particles=1, max_plate_nesting=1):
        if int(num_particles) != 1:
            raise ValueError(f"exact enumeration sums over every value: num_particles must be 1, "
                             f"got {num_particles}")
        self.elbo = TraceEnum_ELBO(max_plate_nesting=max_plate_nesting)

    def differentiable_loss(self, model, guide, x, kl_weight=1.0):
        """Negative exact ELBO summed over the batch, nats."""
        guide = config_enumerate(guide, "parallel", expand=False)
        return self.elbo.differentiable_loss(scaled(model, kl_weight), scaled(guide, kl_weight),
                                             *batch_args(x))


class ScoreFunctionELBO(Objective):
    """The ELBO with the score-function gradient for the guide and the leave-one-out
    baseline of S particles (see the module docstring). Per datapoint, with learning signals
    ``f_s = log p(x, z_s) - log q(z_s|x)`` (latent terms times the KL weight) and baselines
    ``b_s = mean of f over the other particles``, the surrogate is

    .. math:: \\frac{1}{S} \\sum_s \\Big[ f_s + (f_s - b_s)_{\\perp} \\log q(z_s | x) \\Big]

    (``_perp``: no gradient), whose gradient is unbiased for the ELBO's; its value is the
    ELBO. The loss is its negative summed over the batch, nats.

    :param int num_particles: S >= 2.
    :param int max_plate_nesting: plates nested in the model (1 for our VAEs).
    :raises ValueError: for ``num_particles < 2``; (when called) for a guide with
        reparameterized latent sites (their gradient is the pathwise one: use 'concrete' or
        'elbo').
    """

    def __init__(self, num_particles=4, max_plate_nesting=1):
        if int(num_particles) < 2:
            raise ValueError(f"the leave-one-out baseline needs num_particles >= 2, got "
                             f"{num_particles}")
        self.num_particles = int(num_particles)
        self.max_plate_nesting = max_plate_nesting

    def differentiable_loss(self, model, guide, x, kl_weight=1.0):
        """Negative ELBO summed over the batch (its gradient the score-function one), nats."""
        k, batch = self.num_particles, batch_size_of(x)
        model_trace, guide_trace, nesting = particle_traces(model, guide, x, k,
                                                            self.max_plate_nesting)
        reparameterized = [n for n, s in guide_trace.nodes.items() if is_sample(s) and
                           not s["is_observed"] and getattr(s["fn"], "has_rsample", False)]
        if reparameterized:
            raise ValueError(f"the score-function objective is for discrete latents; the guide's "
                             f"site(s) {reparameterized} are reparameterized: use objective "
                             "'elbo' or 'concrete'")
        args = ("data", k, batch, nesting)
        log_q = per_datapoint(guide_trace, "guide", *args, include="all")
        signal = per_datapoint(model_trace, "model", *args, include="observed") + kl_weight * (
            per_datapoint(model_trace, "model", *args, include="latent") - log_q)
        centred = (signal - (signal.sum(0, keepdim=True) - signal) / (k - 1)).detach()
        score = (centred * log_q).mean(0)
        return -(signal.mean(0) + score - score.detach()).sum()



class VQObjective(Objective):
    """The VQ-VAE loss (van den Oord et al. 2017, arXiv:1711.00937, eq. 3) on Pyro traces:
    per datapoint, ``-(log p(x | z) + w (log p(z) - log q(z|x))) + beta ||z_e - sg(e)||^2 +
    ||sg(z_e) - e||^2``, summed over the batch (nats for the first term, squared distances
    for the others). The guide's point mass on a discrete code has ``log q = 0``, so the
    first term is the negative of the bound ``log p(x | z_q) + log p(z_q)``; the two VQ
    losses are read from the guide sites' ``quantization_losses()`` (see
    :class:`~pyro_vae.vq.QuantizedCode`).

    :param float commitment: beta, the weight of the commitment loss (the paper: 0.25).
    :param int max_plate_nesting: plates nested in the model (1 for our VAEs).
    :raises ValueError: for a negative weight; (when called) for a guide without a quantized
        site.
    """

    @classmethod
    def from_settings(cls, num_particles=1, free_bits=0.0, commitment=0.25, **options):
        """Build from ``train.commitment``."""
        return cls(commitment)

    def __init__(self, commitment=0.25, max_plate_nesting=1):
        if not float(commitment) >= 0:
            raise ValueError(f"the commitment weight must be >= 0, got {commitment}")
        self.commitment = float(commitment)
        self.max_plate_nesting = max_plate_nesting

    def differentiable_loss(self, model, guide, x, kl_weight=1.0):
        """The VQ-VAE loss summed over the batch."""
        batch = batch_size_of(x)
        model_trace, guide_trace, nesting = particle_traces(model, guide, x, 1,
                                                            self.max_plate_nesting)
        args = ("data", 1, batch, nesting)
        bound = per_datapoint(model_trace, "model", *args, include="observed") + kl_weight * (
            per_datapoint(model_trace, "model", *args, include="latent") -
            per_datapoint(guide_trace, "guide", *args, include="all"))
        quantized = [(n, s) for n, s in guide_trace.nodes.items()
                     if is_sample(s) and hasattr(s["fn"], "quantization_losses")]
        if not quantized:
            raise ValueError("the VQ-VAE objective found no quantized latent site (guide = 'vq'); "
                             "use objective 'elbo' for other guides")
        losses = torch.zeros(())
        for name, site in quantized:
            commitment, codebook = site["fn"].quantization_losses()
            data_dim = data_plate_dim(guide_trace, "guide", name, "data")
            losses = losses + (self.commitment * datapoint_sum(commitment, data_dim, nesting) +
                               datapoint_sum(codebook, data_dim, nesting)).sum()
        return -bound.sum() + losses
