"""Guides q(z|x): amortized variational posteriors.

A guide is a :class:`torch.nn.Module`. Called with a batch ``x`` of shape
``(B, *event_shape)`` it returns a :class:`torch.distributions.Distribution` with batch
shape ``(B,)`` and event shape ``(latent_dim,)``.

Every guide has a classmethod ``build(ctx, **options)`` used by recipes: ``ctx`` is a
:class:`~pyro_vae.config.BuildContext` (event shape, latent size, hidden sizes,
activation) and the keyword arguments are the options a recipe may set in
``[model.guide_options]``; any other option is an error.

Flow guides push the diagonal Gaussian through Pyro's conditional transforms
(:mod:`pyro.distributions.transforms`) whose parameters depend on the encoder's last
hidden activations ``h`` (the context). Their samples come in one pass; their density at
their own samples uses the transforms' cache, so no inverse is computed in training.
"""

import torch
import torch.nn.functional as F
from torch import nn
import pyro.distributions as dist
import pyro.distributions.transforms as T
from .nets import flatten_event, make_encoder


#: Smallest standard deviation a Gaussian guide may output, for numerical stability.
MIN_SCALE = 1e-5


def checked_log_var_range(value):
    """``value`` as a ``(lo, hi)`` pair of floats (``None`` stays ``None``): the range a
    log-variance is clipped to (Tomczak & Welling 2018, arXiv:1705.07120, use [-6, 2]).

    :raises ValueError: unless it is two numbers with ``lo < hi``.
    """
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 2 \
            or not float(value[0]) < float(value[1]):
        raise ValueError(f"log_var_range must be [lo, hi] with lo < hi, got {value!r}")
    return float(value[0]), float(value[1])


class DiagonalNormalGuide(nn.Module):
    """A diagonal Gaussian :math:`q(z|x) = \\mathcal{N}(z; \\mu(x), \\mathrm{diag}\\,\\sigma(x)^2)`.

    The encoder is an MLP ``prod(event_shape) -> hidden... -> 2 D`` whose output is split
    into the mean and a pre-softplus scale (Kingma & Welling 2013, arXiv:1312.6114).

    :param tuple event_shape: shape of one datapoint, e.g. ``(784,)``.
    :param int latent_dim: D.
    :param hidden: hidden layer sizes of the encoder.
    :param str activation: activation between hidden layers (see :data:`pyro_vae.nets.ACTIVATIONS`).
    :param str network: ``"mlp"`` or ``"conv"`` (a :class:`~pyro_vae.nets.ConvEncoder`).
    :param tuple image_shape: ``(C, H, W)``, needed by ``"conv"``.
    :param log_var_range: ``(lo, hi)``: read the encoder's second half as the log-variance,
        clipped to ``[lo, hi]`` (a hardtanh), so ``scale = exp(clip(raw, lo, hi) / 2)``, as
        the VampPrior paper's networks do with ``[-6, 2]`` (Tomczak & Welling 2018,
        arXiv:1705.07120); ``None`` (default): ``scale = softplus(raw) + 1e-5``.
    :raises ValueError: for a ``log_var_range`` that is not two numbers ``lo < hi``.

    Shapes: ``x`` ``(B, *event_shape)`` -> distribution with batch ``(B,)``, event ``(D,)``.
    """

    #: Whether q(z|x) can be evaluated at any z (not only at its own samples).
    invertible = True

    def __init__(self, event_shape, latent_dim, hidden=(400,), activation="softplus",
                 network="mlp", image_shape=None, *, log_var_range=None):
        super().__init__()
        self.log_var_range = checked_log_var_range(log_var_range)
        self.event_shape = tuple(event_shape)
        self.latent_dim = int(latent_dim)
        self.encoder = make_encoder(network, self.event_shape, image_shape, hidden,
                                    self.num_outputs(), activation)

    @classmethod
    def build(cls, ctx, log_var_range=None):
        """Build from a recipe's :class:`~pyro_vae.config.BuildContext`; option
        ``log_var_range`` (see the class)."""
        return cls(ctx.event_shape, ctx.latent_dim, ctx.hidden, ctx.activation, **ctx.networks,
                   log_var_range=log_var_range)

    #: Whether the Gaussian can be combined with a Gaussian prior conditional by precision
    #: weighting (top-down inference, :class:`~pyro_vae.hierarchy.LadderGuide`).
    precision_weighting = True

    def num_outputs(self):
        """Size of the encoder's output: a mean and a scale per latent dimension."""
        return 2 * self.latent_dim

    @property
    def feature_size(self):
        """Size of the encoder's last hidden layer ``h`` (see :meth:`encode`)."""
        return self.encoder.feature_size

    def encode(self, x):
        """Run the encoder: ``(h, params)``, the last hidden activations ``(..., H)`` and the
        output ``(..., num_outputs())``, for ``x`` of shape ``(..., *event_shape)``."""
        return self.encoder.forward_with_features(flatten_event(x, self.event_shape))

    def base(self, params, prior=None):
        """The diagonal Gaussian given the encoder's output ``(..., 2 D)``; with ``prior``
        (a diagonal Gaussian p(z | parent)), its precision-weighted combination with it
        (see :func:`precision_weighted`)."""
        loc, raw_scale = params[..., :self.latent_dim], params[..., self.latent_dim:]
        if self.log_var_range is None:
            scale = F.softplus(raw_scale) + MIN_SCALE
        else:
            scale = torch.exp(0.5 * raw_scale.clamp(*self.log_var_range))
        if prior is not None:
            loc, scale = precision_weighted(loc, scale, prior)
        return dist.Normal(loc, scale).to_event(1)

    def posterior(self, h, params, prior=None):
        """q(z | .) from the encoder's features ``h`` and output ``params`` (as returned by
        :meth:`encode`), optionally combined with a Gaussian ``prior`` (see :meth:`base`)."""
        return self.base(params, prior)

    def forward(self, x):
        """Return q(z|x) for a batch ``x`` of shape ``(B, *event_shape)``."""
        return self.base(self.encoder(flatten_event(x, self.event_shape)))


def precision_weighted(loc, scale, prior):
    """Combine a Gaussian ``N(loc, scale^2)`` with a diagonal Gaussian ``prior`` by adding
    precisions: :math:`\\sigma^2 = (\\hat\\sigma^{-2} + \\sigma_p^{-2})^{-1}`,
    :math:`\\mu = \\sigma^2 (\\hat\\mu \\hat\\sigma^{-2} + \\mu_p \\sigma_p^{-2})` (the Ladder
    VAE's top-down inference, Sonderby et al. 2016, arXiv:1602.02282).

    :param loc: ``(..., D)``; broadcasts against the prior's batch (e.g. particle dims).
    :param scale: ``(..., D)``, positive.
    :param prior: ``Independent(Normal, 1)`` with event ``(D,)``.
    :returns: ``(loc, scale)`` of the combination, shape broadcast of the inputs.
    :raises ValueError: if ``prior`` is not a diagonal Gaussian.
    """
    base = getattr(prior, "base_dist", None)
    if not isinstance(base, torch.distributions.Normal) or \
            getattr(prior, "reinterpreted_batch_ndims", None) != 1:
        raise ValueError(f"precision weighting needs a diagonal Gaussian prior conditional, got "
                         f"{type(prior).__name__}")
    precision_q, precision_p = scale.pow(-2), base.scale.pow(-2)
    variance = 1.0 / (precision_q + precision_p)
    return (loc * precision_q + base.loc * precision_p) * variance, variance.sqrt()


class FullCovNormalGuide(DiagonalNormalGuide):
    """A full-covariance Gaussian :math:`q(z|x) = \\mathcal{N}(z; \\mu(x), L(x) L(x)^T)`.

    The encoder outputs the mean and the ``D (D + 1) / 2`` entries of a lower-triangular
    scale ``L = diag(sigma) R``: softplus standard deviations ``sigma`` and ``R`` the rows
    of ``I + M`` (``M`` strictly lower) scaled to unit length, so that ``sigma`` are the
    marginal standard deviations and ``M`` sets the correlations (a Cholesky
    parameterization; Kingma & Welling 2013, arXiv:1312.6114).

    Shapes: as :class:`DiagonalNormalGuide`.
    """

    @classmethod
    def build(cls, ctx):
        """Build from a recipe's :class:`~pyro_vae.config.BuildContext` (no options)."""
        return cls(ctx.event_shape, ctx.latent_dim, ctx.hidden, ctx.activation, **ctx.networks)

    def __init__(self, event_shape, latent_dim, hidden=(400,), activation="softplus", **networks):
        super().__init__(event_shape, latent_dim, hidden, activation, **networks)
        rows, cols = torch.tril_indices(self.latent_dim, self.latent_dim)
        self.register_buffer("tril_rows", rows)
        self.register_buffer("tril_cols", cols)
        # start from a diagonal covariance: with the default initialization the
        # D (D - 1) / 2 off-diagonal entries make q(z|x) so broad at first that the decoder
        # learns to ignore z (all units collapsed on digits in 100 epochs)
        off_diagonal = self.latent_dim + torch.nonzero(rows != cols).squeeze(-1)
        with torch.no_grad():
            self.encoder.output_layer.weight[off_diagonal] = 0.0
            self.encoder.output_layer.bias[off_diagonal] = 0.0

    #: Factor on the encoder's correlation outputs ``M``. Adam moves every weight by about
    #: the learning rate whatever its gradient, and the D (D - 1) / 2 weakly determined
    #: correlation outputs then wander: unscaled, the guide lost about 2 nats to the
    #: diagonal one on digits (-26.6 against -24.8 after 100 epochs, 25 against 43 active
    #: units); scaled by 0.1 it gained (-24.45, 48 active units).
    correlation_scale = 0.1

    #: Top-down inference combines diagonal Gaussians only.
    precision_weighting = False

    def num_outputs(self):
        """A mean per dimension and the lower triangle of the scale."""
        d = self.latent_dim
        return d + d * (d + 1) // 2

    def base(self, params, prior=None):
        """The full-covariance Gaussian given the encoder's output.

        :raises ValueError: if a ``prior`` to combine with is given (not supported)."""
        if prior is not None:
            raise ValueError("the full-covariance guide cannot be combined with a prior "
                             "conditional; use it with bottom-up inference")
        d = self.latent_dim
        loc, entries = params[..., :d], params[..., d:]
        scale_tril = params.new_zeros(params.shape[:-1] + (d, d))
        scale_tril[..., self.tril_rows, self.tril_cols] = entries
        raw_diag = torch.diagonal(scale_tril, dim1=-2, dim2=-1)
        sigma = F.softplus(raw_diag) + MIN_SCALE
        # L = diag(sigma) R with R = I + M (M strictly lower) normalized row by row: then
        # Var(z_i) = sigma_i^2 exactly and M shapes only the correlations
        rows = self.correlation_scale * (scale_tril - torch.diag_embed(raw_diag)) + \
            torch.eye(d, device=params.device, dtype=params.dtype)
        rows = rows / rows.norm(dim=-1, keepdim=True)
        return dist.MultivariateNormal(loc, scale_tril=sigma.unsqueeze(-1) * rows)


def _iaf(latent_dim, context_dim, hidden, stable=True):
    return T.conditional_affine_autoregressive(latent_dim, context_dim, hidden_dims=hidden,
                                               stable=stable)


def _planar(latent_dim, context_dim, hidden):
    return T.conditional_planar(latent_dim, context_dim, hidden_dims=hidden)


def _radial(latent_dim, context_dim, hidden):
    return T.conditional_radial(latent_dim, context_dim, hidden_dims=hidden)


#: The most flows a flow guide takes (the published IAF and Sylvester guides use <= 16).
MAX_FLOWS = 1000


def _spline(latent_dim, context_dim, hidden, count_bins=8):
    return T.conditional_spline_autoregressive(latent_dim, context_dim, hidden_dims=hidden,
                                               count_bins=count_bins)


class FlowGuide(DiagonalNormalGuide):
    """A diagonal Gaussian pushed through ``num_flows`` conditional Pyro transforms.

    :math:`z_0 \\sim \\mathcal{N}(\\mu(x), \\sigma(x)^2)`, :math:`z = f_K \\circ \\dots
    \\circ f_1(z_0; h(x))`, where ``h`` is the encoder's last hidden layer. Subclasses
    name the transform (:attr:`flow`); autoregressive ones get a fixed reversal of the
    latent dimensions between steps, so every dimension conditions on every other.

    :param int num_flows: K.
    :param flow_hidden: hidden sizes of each transform's conditioning network (default
        ``[max(2 D, 32)]``).
    :raises ValueError: if ``num_flows < 1`` or the encoder has no hidden layer (the
        context ``h`` would be the raw input).
    """

    #: Factory ``(latent_dim, context_dim, hidden, **kw) -> ConditionalTransformModule``.
    flow = None
    #: Whether the transform is autoregressive (then permute between steps).
    autoregressive = False
    #: Steps when a recipe does not say.
    default_num_flows = 2

    def __init__(self, event_shape, latent_dim, hidden=(400,), activation="softplus",
                 num_flows=2, flow_hidden=None, network="mlp", image_shape=None, **flow_kwargs):
        super().__init__(event_shape, latent_dim, hidden, activation, network, image_shape)
        if not 1 <= int(num_flows) <= MAX_FLOWS:
            raise ValueError(f"num_flows must lie in 1..{MAX_FLOWS}, got {num_flows} (the "
                             "flow guides of the literature use up to a few dozen)")
        if not list(hidden):
            raise ValueError("a flow guide conditions on the encoder's last hidden layer; "
                             "give the encoder at least one hidden layer")
        d = self.latent_dim
        flow_hidden = list(flow_hidden) if flow_hidden is not None else [max(2 * d, 32)]
        context = self.encoder.feature_size
        self.flows = nn.ModuleList([type(self).flow(d, context, flow_hidden, **flow_kwargs)
                                    for _ in range(int(num_flows))])
        self.register_buffer("reverse", torch.arange(d - 1, -1, -1))

    @classmethod
    def build(cls, ctx, num_flows=None, flow_hidden=None):
        """Build from a recipe; options ``num_flows`` (default :attr:`default_num_flows`)
        and ``flow_hidden``."""
        return cls(ctx.event_shape, ctx.latent_dim, ctx.hidden, ctx.activation,
                   num_flows=cls.default_num_flows if num_flows is None else num_flows,
                   flow_hidden=flow_hidden, **ctx.networks)

    def posterior(self, h, params, prior=None):
        """The base Gaussian (combined with ``prior`` when given, see
        :meth:`DiagonalNormalGuide.base`) pushed through the flows conditioned on ``h``."""
        transforms = []
        for i, flow in enumerate(self.flows):
            if i > 0 and self.autoregressive:
                transforms.append(T.Permute(self.reverse))
            transforms.append(flow.condition(h))
        return dist.TransformedDistribution(self.base(params, prior), transforms)

    def forward(self, x):
        """Return q(z|x), a :class:`~pyro.distributions.TransformedDistribution`."""
        return self.posterior(*self.encode(x))


class IAFGuide(FlowGuide):
    """Inverse autoregressive flow (Kingma et al. 2016, arXiv:1606.04934): conditional
    affine-autoregressive steps in their numerically stable, sigmoid-gated form
    (``stable=True`` in Pyro's :class:`~pyro.distributions.transforms.AffineAutoregressive`)."""

    flow = staticmethod(_iaf)
    autoregressive = True


class PlanarGuide(FlowGuide):
    """Amortized planar flow (Rezende & Mohamed 2015, arXiv:1505.05770): each step's
    parameters come from ``h`` (Pyro's ``ConditionalPlanar``)."""

    flow = staticmethod(_planar)
    default_num_flows = 8
    #: Planar and radial steps have no closed-form inverse: q(z|x) is known only at its
    #: own samples (through the transforms' cache).
    invertible = False


class RadialGuide(PlanarGuide):
    """Amortized radial flow (Rezende & Mohamed 2015, arXiv:1505.05770; Pyro's
    ``ConditionalRadial``)."""

    flow = staticmethod(_radial)


class SplineGuide(FlowGuide):
    """Conditional neural spline flow (Durkan et al. 2019, arXiv:1906.04032): monotone
    rational-quadratic splines whose knots come autoregressively from ``z`` and ``h``
    (Pyro's ``ConditionalSplineAutoregressive``).

    Used instead of Sylvester flows (van den Berg et al. 2018, arXiv:1803.05649): Pyro's
    ``Sylvester`` transform is not conditional, so it cannot be amortized through Pyro's
    transforms without writing the flow ourselves.
    """

    flow = staticmethod(_spline)
    autoregressive = True

    @classmethod
    def build(cls, ctx, num_flows=None, flow_hidden=None, count_bins=8):
        """Build from a recipe; options ``num_flows``, ``flow_hidden``, ``count_bins``."""
        return cls(ctx.event_shape, ctx.latent_dim, ctx.hidden, ctx.activation,
                   num_flows=cls.default_num_flows if num_flows is None else num_flows,
                   flow_hidden=flow_hidden, count_bins=count_bins, **ctx.networks)
