"""Categorical latents: a prior and a guide over codes of N variables of K classes each.

The latent site ``"z"`` holds a :class:`~pyro_vae.distributions.CategoricalCode`: N one-hot
blocks of K side by side, batch ``(B,)``, event ``(N * K,)``, so the likelihood's decoder
reads it as any latent vector of ``latent_dim = N * K`` values (Jang et al. 2017,
Categorical Reparameterization with Gumbel-Softmax, arXiv:1611.01144; Rolfe 2017,
Discrete Variational Autoencoders, arXiv:1609.02200). The guide samples the code exactly,
so the importance-weighted bound of :func:`pyro_vae.infer.log_likelihood` is a valid bound
on log p(x); the training objectives of :mod:`pyro_vae.infer.discrete_objectives` choose the
gradient estimator (Gumbel-softmax relaxation, exact enumeration, score function).

A recipe names ``guide = "categorical"`` and ``prior = "categorical"`` with
``latent_dim = N * K`` and ``num_classes = K`` in ``[model.guide_options]``.
"""

import torch
from torch import nn

from .distributions import CategoricalCode
from .nets import flatten_event, make_encoder


def code_sizes(latent_dim, num_classes):
    """``(N, K)`` for a code of ``latent_dim = N * K`` values.

    :raises ValueError: unless ``num_classes`` is at least 2 and divides ``latent_dim``.
    """
    k, d = int(num_classes), int(latent_dim)
    if k < 2 or d % k or d < k:
        raise ValueError(f"a categorical code needs latent_dim = N * num_classes with "
                         f"num_classes >= 2; got latent_dim {d} and num_classes {k} (e.g. "
                         f"latent_dim = {20 * max(k, 2)} for 20 variables of {max(k, 2)} classes)")
    return d // k, k


class CategoricalGuide(nn.Module):
    """An amortized categorical posterior :math:`q(z|x) = \\prod_n
    \\mathrm{Cat}(z_n; \\mathrm{softmax}(f_n(x)))` over N variables of K classes (Jang et al.
    2017, arXiv:1611.01144).

    The encoder (``network``: MLP, gated or convolutional) maps x to ``N * K`` logits.

    :param tuple event_shape: shape of one datapoint.
    :param int latent_dim: ``N * K``.
    :param int num_classes: K.
    :param hidden: hidden sizes of the encoder.
    :param str activation: activation name.
    :param str network: ``"mlp"``, ``"gated"`` or ``"conv"``.
    :param tuple image_shape: ``(C, H, W)`` for ``"conv"``.
    :raises ValueError: if K does not divide ``latent_dim`` (see :func:`code_sizes`).

    Shapes: ``x`` ``(B, *event_shape)`` -> :class:`~pyro_vae.distributions.CategoricalCode`
    with batch ``(B,)``, event ``(N * K,)``.
    """

    #: q(z|x) has a density at any code.
    invertible = True
    #: A categorical latent (the prior must be one too).
    categorical = True

    def __init__(self, event_shape, latent_dim, num_classes=10, hidden=(400,),
                 activation="softplus", network="mlp", image_shape=None):
        super().__init__()
        self.num_variables, self.num_classes = code_sizes(latent_dim, num_classes)
        self.event_shape = tuple(event_shape)
        self.latent_dim = int(latent_dim)
        self.encoder = make_encoder(network, self.event_shape, image_shape, hidden,
                                    self.latent_dim, activation)

    @classmethod
    def build(cls, ctx, num_classes=10):
        """Build from a recipe's context; option ``num_classes`` (K)."""
        return cls(ctx.event_shape, ctx.latent_dim, num_classes, ctx.hidden, ctx.activation,
                   **ctx.networks)

    def forward(self, x):
        """q(z|x) for ``x`` of shape ``(..., *event_shape)``."""
        logits = self.encoder(flatten_event(x, self.event_shape))
        return CategoricalCode(logits.reshape(logits.shape[:-1] + (self.num_variables,
                                                                   self.num_classes)))


class CategoricalPrior(nn.Module):
    """The prior over codes: N independent categorical variables of K classes, uniform
    (``learned = false``, as Jang et al. 2017, arXiv:1611.01144) or with learned logits.

    :param int latent_dim: ``N * K``.
    :param int num_classes: K.
    :param bool learned: learn the class probabilities of each variable.
    :raises ValueError: if K does not divide ``latent_dim``.
    """

    #: A categorical latent (the guide must be one too).
    categorical = True

    def __init__(self, latent_dim, num_classes=10, learned=False):
        super().__init__()
        self.num_variables, self.num_classes = code_sizes(latent_dim, num_classes)
        self.latent_dim = int(latent_dim)
        logits = torch.zeros(self.num_variables, self.num_classes)
        if learned:
            self.logits = nn.Parameter(logits)
        else:
            self.register_buffer("logits", logits)

    @classmethod
    def build(cls, ctx, learned=False):
        """Build from a recipe's context; K is the guide's (``ctx.guide.num_classes``).

        :raises ValueError: if the guide is not categorical.
        """
        if not getattr(ctx.guide, "categorical", False):
            raise ValueError("the categorical prior needs the categorical guide (guide = "
                             "'categorical'); a Gaussian or flow guide has no codes")
        return cls(ctx.latent_dim, ctx.guide.num_classes, learned)

    def forward(self, batch_size):
        """p(z) with batch ``(batch_size,)``, event ``(N * K,)``."""
        return CategoricalCode(self.logits.expand(int(batch_size), *self.logits.shape))


@torch.no_grad()
def code_traversal(vae, x, variables=None):
    """Decoded images of one datapoint's most probable code with one categorical variable
    changed at a time: row n sets variable n to each of the K classes in turn, the others
    kept.

    :param vae: a :class:`~pyro_vae.vae.VAE` with a :class:`CategoricalGuide`.
    :param torch.Tensor x: one datapoint, shape ``(1, *event_shape)``.
    :param variables: which variables (rows), default all N.
    :returns: the likelihood's means, shape ``(rows, K, *event_shape)``.
    :raises ValueError: if the guide is not categorical.
    """
    guide = vae.posterior
    if not getattr(guide, "categorical", False):
        raise ValueError("a code traversal needs a categorical guide")
    n, k = guide.num_variables, guide.num_classes
    variables = list(range(n)) if variables is None else list(variables)
    q = guide(x)
    index = q.logits.argmax(-1)[0]  # (N,)
    rows = index.expand(len(variables), k, n).clone()
    for row, v in enumerate(variables):
        rows[row, :, v] = torch.arange(k, device=rows.device)
    codes = q.one_hot(rows)  # (rows, K, N * K)
    return vae.likelihood(codes).mean
