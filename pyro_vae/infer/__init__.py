"""Inference for any Pyro model/guide pair: estimators, diagnostics and objectives.

Nothing in this subpackage knows what a VAE, a run folder or the command line is. Every
function takes a Pyro ``model`` and ``guide`` that follow the plate contract (each
per-datapoint sample site inside one data plate; leftmost dims free for particles) and
the data as one tensor or a tuple of model arguments (extra keyword arguments as
``model_kwargs`` / ``guide_kwargs``), and returns per-datapoint tensors in nats. The
particles are drawn in one outer particle plate, or one at a time with
``vectorize_particles=False`` for a model that cannot broadcast over it.

- :mod:`~pyro_vae.infer.traces`: per-datapoint, per-particle log densities from traces
  (:func:`log_weights`, :func:`particle_traces`, :func:`pair_traces`, :func:`log_weight_parts`);
- :mod:`~pyro_vae.infer.importance`: the IWAE estimate of log p(x)
  (:func:`log_likelihood`, :class:`LogLikelihoodResult`);
- :mod:`~pyro_vae.infer.ais`: annealed importance sampling (:func:`ais_log_likelihood`,
  :class:`AISResult`), on the annealed HMC chains of :mod:`~pyro_vae.infer.annealing`;
- :mod:`~pyro_vae.infer.bdmc`: bidirectional Monte Carlo bounds on simulated data (:func:`bdmc`);
- :mod:`~pyro_vae.infer.gaps`: approximation and amortization gaps (:func:`inference_gaps`);
- :mod:`~pyro_vae.infer.elbo`: the ELBO and its terms (:func:`elbo`, :func:`elbo_terms`);
- :mod:`~pyro_vae.infer.diagnostics`: Pareto k-hat and standard errors;
- :mod:`~pyro_vae.infer.comparison`: paired comparison (:func:`compare`);
- :mod:`~pyro_vae.infer.latents`: KL per dimension and active units (:func:`latent_report`);
- :mod:`~pyro_vae.infer.objectives`: training objectives behind one contract
  (:class:`Objective`); :mod:`~pyro_vae.infer.discrete_objectives`: gradient estimators
  for discrete latents (Concrete relaxation, exact enumeration, score function) and the
  VQ-VAE; :mod:`~pyro_vae.infer.adversarial`: adversarial autoencoders and VAE-GANs;
  :mod:`~pyro_vae.infer.registry`: the objectives by name (:data:`OBJECTIVES`);
- :mod:`~pyro_vae.infer.chunks`: data as model arguments, chunked and seeded.

>>> from pyro_vae.infer import log_likelihood, log_weights, compare
"""

from .ais import AISResult, AnnealingSettings, ais_log_likelihood
from .annealing import TARGET_ACCEPTANCE, AnnealedChains, sigmoid_schedule
from .bdmc import BDMCResult, bdmc, simulate
from .chunks import (batch_args, batch_size_of, check_data, data_fingerprint, device_of,
                     map_chunks, rows, seeded, to_device)
from .comparison import Comparison, compare
from .diagnostics import (FLAT_WEIGHTS_NATS, MIN_PARTICLES_KHAT, MIN_TAIL_DISTINCT, flat_weights,
                          pareto_khat, standard_error, tail_length, tied_tail)
from .elbo import elbo, elbo_terms
from .gaps import LOG_LIKELIHOOD_METHODS, GapsResult, inference_gaps
from .importance import LogLikelihoodResult, default_k_sweep, log_likelihood
from .latents import ACTIVE_UNIT_THRESHOLD, LatentReport, latent_report
from .adversarial import (AdversarialAutoencoderObjective, AdversarialObjective,
                          VAEGANObjective)
from .discrete_objectives import ConcreteELBO, EnumerationELBO, ScoreFunctionELBO, VQObjective
from .objectives import (ELBO, DReGIWAEObjective, FreeBitsELBO, IWAEObjective, ScaleLatents,
                         SemiSupervisedELBO)
from .registry import ADVERSARIAL_OBJECTIVES, DISCRETE_OBJECTIVES, OBJECTIVES, make_objective
from .traces import (PARTICLE_PLATE, ModelGuideMismatch, ParticleBroadcastError, data_nesting,
                     data_plate_dim, datapoint_sum, factorized_base, is_auxiliary, is_sample, latent_order,
                     log_weight_parts, log_weights, pair_traces, particle_traces, per_datapoint,
                     plate_nesting, with_kwargs)

__all__ = [
    "AISResult", "AnnealedChains", "AnnealingSettings", "BDMCResult", "GapsResult",
    "LOG_LIKELIHOOD_METHODS", "TARGET_ACCEPTANCE", "ais_log_likelihood", "bdmc", "inference_gaps", "is_auxiliary",
    "sigmoid_schedule", "simulate",
    "Comparison", "ConcreteELBO", "DISCRETE_OBJECTIVES", "EnumerationELBO", "ScoreFunctionELBO",
    "VQObjective", "AdversarialAutoencoderObjective", "AdversarialObjective", "VAEGANObjective",
    "ADVERSARIAL_OBJECTIVES",
    "DReGIWAEObjective", "ELBO", "FLAT_WEIGHTS_NATS", "FreeBitsELBO",
    "IWAEObjective", "LatentReport", "LogLikelihoodResult", "MIN_PARTICLES_KHAT",
    "MIN_TAIL_DISTINCT", "ModelGuideMismatch", "OBJECTIVES", "PARTICLE_PLATE",
    "ParticleBroadcastError", "ScaleLatents", "SemiSupervisedELBO",
    "batch_args", "batch_size_of", "check_data", "compare", "data_fingerprint", "data_nesting",
    "data_plate_dim", "datapoint_sum", "default_k_sweep", "device_of", "elbo", "elbo_terms",
    "factorized_base", "flat_weights", "is_sample", "latent_order", "latent_report", "ACTIVE_UNIT_THRESHOLD",
    "log_likelihood", "log_weight_parts", "log_weights", "make_objective", "map_chunks",
    "pair_traces", "plate_nesting", "pareto_khat", "particle_traces", "per_datapoint", "rows",
    "seeded", "standard_error", "tail_length", "tied_tail", "to_device", "with_kwargs",
]
