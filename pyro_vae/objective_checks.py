"""Recipe checks that tie a disentangling objective (``train.objective = "capacity"`` or
``"beta_tcvae"``, :mod:`pyro_vae.infer.disentangling`) to the settings and the model it can
train; :meth:`pyro_vae.config.Config.validate` calls :func:`check_disentangling`."""

from .errors import ConfigError

#: The guides and priors whose densities factorize over the latent's dimensions, as the
#: beta-TC-VAE's estimator of the marginals q(z_d) needs.
FACTORIZED_GUIDES = ("diagonal_normal",)
FACTORIZED_PRIORS = ("standard_normal",)

#: The largest batch the beta-TC-VAE takes: its (B, B, D) matrix of log q(z_id | x_j) at
#: B = 2048 and D = 64 is 1 GB in float32, before autograd keeps it.
MAX_TC_BATCH = 2048


def check_disentangling(cfg, where):
    """Refuse settings a disentangling objective cannot honour.

    - ``capacity``: positive ``train.capacity`` (C_max, nats) and ``capacity_weight``
      (gamma), ``capacity_epochs`` at least 0; ``train.beta = 1`` and no warm-up (the
      capacity schedule is what replaces them).
    - ``beta_tcvae``: ``train.tc_weight`` at least 0, ``train.beta = 1`` (the weights are
      the objective's own), a batch of at most :data:`MAX_TC_BATCH`, one particle, one
      latent layer, a diagonal Gaussian guide and a standard normal prior.

    :param cfg: a :class:`pyro_vae.config.Config`.
    :param str where: the recipe's name, for the message.
    :raises ConfigError: naming the setting and what to change.
    """
    t, m = cfg.train, cfg.model
    if t.objective == "capacity":
        if not (t.capacity > 0 and t.capacity_weight > 0) or t.capacity_epochs < 0:
            raise ConfigError(f"{where}: objective 'capacity' needs train.capacity (C_max, nats) "
                              f"and train.capacity_weight (gamma) positive and "
                              f"train.capacity_epochs at least 0; got {t.capacity}, "
                              f"{t.capacity_weight}, {t.capacity_epochs}")
        if t.beta != 1 or t.warmup_epochs:
            raise ConfigError(f"{where}: objective 'capacity' schedules the KL through its "
                              "capacity (train.capacity, capacity_epochs); leave train.beta = 1 "
                              "and train.warmup_epochs = 0")
    if t.objective == "beta_tcvae":
        if t.tc_weight < 0:
            raise ConfigError(f"{where}: train.tc_weight must be at least 0, got {t.tc_weight}")
        if t.beta != 1:
            raise ConfigError(f"{where}: objective 'beta_tcvae' weighs the total correlation by "
                              f"train.tc_weight; train.beta = {t.beta} would scale all three "
                              "KL terms as well. Leave train.beta = 1 and set tc_weight")
        if t.batch_size > MAX_TC_BATCH:
            raise ConfigError(f"{where}: objective 'beta_tcvae' compares every image of a batch "
                              f"with every other (memory grows as batch_size^2 x latent size); "
                              f"train.batch_size = {t.batch_size} is above {MAX_TC_BATCH}")
        if t.num_particles != 1:
            raise ConfigError(f"{where}: objective 'beta_tcvae' draws one z per image (its "
                              "estimator of q(z) uses the batch's other images); set "
                              "train.num_particles = 1")
        if m.hierarchical or m.guide not in FACTORIZED_GUIDES or m.prior not in FACTORIZED_PRIORS:
            raise ConfigError(f"{where}: objective 'beta_tcvae' splits the KL of one latent "
                              f"layer over its dimensions, so it needs model.guide in "
                              f"{list(FACTORIZED_GUIDES)}, model.prior in "
                              f"{list(FACTORIZED_PRIORS)} and one latent layer; got guide "
                              f"{m.guide!r}, prior {m.prior!r}, latent_dim {m.latent_dim!r}. "
                              "Use objective 'elbo' with train.beta for the others")
