"""The inference orders of a hierarchical guide over latent layers ``z1`` (next to the
data) ... ``zL`` (top), each layer a flat guide of :mod:`pyro_vae.guides`:

- :class:`BottomUpGuide`: q(z_1 | x) q(z_2 | z_1) ... q(z_L | z_{L-1}) (Burda et al. 2016,
  arXiv:1509.00519).
- :class:`LadderGuide`: top-down, sharing the generative path by precision weighting (the
  Ladder VAE, Sonderby et al. 2016, arXiv:1602.02282).
- :class:`TopDownGuide`: q(z_L | x) q(z_{L-1} | x, z_L) ... q(z_1 | x, z_2), each layer
  reading the data beside the layer above (the two-level HVAE of Tomczak & Welling 2018,
  arXiv:1705.07120).

Every guide draws through ``sample(name, distribution)``, so the same code gives Pyro sites
(``pyro.sample``) and point estimates (reconstructions).
"""

from torch import nn

from .nets import event_size, flatten_event
from .vae import point_estimate


def site_name(layer):
    """The Pyro site of latent layer ``layer`` (1-based, 1 next to the data): ``"z1"``..."""
    return f"z{int(layer)}"


class BottomUpGuide(nn.Module):
    """Bottom-up inference q(z_1 | x) q(z_2 | z_1) ... q(z_L | z_{L-1}) (Burda et al. 2016,
    arXiv:1509.00519, two-layer models).

    :param layers: L flat guides; ``layers[0]`` takes ``x``, ``layers[l]`` takes
        ``z_l`` (its ``event_shape`` is ``(D_l,)``) and returns q(z_{l+1} | z_l).
    :raises ValueError: if there are no layers.
    """

    #: Whether it reads the model's prior conditionals (ladder inference does).
    uses_conditionals = False

    def __init__(self, layers):
        super().__init__()
        if not layers:
            raise ValueError("a hierarchical guide needs at least one layer")
        self.layers = nn.ModuleList(layers)

    @property
    def latent_dims(self):
        """``(D_1, ..., D_L)``."""
        return tuple(layer.latent_dim for layer in self.layers)

    @property
    def invertible(self):
        """Whether the top layer's density can be evaluated at any z (VampPrior)."""
        return getattr(self.layers[-1], "invertible", True)

    def sample_latents(self, x, sample, conditionals=None):
        """Draw every layer: ``sample(name, distribution) -> value`` is called for
        ``"z1"``, ..., ``"zL"`` in that order (``pyro.sample`` in the guide, or a point
        estimate for reconstructions). ``conditionals`` is ignored (bottom-up inference does
        not use the model).

        :returns: dict site -> value.
        """
        values, z = {}, x
        for i, layer in enumerate(self.layers):
            z = values[site_name(i + 1)] = sample(site_name(i + 1), layer(z))
        return values

    def top_posterior(self, x):
        """A distribution over z_L given x alone, for a VampPrior at the top: q(z_L | z_{L-1})
        at the point estimates of the lower layers (z_l = mean of q(z_l | z_{l-1}))."""
        z = x
        for layer in self.layers[:-1]:
            z = point_estimate(layer(z))
        return self.layers[-1](z)


class LadderGuide(BottomUpGuide):
    """Top-down inference that shares the generative path (the Ladder VAE, Sonderby et al.
    2016, arXiv:1602.02282).

    A deterministic bottom-up pass ``d_1 = f_1(x), d_l = f_l(d_{l-1})`` (the hidden layers of
    each flat guide's encoder) gives each layer a Gaussian estimate (mu_hat_l, sigma_hat_l).
    Then, top-down: q(z_L | x) = N(mu_hat_L, sigma_hat_L^2), and q(z_l | z_{l+1}, x) is the
    precision-weighted combination of N(mu_hat_l, sigma_hat_l^2) with the model's
    p(z_l | z_{l+1}), pushed through the layer's flows (conditioned on ``d_l``) if it has any.

    :param layers: L flat guides whose encoders are chained on features: ``layers[0]``
        takes ``x``; ``layers[l]`` has ``event_shape == (layers[l - 1].feature_size,)``.
        Every layer must have a hidden layer and support precision weighting (diagonal
        Gaussian base: not the full-covariance guide).
    :raises ValueError: if not.
    """

    uses_conditionals = True

    def __init__(self, layers):
        super().__init__(layers)
        for i, layer in enumerate(self.layers):
            if not getattr(layer, "precision_weighting", False):
                raise ValueError(f"layer {i + 1}: {type(layer).__name__} cannot be combined with "
                                 "the prior by precision weighting; top-down (ladder) inference "
                                 "needs diagonal-Gaussian bases (diagonal_normal or a flow guide)")
            if i > 0 and layer.event_shape != (self.layers[i - 1].feature_size,):
                raise ValueError(f"layer {i + 1} takes inputs of shape {layer.event_shape}, but "
                                 f"layer {i} has {self.layers[i - 1].feature_size} features")

    def encode(self, x):
        """The deterministic bottom-up pass: lists of features ``d_l`` and outputs, one per
        layer, each with the batch shape of ``x``."""
        features, outputs, h = [], [], x
        for layer in self.layers:
            h, out = layer.encode(h)
            features.append(h)
            outputs.append(out)
        return features, outputs

    def sample_latents(self, x, sample, conditionals=None):
        """Draw ``"zL"``, ..., ``"z1"`` top-down (see :meth:`BottomUpGuide.sample_latents`).

        :param conditionals: the model's L - 1 :class:`GaussianConditional` modules,
            ``conditionals[l - 1]`` being p(z_l | z_{l+1}).
        :raises ValueError: if they are missing or their number is wrong.
        """
        num = len(self.layers)
        if conditionals is None or len(conditionals) != num - 1:
            raise ValueError(f"top-down inference over {num} layers needs the model's {num - 1} "
                             "prior conditionals")
        features, outputs = self.encode(x)
        values = {}
        z = values[site_name(num)] = sample(site_name(num),
                                            self.layers[-1].posterior(features[-1], outputs[-1]))
        for i in reversed(range(num - 1)):
            q = self.layers[i].posterior(features[i], outputs[i], prior=conditionals[i](z))
            z = values[site_name(i + 1)] = sample(site_name(i + 1), q)
        return values

    def top_posterior(self, x):
        """q(z_L | x): the top layer of the bottom-up pass (a function of x alone)."""
        features, outputs = self.encode(x)
        return self.layers[-1].posterior(features[-1], outputs[-1])


class TopDownGuide(BottomUpGuide):
    """Top-down inference in which every layer reads the data beside the layer above:
    q(z_L | x) q(z_{L-1} | x, z_L) ... q(z_1 | x, z_2), the two-level HVAE of Tomczak &
    Welling 2018 (VAE with a VampPrior, arXiv:1705.07120, their ``HVAE_2level``). Unlike
    :class:`LadderGuide` it does not read the model's conditionals.

    :param layers: L flat guides, ``layers[l - 1]`` giving q(z_l | .). The top one takes
        ``x``; each other one takes the output of ``joins[l - 1]``.
    :param joins: L - 1 :class:`~pyro_vae.nets.JoinedInputs` over ``(x flattened,
        z_{l+1})``, ``joins[l - 1]`` feeding ``layers[l - 1]``.
    :param tuple event_shape: shape of one datapoint (to flatten ``x`` for the joins).
    :raises ValueError: for no layers, the wrong number of joins, or sizes that disagree.

    Shapes: ``x`` ``(B, *event_shape)``; every layer's distribution has batch ``(B,)`` (and
    the particle dims of the layer above), event ``(D_l,)``.
    """

    def __init__(self, layers, joins, event_shape):
        super().__init__(layers)
        if len(joins) != len(layers) - 1:
            raise ValueError(f"top-down inference over {len(layers)} layers needs "
                             f"{len(layers) - 1} joined inputs (x, z_(l+1)), got {len(joins)}")
        self.joins = nn.ModuleList(joins)
        self.event_shape = tuple(event_shape)
        size = event_size(self.event_shape)
        for i, join in enumerate(self.joins):
            expected = (size, self.layers[i + 1].latent_dim)
            if tuple(join.in_features) != expected:
                raise ValueError(f"the inputs of q(z{i + 1} | x, z{i + 2}) have sizes "
                                 f"{tuple(join.in_features)}, expected {expected}")
            if tuple(self.layers[i].event_shape) != (join.out_features,):
                raise ValueError(f"layer {i + 1} takes inputs of shape {self.layers[i].event_shape}"
                                 f", but its joined inputs give {join.out_features} features")

    def sample_latents(self, x, sample, conditionals=None):
        """Draw ``"zL"``, ..., ``"z1"`` top-down (see :meth:`BottomUpGuide.sample_latents`);
        ``conditionals`` is ignored.

        :returns: dict site -> value.
        """
        num = len(self.layers)
        flat = flatten_event(x, self.event_shape)
        values = {}
        z = values[site_name(num)] = sample(site_name(num), self.layers[-1](x))
        for i in reversed(range(num - 1)):
            q = self.layers[i](self.joins[i](flat, z))
            z = values[site_name(i + 1)] = sample(site_name(i + 1), q)
        return values

    def top_posterior(self, x):
        """q(z_L | x), a function of x alone (the VampPrior's components)."""
        return self.layers[-1](x)


class TopPosterior(nn.Module):
    """The guide's distribution over the top latent given x alone, as a flat guide module
    (``forward(x)`` -> distribution over z_L), so that a VampPrior can sit at the top of a
    hierarchy (Tomczak & Welling 2018, arXiv:1705.07120, use it there too).

    :param guide: a :class:`BottomUpGuide`, :class:`LadderGuide` or :class:`TopDownGuide`
        (shared, not copied).
    """

    def __init__(self, guide):
        super().__init__()
        self.guide = guide
        self.latent_dim = guide.latent_dims[-1]
        self.invertible = guide.invertible
        self.description = f"the top layer's {type(guide.layers[-1]).__name__}"

    def forward(self, x):
        """Return the guide's ``top_posterior(x)``, batch ``(B,)``, event ``(D_L,)``."""
        return self.guide.top_posterior(x)
