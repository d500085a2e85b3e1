"""The ``[model]`` table of a recipe: what the VAE is made of (priors, guides, likelihood,
latent sizes, networks, hierarchy). :func:`pyro_vae.registries.build_vae` builds it.
"""

from dataclasses import dataclass, field

from .errors import ConfigError


@dataclass
class ModelConfig:
    """What the VAE is made of.

    :ivar str prior: a key of :data:`PRIORS` (in a hierarchy: the prior of the top layer).
    :ivar guide: a key of :data:`GUIDES`; in a hierarchy, one name for every layer or a list
        of L names (``z1`` first), e.g. ``["iaf", "diagonal_normal"]``.
    :ivar str likelihood: a key of :data:`LIKELIHOODS`.
    :ivar latent_dim: D, the size of z (sites ``"z"``); or a list ``[D_1, ..., D_L]`` (z1,
        next to the data, first) for a hierarchical VAE with sites ``"z1"`` ... ``"zL"``
        (:class:`~pyro_vae.hierarchy.HierarchicalVAE`).
    :ivar list hidden: hidden layer sizes of the encoder and of the decoder (mirrored). In a
        hierarchy, either one list used between every pair of layers, or L lists: the first
        between x and z1, the l-th between z_{l-1} and z_l (used by the guide upwards and by
        the prior conditional p(z_{l-1} | z_l), mirrored, downwards).
    :ivar str inference: in a hierarchy, ``"bottom_up"`` (q(z1|x) q(z2|z1) ..., Burda et al.
        2016), ``"ladder"`` (top-down, sharing the generative path; Sonderby et al. 2016,
        arXiv:1602.02282) or ``"top_down"`` (q(z_L|x) ... q(z1|x, z2), each layer reading x
        beside the layer above, through a :class:`~pyro_vae.nets.JoinedInputs` of width
        ``hidden[l][0]``; Tomczak & Welling 2018, arXiv:1705.07120). With ``top_down`` the
        l-th hidden list is used after the join by q(z_l | x, z_{l+1}), and by q(z_L | x)
        for the top layer.
    :ivar str likelihood_input: in a hierarchy, ``"z1"`` (p(x | z1)) or ``"all"``
        (p(x | z1, ..., zL): every layer read side by side, each through one layer of width
        ``hidden[0][0]``, then the decoder with ``hidden[0]``; Tomczak & Welling 2018).
    :ivar dict conditional_options: in a hierarchy, options of every prior conditional
        p(z_l | z_{l+1}) (:class:`~pyro_vae.hierarchy.GaussianConditional`): only
        ``log_var_range``.
    :ivar str activation: a key of :data:`pyro_vae.nets.ACTIVATIONS`.
    :ivar str network: ``"mlp"``, ``"gated"`` (gated dense layers,
        :class:`~pyro_vae.nets.GatedMLP`; in a hierarchy at every layer and conditional), or
        ``"conv"`` for convolutional encoder and decoder (images only; the hidden sizes are
        then those of the fully connected layers between the convolutions and the latent).
    :ivar dict prior_options: keyword options of the prior's ``build`` (TOML table
        ``[model.prior_options]``), e.g. ``num_pseudo = 500`` for ``vamp``.
    :ivar dict guide_options: likewise for the guide, e.g. ``num_flows = 2`` for ``iaf``.
    :ivar dict likelihood_options: likewise for the likelihood.
    :ivar bool conditional: a conditional VAE (Sohn et al. 2015): the guide q(z|x,y) and the
        likelihood p(x|z,y) read the class label y (one-hot) beside their input; the prior
        is p(z|y) when it is conditional (``conditional_normal``). MLP networks only.
    :ivar bool semi_supervised: the M2 model (Kingma et al. 2014, arXiv:1406.5298): y is a
        latent site with a classifier q(y|x) (an MLP with ``classifier_hidden``), observed
        on labelled images (``data.labels`` of them) and summed out on the others.
    :ivar int num_classes: the number of classes of y (0: taken from the data's labels when
        a run starts; the resolved recipe stores the number).
    :ivar list classifier_hidden: hidden sizes of q(y|x) (empty: ``hidden``).
    :ivar str discriminator: for the adversarial objectives, ``"latent"`` (a discriminator on
        z, the adversarial autoencoder) or ``"image"`` (on x, the VAE-GAN): an MLP with
        ``discriminator_hidden`` and one logit, ``vae.discriminator``; ``""``: none.
    :ivar list discriminator_hidden: its hidden sizes.
    """

    prior: str = "standard_normal"
    guide: str | list = "diagonal_normal"
    likelihood: str = "bernoulli"
    latent_dim: int | list = 50
    hidden: list = field(default_factory=lambda: [400])
    activation: str = "softplus"
    network: str = "mlp"
    inference: str = "bottom_up"
    likelihood_input: str = "z1"
    conditional_options: dict = field(default_factory=dict)
    prior_options: dict = field(default_factory=dict)
    guide_options: dict = field(default_factory=dict)
    likelihood_options: dict = field(default_factory=dict)
    conditional: bool = False
    semi_supervised: bool = False
    num_classes: int = 0
    classifier_hidden: list = field(default_factory=list)
    discriminator: str = ""
    discriminator_hidden: list = field(default_factory=lambda: [400])

    @property
    def uses_labels(self):
        """Whether the model reads class labels (conditional or semi-supervised)."""
        return self.conditional or self.semi_supervised

    @property
    def hierarchical(self):
        """Whether ``latent_dim`` is a list (a :class:`~pyro_vae.hierarchy.HierarchicalVAE`)."""
        return isinstance(self.latent_dim, list)

    def latent_sizes(self):
        """The latent sizes as a list (``[latent_dim]`` for a flat VAE).

        :raises ConfigError: unless they are positive integers, at least one.
        """
        dims = self.latent_dim if self.hierarchical else [self.latent_dim]
        if not dims or not all(positive_int(d) for d in dims):
            raise ConfigError(f"model.latent_dim must be a positive integer or a non-empty list "
                              f"of them (z1 first), got {self.latent_dim!r}")
        return list(dims)

    def layer_hidden(self):
        """Hidden sizes per layer: a list of L lists (see :attr:`hidden`).

        :raises ConfigError: for anything but a list of positive integers or L such lists.
        """
        num = len(self.latent_sizes())
        h = self.hidden
        if all(positive_int(v) for v in h):
            return [list(h) for _ in range(num)]
        if self.hierarchical and len(h) == num and all(
                isinstance(v, list) and all(positive_int(u) for u in v) for v in h):
            return [list(v) for v in h]
        raise ConfigError("model.hidden must be a list of positive integers"
                          + (f" or {num} such lists (x to z1 first)" if self.hierarchical else "")
                          + f", got {h!r}")

    def layer_guides(self):
        """The guide name of each layer (one name repeated, or the list given).

        :raises ConfigError: for a list of the wrong length.
        """
        num = len(self.latent_sizes())
        if isinstance(self.guide, str):
            return [self.guide] * num
        if len(self.guide) != num or not all(isinstance(g, str) for g in self.guide):
            raise ConfigError(f"model.guide must be a name or a list of {num} names (one per "
                              f"latent layer, z1 first), got {self.guide!r}")
        return list(self.guide)


def positive_int(v):
    """Whether ``v`` is an int (not a bool) of at least 1."""
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


#: The discrete latents and the prior each needs: guide name -> prior name.
DISCRETE_LATENTS = {"categorical": "categorical", "vq": "vq"}


def check_discrete_latents(m):
    """Refuse a discrete latent (a categorical code, a vector-quantized code) combined with
    what cannot go with it: its guide needs its own prior (and the other way round), a flat
    VAE and no labels.

    :raises ConfigError: saying what to change.
    """
    guides = [m.guide] if isinstance(m.guide, str) else list(m.guide)
    discrete = [g for g in guides if g in DISCRETE_LATENTS]
    if not discrete and m.prior not in DISCRETE_LATENTS.values():
        return
    if m.hierarchical:
        raise ConfigError("categorical and vector-quantized latents are flat: give "
                          "model.latent_dim as one number, not a list of layers")
    if discrete and m.prior != DISCRETE_LATENTS[discrete[0]]:
        raise ConfigError(f"a {discrete[0]} guide needs prior = {DISCRETE_LATENTS[discrete[0]]!r}, "
                          f"not {m.prior!r} (the VampPrior, mixtures and flows are densities "
                          "over real vectors)")
    if not discrete:
        raise ConfigError(f"the {m.prior} prior needs guide = {m.prior!r}, not {m.guide!r} (an IAF "
                          "or other flow moves real vectors, not discrete codes)")
    if m.uses_labels:
        raise ConfigError("discrete latents are not built for conditional or semi-supervised "
                          "models; set model.conditional and model.semi_supervised false")
