"""Hierarchical latents: VAEs with L stochastic layers and a top-down generative model.

The model samples top-down,

.. math:: p(x, z_1, \\dots, z_L) = p(z_L) \\, p(z_{L-1} | z_L) \\cdots p(z_1 | z_2) \\, p(x | z_1),

with sites ``"z1"`` (next to the data) ... ``"zL"`` (top) and ``"x"``, all inside
``pyro.plate("data", B, dim=-1)``. The top prior p(z_L) is any prior of
:mod:`pyro_vae.priors`; each conditional p(z_l | z_{l+1}) is a learned diagonal Gaussian
(:class:`GaussianConditional`); p(x | z_1) is any likelihood of :mod:`pyro_vae.likelihoods`.

The guides (inference orders) are in :mod:`pyro_vae.hierarchy_guides`: bottom-up (Burda
et al. 2016), ladder (Sonderby et al. 2016) and top-down with the data read at every layer
(Tomczak & Welling 2018, arXiv:1705.07120). With ``likelihood_join`` the likelihood reads
every layer, p(x | z_1, ..., z_L), as in that paper's two-level HVAE.
"""

import pyro
import torch
import torch.nn.functional as F
from torch import nn

import pyro.distributions as dist

from .errors import ConfigError
from .guides import MIN_SCALE, checked_log_var_range
from .hierarchy_guides import BottomUpGuide, LadderGuide, TopDownGuide, TopPosterior, site_name
from .nets import MLP, GatedMLP
from .vae import VAE, draw, point_estimate

__all__ = ["GaussianConditional", "HierarchicalVAE", "BottomUpGuide", "LadderGuide",
           "TopDownGuide", "TopPosterior", "site_name"]


class GaussianConditional(nn.Module):
    """A learned diagonal Gaussian prior conditional
    :math:`p(z_l | z_{l+1}) = \\mathcal{N}(\\mu(z_{l+1}), \\mathrm{diag}\\,\\sigma(z_{l+1})^2)`
    (Rezende et al. 2014, arXiv:1401.4082; Burda et al. 2016, arXiv:1509.00519).

    :param int parent_dim: size of z_{l+1}.
    :param int latent_dim: size of z_l.
    :param hidden: hidden sizes of the MLP ``parent_dim -> hidden... -> 2 latent_dim``.
    :param str activation: activation name.
    :param str network: ``"mlp"`` or ``"gated"`` (a :class:`~pyro_vae.nets.GatedMLP`).
    :param log_var_range: ``(lo, hi)``: the second half of the output is the log-variance
        clipped to ``[lo, hi]``, as p(z_1 | z_2) in Tomczak & Welling 2018 (``[-6, 2]``);
        ``None`` (default): ``scale = softplus(raw) + 1e-5``.
    :raises ConfigError: for non-positive sizes or an unknown activation or network.
    :raises ValueError: for a ``log_var_range`` that is not two numbers ``lo < hi``.

    Shapes: parent ``(..., parent_dim)`` -> distribution with batch ``(...)``, event
    ``(latent_dim,)``.
    """

    def __init__(self, parent_dim, latent_dim, hidden=(100,), activation="softplus",
                 network="mlp", log_var_range=None):
        super().__init__()
        self.parent_dim = int(parent_dim)
        self.latent_dim = int(latent_dim)
        if network not in ("mlp", "gated"):
            raise ConfigError(f"a prior conditional's network must be 'mlp' or 'gated', got "
                              f"{network!r}")
        cls = GatedMLP if network == "gated" else MLP
        self.net = cls(self.parent_dim, hidden, 2 * self.latent_dim, activation)
        self.log_var_range = checked_log_var_range(log_var_range)

    def forward(self, parent):
        """Return p(z_l | z_{l+1} = parent)."""
        out = self.net(parent)
        loc, raw = out[..., :self.latent_dim], out[..., self.latent_dim:]
        if self.log_var_range is None:
            scale = F.softplus(raw) + MIN_SCALE
        else:
            scale = torch.exp(0.5 * raw.clamp(*self.log_var_range))
        return dist.Normal(loc, scale).to_event(1)


class HierarchicalVAE(VAE):
    """A VAE with L stochastic layers (Rezende et al. 2014, arXiv:1401.4082; Burda et al.
    2016, arXiv:1509.00519; Sonderby et al. 2016, arXiv:1602.02282).

    :param prior: the top prior: ``prior(B)`` returns p(z_L), batch ``(B,)``, event ``(D_L,)``.
    :param guide: a :class:`BottomUpGuide` or :class:`LadderGuide` over L layers.
    :param likelihood: ``likelihood(z_1)`` returns p(x | z_1).
    :param conditionals: L - 1 modules, ``conditionals[l - 1](z_{l+1})`` returning
        p(z_l | z_{l+1}) (e.g. :class:`GaussianConditional`).
    :param likelihood_join: ``None`` (p(x | z_1)), or a
        :class:`~pyro_vae.nets.JoinedInputs` over ``(z_1, ..., z_L)`` whose output the
        likelihood reads: p(x | z_1, ..., z_L) (Tomczak & Welling 2018, arXiv:1705.07120).
    :param tuple event_shape: shape of one datapoint (default: the likelihood's).
    :param str name: prefix of the parameter names in Pyro's param store.
    :raises ValueError: if the number of conditionals is not L - 1 or the latent sizes of
        the components disagree.

    Sites ``"z1"``, ..., ``"zL"`` (batch ``(B,)``, event ``(D_l,)``) and ``"x"`` inside
    ``pyro.plate("data", B, dim=-1)``; leftmost dims are free for particle plates. With
    L = 1 it is the flat :class:`~pyro_vae.vae.VAE` with the site named ``"z1"``.
    """

    def __init__(self, prior, guide, likelihood, conditionals=(), event_shape=None, name="vae",
                 likelihood_join=None):
        super().__init__(prior, guide, likelihood, event_shape=event_shape, name=name)
        self.conditionals = nn.ModuleList(conditionals)
        self.likelihood_join = likelihood_join
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
        expected = {"prior (top, z%d)" % len(dims): (self.prior, dims[-1])}
        if self.likelihood_join is None:
            expected["likelihood (z1)"] = (self.likelihood, dims[0])
        else:
            if tuple(self.likelihood_join.in_features) != tuple(dims):
                raise ValueError(f"the likelihood reads layers of sizes "
                                 f"{tuple(self.likelihood_join.in_features)}, but the latent "
                                 f"sizes (z1 first) are {dims}")
            expected["likelihood (joined layers)"] = (self.likelihood,
                                                      self.likelihood_join.out_features)
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
        if self.likelihood_join is not None:
            self.register("likelihood_join")
        with pyro.plate("data", batch_size, dim=-1):
            zs = [pyro.sample(site_name(self.num_layers), self.prior(batch_size))]
            for i in reversed(range(self.num_layers - 1)):
                zs.insert(0, pyro.sample(site_name(i + 1), self.conditionals[i](zs[0])))
            pyro.sample("x", self.decode(zs), obs=x)
        return zs[0]

    def decode(self, zs):
        """p(x | z_1) (or p(x | z_1, ..., z_L) with a ``likelihood_join``) for the values
        ``zs = [z_1, ..., z_L]`` of every layer, each ``(..., D_l)``; only ``z_1`` is read
        without a join."""
        if self.likelihood_join is None:
            return self.likelihood(zs[0])
        return self.likelihood(self.likelihood_join(*zs))

    def guide(self, x):
        """The amortized posterior over every layer (bottom-up or top-down).

        :returns: dict site -> sampled value.
        """
        batch_size = self.check_input(x)
        self.register("posterior", *(("conditionals",) if getattr(self.posterior, "uses_conditionals", False)
                                     else ()))
        with pyro.plate("data", batch_size, dim=-1):
            return self.posterior.sample_latents(x, pyro.sample, self.conditionals)

    def encode(self, x):
        """Point estimates of every layer (each layer's mean given the point estimates of
        the layers it depends on): dict site -> ``(B, D_l)``."""
        self.check_input(x)
        return self.posterior.sample_latents(x, lambda name, q: point_estimate(q),
                                             self.conditionals)

    def reconstruct(self, x):
        """The mean of p(x | z_hat) at the point estimates of the layers (see
        :meth:`encode`), shape ``(B, *event_shape)``."""
        values = self.encode(x)
        return self.decode([values[s] for s in self.sites]).mean

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
        :raises ValueError: for a bad layer or a ``top`` of the wrong shape, or a ``top``
            below the top layer when the likelihood reads every layer (the layers above
            it are then unknown).
        """
        layer = self.num_layers if layer is None else int(layer)
        if not 1 <= layer <= self.num_layers:
            raise ValueError(f"layer must be in 1..{self.num_layers}, got {layer}")
        if top is None:
            layer, z = self.num_layers, draw(self.prior(num_samples), temperature)
        else:
            expected = (int(num_samples), self.latent_dims[layer - 1])
            if tuple(top.shape) != expected:
                raise ValueError(f"top must have shape {expected}, got {tuple(top.shape)}")
            if self.likelihood_join is not None and layer < self.num_layers:
                raise ValueError(f"the likelihood reads every layer, so fixing z{layer} leaves "
                                 f"the layers above it unknown; fix the top layer "
                                 f"(layer={self.num_layers})")
            z = top
        zs = [z]
        for i in reversed(range(layer - 1)):
            zs.insert(0, draw(self.conditionals[i](zs[0]), temperature))
        return self.decode(zs).mean
