"""Priors p(z).

A prior is a :class:`torch.nn.Module`. Called with the batch size ``B`` it returns a
:class:`torch.distributions.Distribution` with batch shape ``(B,)`` and event shape
``(latent_dim,)``. Its tensors live in buffers or parameters, so ``prior.to(device)``
moves it and the distribution it returns is on that device.

Every prior has a classmethod ``build(ctx, **options)`` used by recipes: ``ctx`` is a
:class:`~pyro_vae.config.BuildContext` (latent size, event shape, and the guide, which
the VampPrior shares) and the keyword arguments are the options a recipe may set in
``[model.prior_options]``; any other option is an error.
"""

import math

import torch
from torch import nn
from torch.distributions import constraints

import pyro.distributions as dist
import pyro.distributions.transforms as T
from pyro.distributions.torch_distribution import TorchDistribution

import torch.nn.functional as F

from .errors import ConfigError
from .nets import MLP


class StandardNormalPrior(nn.Module):
    """The isotropic standard normal prior :math:`p(z) = \\mathcal{N}(z; 0, I)`.

    As in Kingma & Welling 2013, Auto-Encoding Variational Bayes, arXiv:1312.6114.

    :param int latent_dim: D.
    :raises ValueError: if ``latent_dim < 1``.

    Example::

        >>> prior = StandardNormalPrior(4)
        >>> p = prior(3)
        >>> p.batch_shape, p.event_shape
        (torch.Size([3]), torch.Size([4]))
    """

    def __init__(self, latent_dim):
        super().__init__()
        if int(latent_dim) < 1:
            raise ValueError(f"latent_dim must be a positive integer, got {latent_dim}")
        self.latent_dim = int(latent_dim)
        self.register_buffer("loc", torch.zeros(self.latent_dim))
        self.register_buffer("scale", torch.ones(self.latent_dim))

    @classmethod
    def build(cls, ctx):
        """Build from a recipe's context (no options)."""
        return cls(ctx.latent_dim)

    def forward(self, batch_size):
        """Return :math:`\\mathcal{N}(0, I)` with batch shape ``(batch_size,)``, event ``(D,)``."""
        shape = (int(batch_size), self.latent_dim)
        return dist.Normal(self.loc.expand(shape), self.scale.expand(shape)).to_event(1)


class MixtureOfGaussiansPrior(nn.Module):
    """A learned mixture of K diagonal Gaussians,
    :math:`p(z) = \\sum_k \\pi_k \\mathcal{N}(z; \\mu_k, \\mathrm{diag}\\,\\sigma_k^2)`
    (as the "MoG prior" baseline of Tomczak & Welling 2018, arXiv:1705.07120).

    :param int latent_dim: D.
    :param int num_components: K.
    :raises ValueError: if D or K is below 1.

    Means start at N(0, 1) draws, scales at 1, weights uniform. The distribution is
    Pyro's :class:`~pyro.distributions.MixtureSameFamily` (no ``rsample``: the prior is
    only scored in the model, where z comes from the guide).
    """

    def __init__(self, latent_dim, num_components=10):
        super().__init__()
        if int(latent_dim) < 1 or int(num_components) < 1:
            raise ValueError(f"latent_dim and num_components must be positive, got "
                             f"{latent_dim} and {num_components}")
        self.latent_dim = int(latent_dim)
        self.locs = nn.Parameter(torch.randn(int(num_components), self.latent_dim))
        self.raw_scales = nn.Parameter(torch.zeros(int(num_components), self.latent_dim))
        self.logits = nn.Parameter(torch.zeros(int(num_components)))

    @classmethod
    def build(cls, ctx, num_components=10):
        """Build from a recipe; option ``num_components``."""
        return cls(ctx.latent_dim, num_components)

    def forward(self, batch_size):
        """Return the mixture with batch shape ``(batch_size,)``, event ``(D,)``."""
        components = dist.Normal(self.locs, self.raw_scales.exp()).to_event(1)
        mixture = dist.MixtureSameFamily(dist.Categorical(logits=self.logits), components)
        return mixture.expand((int(batch_size),))


class MixtureOfPosteriors(TorchDistribution):
    """The equally weighted mixture :math:`\\frac{1}{K} \\sum_k q(z | u_k)` of a guide's
    posteriors at K inputs: the VampPrior's density (Tomczak & Welling 2018,
    arXiv:1705.07120).

    :param posteriors: a distribution with batch shape ``(K,)`` and event shape ``(D,)``
        (a guide's output at the pseudo-inputs).
    :param batch_shape: the batch shape of the mixture, e.g. ``(B,)``.

    ``log_prob(z)`` for ``z`` of shape ``(..., D)`` evaluates every component at ``z`` and
    takes ``logsumexp - log K``; it works for any guide whose distribution broadcasts a
    ``(..., K, D)`` value against its batch ``(K,)`` (diagonal and full-covariance
    Gaussians, and the flow guides, though their log density needs the flows' inverse).
    """

    arg_constraints = {}
    support = constraints.real_vector
    has_rsample = False

    def __init__(self, posteriors, batch_shape=(), validate_args=None):
        self.posteriors = posteriors
        self.num_components = posteriors.batch_shape[-1]
        super().__init__(torch.Size(batch_shape), posteriors.event_shape,
                         validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        """The same mixture with another batch shape."""
        return MixtureOfPosteriors(self.posteriors, batch_shape)

    def log_prob(self, value):
        """``log (1/K) sum_k q(value | u_k)``, shape ``value.shape[:-1]``."""
        return torch.logsumexp(self.component_log_probs(value), dim=-1) - \
            math.log(self.num_components)

    def component_log_probs(self, value):
        """``log q(value | u_k)`` for every k: shape ``value.shape[:-1] + (K,)``.

        For diagonal-Gaussian posteriors the sum over dimensions is computed as two matrix
        products (in float64, against cancellation), instead of materializing a
        ``(..., K, D)`` tensor: with K = 500 pseudo-inputs this is what makes a
        VampPrior's importance-weighted evaluation affordable.
        """
        k, d = self.num_components, self.event_shape[-1]
        base = getattr(self.posteriors, "base_dist", None)
        if isinstance(self.posteriors, torch.distributions.Independent) and \
                self.posteriors.reinterpreted_batch_ndims == 1 and \
                isinstance(base, torch.distributions.Normal) and base.loc.shape == (k, d):
            loc, scale = base.loc.double(), base.scale.double()
            precision = scale.pow(-2)
            const = -0.5 * (loc.pow(2) * precision).sum(-1) - scale.log().sum(-1) \
                - 0.5 * d * math.log(2 * math.pi)
            z = value.double()
            out = -0.5 * z.pow(2) @ precision.T + z @ (loc * precision).T + const
            return out.to(value.dtype)
        value = value.unsqueeze(-2).expand(value.shape[:-1] + (k, d))
        return self.posteriors.log_prob(value)

    def sample(self, sample_shape=torch.Size()):
        """Pick a component uniformly per draw, then sample it."""
        shape = torch.Size(sample_shape) + self.batch_shape
        with torch.no_grad():
            draws = self.posteriors.sample(shape)  # (*shape, K, D)
            index = torch.randint(self.num_components, shape, device=draws.device)
            return draws.gather(-2, index[..., None, None].expand(shape + (1, draws.shape[-1]))
                                ).squeeze(-2)


class VampPrior(nn.Module):
    """VampPrior: a mixture of the guide's posteriors at K learned pseudo-inputs,
    :math:`p(z) = \\frac{1}{K} \\sum_k q(z | u_k)` (Tomczak & Welling 2018,
    arXiv:1705.07120).

    The pseudo-inputs are ``sigmoid`` of free parameters, so they stay in (0, 1) like the
    images (as the paper's code does for binary and grey-level data); they start near 0.5,
    the raw values drawn from N(``init_mean``, ``init_std``^2) (the paper's code: -0.05 and
    0.01). The guide is shared, not copied: its weights appear once in ``vae.parameters()``.

    :param guide: the guide module (called with ``(K, *event_shape)`` inputs).
    :param tuple event_shape: shape of one datapoint.
    :param int num_pseudo: K.
    :param float init_mean: mean of the raw pseudo-inputs at initialization.
    :param float init_std: their standard deviation.
    :raises ValueError: if ``num_pseudo < 1`` or ``init_std < 0``.
    """

    def __init__(self, guide, event_shape, num_pseudo=500, init_mean=0.0, init_std=0.1):
        super().__init__()
        if int(num_pseudo) < 1:
            raise ValueError(f"num_pseudo must be at least 1, got {num_pseudo}")
        if float(init_std) < 0:
            raise ValueError(f"init_std must be at least 0, got {init_std}")
        self.guide = guide
        self.event_shape = tuple(event_shape)
        self.raw_pseudo_inputs = nn.Parameter(
            float(init_mean) + float(init_std) * torch.randn(int(num_pseudo), *self.event_shape))

    @classmethod
    def build(cls, ctx, num_pseudo=500, init_mean=0.0, init_std=0.1):
        """Build from a recipe; options ``num_pseudo``, ``init_mean``, ``init_std``.

        :raises ValueError: if the guide's density cannot be evaluated at arbitrary z.
        """
        if not getattr(ctx.guide, "invertible", True):
            raise ValueError(f"the VampPrior evaluates the guide's density at every z, which "
                             f"needs the inverse of its flow; "
                             f"{getattr(ctx.guide, 'description', type(ctx.guide).__name__)} has no "
                             "inverse. Use a guide with one: diagonal_normal, full_cov_normal, "
                             "iaf or spline")
        return cls(ctx.guide, ctx.event_shape, num_pseudo, init_mean, init_std)

    @property
    def pseudo_inputs(self):
        """The K pseudo-inputs, ``(K, *event_shape)``, values in (0, 1)."""
        return torch.sigmoid(self.raw_pseudo_inputs)

    def forward(self, batch_size):
        """Return the mixture with batch shape ``(batch_size,)``, event ``(D,)``."""
        return MixtureOfPosteriors(self.guide(self.pseudo_inputs), (int(batch_size),))


class FlowPrior(nn.Module):
    """A standard normal pushed through learned autoregressive flows (a masked
    autoregressive flow prior; Papamakarios et al. 2017, arXiv:1705.07057).

    Each step is the inverse of Pyro's ``AffineAutoregressive``, so the density of a z
    from the guide takes one pass per step; sampling from the prior (figures only) takes
    D passes per step. The latent dimensions are reversed between steps.

    :param int latent_dim: D.
    :param int num_flows: number of steps.
    :param flow_hidden: hidden sizes of each step's autoregressive network
        (default ``[max(4 D, 32)]``).
    :raises ValueError: if D or ``num_flows`` is below 1.
    """

    def __init__(self, latent_dim, num_flows=2, flow_hidden=None):
        super().__init__()
        if int(latent_dim) < 1 or int(num_flows) < 1:
            raise ValueError(f"latent_dim and num_flows must be positive, got {latent_dim} "
                             f"and {num_flows}")
        d = self.latent_dim = int(latent_dim)
        hidden = list(flow_hidden) if flow_hidden is not None else [max(4 * d, 32)]
        self.flows = nn.ModuleList([T.affine_autoregressive(d, hidden_dims=hidden)
                                    for _ in range(int(num_flows))])
        self.register_buffer("loc", torch.zeros(d))
        self.register_buffer("scale", torch.ones(d))
        self.register_buffer("reverse", torch.arange(d - 1, -1, -1))

    @classmethod
    def build(cls, ctx, num_flows=2, flow_hidden=None):
        """Build from a recipe; options ``num_flows`` and ``flow_hidden``."""
        return cls(ctx.latent_dim, num_flows, flow_hidden)

    def forward(self, batch_size):
        """Return the flow distribution with batch shape ``(batch_size,)``, event ``(D,)``."""
        shape = (int(batch_size), self.latent_dim)
        base = dist.Normal(self.loc.expand(shape), self.scale.expand(shape)).to_event(1)
        transforms = []
        for i, flow in enumerate(self.flows):
            if i > 0:
                transforms.append(T.Permute(self.reverse))
            transforms.append(flow.inv)
        return dist.TransformedDistribution(base, transforms)


class ConditionalNormalPrior(nn.Module):
    """A learned conditional prior :math:`p(z|y) = \\mathcal{N}(z; \\mu(y),
    \\mathrm{diag}\\,\\sigma(y)^2)`, an MLP of the context y (the "prior network" of the
    conditional VAE, Sohn et al. 2015, "Learning Structured Output Representation using
    Deep Conditional Generative Models", NeurIPS).

    :param int latent_dim: D.
    :param int context_dim: C, the size of y (e.g. the number of classes, one-hot).
    :param hidden: hidden sizes of the network (may be empty: a linear map of y).
    :param str activation: activation between hidden layers.
    :raises ValueError: if ``latent_dim < 1`` or ``context_dim < 1``.

    Shapes: ``prior(B, context=y)`` with y ``(..., B, C)`` -> batch ``(..., B)``, event ``(D,)``.
    """

    #: Called as ``prior(batch_size, context=y)``.
    conditional = True

    def __init__(self, latent_dim, context_dim, hidden=(), activation="softplus"):
        super().__init__()
        if int(latent_dim) < 1 or int(context_dim) < 1:
            raise ValueError(f"latent_dim and context_dim must be positive, got {latent_dim}, "
                             f"{context_dim}")
        self.latent_dim = int(latent_dim)
        self.context_dim = int(context_dim)
        self.net = MLP(self.context_dim, list(hidden), 2 * self.latent_dim, activation)

    @classmethod
    def build(cls, ctx, hidden=()):
        """Build from a recipe's context (option ``hidden``: the network's hidden sizes).

        :raises ConfigError: for a model without a context (``model.conditional``)."""
        if not ctx.context_dim:
            raise ConfigError("the conditional_normal prior p(z|y) needs a label: set "
                              "model.conditional = true")
        return cls(ctx.latent_dim, ctx.context_dim, hidden, ctx.activation)

    def forward(self, batch_size, context=None):
        """Return p(z | y) for the context ``y`` (``(..., batch_size, C)``).

        :raises ValueError: without a context.
        """
        if context is None:
            raise ValueError("ConditionalNormalPrior needs the context: prior(B, context=y)")
        out = self.net(context)
        loc, raw = out[..., :self.latent_dim], out[..., self.latent_dim:]
        return dist.Normal(loc, F.softplus(raw) + 1e-5).to_event(1)
