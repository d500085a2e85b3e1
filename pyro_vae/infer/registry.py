"""The training objectives a recipe may name (``train.objective``), by name."""

from .adversarial import AdversarialAutoencoderObjective, VAEGANObjective
from .disentangling import BetaTCELBO, CapacityELBO
from .discrete_objectives import ConcreteELBO, EnumerationELBO, ScoreFunctionELBO, VQObjective
from .objectives import DReGIWAEObjective, ELBO, FreeBitsELBO, IWAEObjective, MeanFieldELBO

#: The objectives a recipe may name (``train.objective``), by name.
OBJECTIVES = {"elbo": ELBO, "mean_field": MeanFieldELBO, "iwae": IWAEObjective,
              "iwae_dreg": DReGIWAEObjective, "free_bits": FreeBitsELBO,
              "concrete": ConcreteELBO, "enumerate": EnumerationELBO,
              "score": ScoreFunctionELBO, "vqvae": VQObjective,
              "aae": AdversarialAutoencoderObjective, "vaegan": VAEGANObjective,
              "capacity": CapacityELBO, "beta_tcvae": BetaTCELBO}

#: The adversarial objectives and the discriminator each needs (``model.discriminator``).
ADVERSARIAL_OBJECTIVES = {"aae": "latent", "vaegan": "image"}

#: The objectives for discrete latents (they need a guide with discrete sites).
DISCRETE_OBJECTIVES = ("concrete", "enumerate", "score")


def make_objective(name="elbo", num_particles=1, free_bits=0.0, **options):
    """The objective a recipe names (``train.objective``).

    :param str name: a key of :data:`OBJECTIVES`.
    :param options: other settings the objective takes (the Concrete temperature schedule:
        ``temperature``, ``final_temperature``, ``anneal_steps``; the VQ-VAE's
        ``commitment``; the adversarial objectives' ``discriminator`` (the model's),
        ``adversarial_weight``, ``discriminator_lr`` and ``feature_weight``; the capacity
        objective's ``capacity``, ``capacity_weight``, ``capacity_steps``; the beta-TC-VAE's
        ``tc_weight`` and ``dataset_size``); others ignore them.
    :raises ValueError: for an unknown name or bad settings.
    """
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; choose one of {list(OBJECTIVES)}")
    return OBJECTIVES[name].from_settings(num_particles=num_particles, free_bits=free_bits,
                                          **options)


def objective_options(train, steps_per_epoch):
    """The settings of a recipe's ``[train]`` table that objectives take, as
    :func:`make_objective`'s ``options`` (schedules given in epochs turned into steps).

    :param train: a :class:`pyro_vae.config.TrainConfig`.
    :param int steps_per_epoch: optimizer steps per epoch.
    :returns: a dict of keyword arguments.
    """
    return dict(temperature=train.temperature, final_temperature=train.final_temperature,
                anneal_steps=round(train.temperature_epochs * steps_per_epoch),
                straight_through=train.straight_through, commitment=train.commitment,
                adversarial_weight=train.adversarial_weight,
                discriminator_lr=train.discriminator_lr, feature_weight=train.feature_weight,
                capacity=train.capacity, capacity_weight=train.capacity_weight,
                capacity_steps=round(train.capacity_epochs * steps_per_epoch),
                tc_weight=train.tc_weight)
