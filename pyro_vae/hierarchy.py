"""Hierarchical latents: VAEs with L stochastic layers and a top-down generative model.

The model samples top-down,

.. math:: p(x, z_1, \\dots, z_L) = p(z_L) \\, p(z_{L-1} | z_L) \\cdots p(z_1 | z_2) \\, p(x | z_1),

with sites ``"z1"`` (next to the data) ... ``"zL"`` (top) and ``"x"``, all inside
``pyro.plate("data", B, dim=-1)``. The top prior p(z_L) is any prior of
:mod:`pyro_vae.priors`; each conditional p(z_l | z_{l+1}) is a learned diagonal Gaussian
(:class:`GaussianConditional`); p(x | z_1) is any likelihood of :mod:`pyro_vae.likelihoods`.

Two guides:

- :class:`BottomUpGuide`: q(z_1 | x) q(z_2 | z_1) ... q(z_L | z_{L-1}), as in the two-layer
  models of Burda et al. 2016 (Importance Weighted Autoencoders, arXiv:1509.00519).
- :class:`LadderGuide`: top-down inference sharing the generative path (the Ladder VAE,
  Sonderby et al. 2016, arXiv:1602.02282): a deterministic bottom-up pass gives each layer
  a Gaussian estimate, and q(z_l | z_{l+1}, x) is its precision-weighted combination with
  the model's own p(z_l | z_{l+1}).

Each layer of either guide is a flat guide of :mod:`pyro_vae.guides` (diagonal Gaussian,
full covariance, IAF, planar, radial, spline), so flows can be used at any layer.
"""

import pyro
import torch
import torch.nn.functional as F
from torch import nn

import pyro.distributions as dist

from .guides import MIN_SCALE
from .nets import MLP
from .vae import VAE, draw, point_estimate


def site_name(layer):
    """The Pyro site of latent layer ``layer`` (1-based, 1 next to the data): ``"z1"``..."""
    return f"z{int(layer)}"


class GaussianConditional(nn.Module):
    """A learned diagonal Gaussian prior conditional
    :math:`p(z_l | z_{l+1}) = \\mathcal{N}(\\mu(z_{l+1}), \\mathrm{diag}\\,\\sigma(z_{l+1})^2)`
    (Rezende et al. 2014, arXiv:1401.4082; Burda et al. 2016, arXiv:1509.00519).

    :param int parent_dim: size of z_{l+1}.
    :param int latent_dim: size of z_l.
    :param hidden: hidden sizes of the MLP ``parent_dim -> hidden... -> 2 latent_dim``.
    :param str activation: activation name.
    :raises ConfigError: for non-positive sizes or an unknown activation.

    Shapes: parent ``(..., parent_dim)`` -> distribution with batch ``(...)``, event
    ``(latent_dim,)``.
    """

    def __init__(self, parent_dim, latent_dim, hidden=(100,), activation="softplus"):
        super().__init__()
        self.parent_dim = int(parent_dim)
        self.latent_dim = int(latent_dim)
        self.net = MLP(self.parent_dim, hidden, 2 * self.latent_dim, activation)

    def forward(self, parent):
        """Return p(z_l | z_{l+1} = parent)."""
        out = self.net(parent)
        loc, raw_scale = out[..., :self.latent_dim], out[..., self.latent_dim:]
        return dist.Normal(loc, F.softplus(raw_scale) + MIN_SCALE).to_event(1)


class BottomUpGuide(nn.Module):
    """Bottom-up inference q(z_1 | x) q(z_2 | z_1) ... q(z_L | z_{L-1}) (Burda et al. 2016,
    arXiv:1509.00519, two-layer models).

    :param layers: L flat guides; ``layers[0]`` takes ``x``, ``layers[l]`` takes
        ``z_l`` (its ``event_shape`` is ``(D_l,)``) and returns q(z_{l+1} | z_l).
    :raises ValueError: if there are no layers.
    """

    #: Whether it needs the model's conditionals (top-down inference).
    top_down = False

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

    top_down = True

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


class TopPosterior(nn.Module):
    """The guide's distribution over the top latent given x alone, as a flat guide module
    (``forward(x)`` -> distribution over z_L), so that a VampPrior can sit at the top of a
    hierarchy (Tomczak & Welling 2018, arXiv:1705.07120, use it there too).

    :param guide: a :class:`BottomUpGuide` or :class:`LadderGuide` (shared, not copied).
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


class HierarchicalVAE(VAE):
    """A VAE with L stochastic layers (Rezende et al. 2014, arXiv:1401.4082; Burda et al.
    2016, arXiv:1509.00519; Sonderby et al. 2016, arXiv:1602.02282).

    :param prior: the top prior: ``prior(B)`` returns p(z_L), batch ``(B,)``, event ``(D_L,)``.
    :param guide: a :class:`BottomUpGuide` or :class:`LadderGuide` over L layers.
    :param likelihood: ``likelihood(z_1)`` returns p(x | z_1).
    :param conditionals: L - 1 modules, ``conditionals[l - 1](z_{l+1})`` returning
        p(z_l | z_{l+1}) (e.g. :class:`GaussianConditional`).
    :param tuple event_shape: shape of one datapoint (default: the likelihood's).
    :param str name: prefix of the parameter names in Pyro's param store.
    :raises ValueError: if the number of conditionals is not L - 1 or the latent sizes of
        the components disagree.

    Sites ``"z1"``, ..., ``"zL"`` (batch ``(B,)``, event ``(D_l,)``) and ``"x"`` inside
    ``pyro.plate("data", B, dim=-1)``; leftmost dims are free for particle plates. With
    L = 1 it is the flat :class:`~pyro_vae.vae.VAE` with the site named ``"z1"``.
    """

    def __init__(self, prior, guide, likelihood, conditionals=(), event_shape=None, name="vae"):
        super().__init__(prior, guide, likelihood, event_shape=event_shape, name=name)
        self.conditionals = nn.ModuleList(conditionals)
        self.check_latent_sizes()

    @property
    def num_layers(self):
        """L, the number of stochastic layers."""
        return len(self.posterior.layers)

    @property
    def latent_dims(self):
        """``(D_1, ..., D_L)``, bottom (next to x) to top."""
        return self.posterior.latent_dims

    @property
    def sites(self):
        """The latent site names, ``("z1", ..., "zL")``."""
        return tuple(site_name(i + 1) for i in range(self.num_layers))

    def check_latent_sizes(self):
        """Check the number of conditionals and that every component agrees on the sizes.

        :raises ValueError: naming the disagreeing component and sizes.
        """
        if "conditionals" not in self._modules:
            return  # called by VAE.__init__ before the conditionals are set; checked after
        dims = self.latent_dims
        if len(self.conditionals) != len(dims) - 1:
            raise ValueError(f"a {len(dims)}-layer hierarchy needs {len(dims) - 1} prior "
                             f"conditionals, got {len(self.conditionals)}")
        expected = {"prior (top, z%d)" % len(dims): (self.prior, dims[-1]),
                    "likelihood (z1)": (self.likelihood, dims[0])}
        for i, c in enumerate(self.conditionals):
            expected[f"conditional p(z{i + 1} | z{i + 2})"] = (c, dims[i])
            if getattr(c, "parent_dim", dims[i + 1]) != dims[i + 1]:
                raise ValueError(f"conditional p(z{i + 1} | z{i + 2}) takes parents of size "
                                 f"{c.parent_dim}, but z{i + 2} has {dims[i + 1]} dimensions")
        for role, (module, d) in expected.items():
            if getattr(module, "latent_dim", d) != d:
                raise ValueError(f"the {role} has latent_dim {module.latent_dim} but the guide's "
                                 f"layer has {d}; latent sizes (z1 first) are {dims}")

    def model(self, x):
        """The generative model p(z_L) prod_l p(z_l | z_{l+1}) p(x | z_1), ``x`` observed.

        :param torch.Tensor x: a batch, shape ``(B, *event_shape)``.
        :returns: ``z1`` (leading particle dims, then ``(B, D_1)``).
        """
        batch_size = self.check_input(x)
        self.register("prior", "conditionals", "likelihood")
        with pyro.plate("data", batch_size, dim=-1):
            z = pyro.sample(site_name(self.num_layers), self.prior(batch_size))
            for i in reversed(range(self.num_layers - 1)):
                z = pyro.sample(site_name(i + 1), self.conditionals[i](z))
            pyro.sample("x", self.likelihood(z), obs=x)
        return z

    def guide(self, x):
        """The amortized posterior over every layer (bottom-up or top-down).

        :returns: dict site -> sampled value.
        """
        batch_size = self.check_input(x)
        self.register("posterior", *(("conditionals",) if self.posterior.top_down else ()))
        with pyro.plate("data", batch_size, dim=-1):
            return self.posterior.sample_latents(x, pyro.sample, self.conditionals)

    def encode(self, x):
        """Point estimates of every layer (each layer's mean given the point estimates of
        the layers it depends on): dict site -> ``(B, D_l)``."""
        self.check_input(x)
        return self.posterior.sample_latents(x, lambda name, q: point_estimate(q),
                                             self.conditionals)

    def reconstruct(self, x):
        """The mean of p(x | z1_hat) at the point estimate of ``z1`` (see :meth:`encode`),
        shape ``(B, *event_shape)``."""
        return self.likelihood(self.encode(x)["z1"]).mean

    @torch.no_grad()
    def sample_layer(self, num_samples, layer, temperature=1.0):
        """Ancestral draws of latent ``layer`` (1..L) from the model: ``(n, D_layer)``
        (``temperature``: see :meth:`sample`).

        :raises ValueError: for a bad layer.
        """
        layer = int(layer)
        if not 1 <= layer <= self.num_layers:
            raise ValueError(f"layer must be in 1..{self.num_layers}, got {layer}")
        z = draw(self.prior(num_samples), temperature)
        for i in reversed(range(layer, self.num_layers)):
            z = draw(self.conditionals[i - 1](z), temperature)
        return z

    @torch.no_grad()
    def sample(self, num_samples, top=None, layer=None, temperature=1.0):
        """Ancestral samples: the likelihood's mean, shape ``(n, *event_shape)``.

        :param int num_samples: n.
        :param torch.Tensor top: optional ``(n, D_layer)`` values of latent ``layer``, kept
            fixed; the layers below it are drawn from the conditionals (to see what each
            layer encodes). Default: everything drawn from the prior.
        :param int layer: which layer ``top`` fixes (1..L; default L).
        :param float temperature: every layer's standard deviation times this (the top
            prior must be Gaussian), as NVAE samples (Vahdat & Kautz 2020, arXiv:2007.03898).
        :raises ValueError: for a bad layer or a ``top`` of the wrong shape.
        """
        layer = self.num_layers if layer is None else int(layer)
        if not 1 <= layer <= self.num_layers:
            raise ValueError(f"layer must be in 1..{self.num_layers}, got {layer}")
        if top is None:
            z = self.sample_layer(num_samples, layer, temperature)
        else:
            expected = (int(num_samples), self.latent_dims[layer - 1])
            if tuple(top.shape) != expected:
                raise ValueError(f"top must have shape {expected}, got {tuple(top.shape)}")
            z = top
        for i in reversed(range(layer - 1)):
            z = draw(self.conditionals[i](z), temperature)
        return self.likelihood(z).mean
