"""The VAE: a Pyro model (prior + likelihood) and a Pyro guide (encoder posterior).

``VAE(prior, guide, likelihood)`` composes three modules and knows nothing of inference:
``vae.model`` and ``vae.guide`` hold only ``pyro.module``, ``pyro.plate`` and
``pyro.sample``, so any ``pyro.infer`` algorithm takes them unchanged::

    svi = pyro.infer.SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}),
                         pyro.infer.Trace_ELBO())

Sites: ``"z"`` (latent, batch ``(B,)``, event ``(D,)``) and ``"x"`` (observed, batch
``(B,)``, event ``event_shape``), both inside ``pyro.plate("data", B, dim=-1)``. The
leftmost dims are free for an outer particle plate.

Conditioning (Sohn et al. 2015, "Learning Structured Output Representation using Deep
Conditional Generative Models", NeurIPS): with ``context_dim = C > 0``, ``model(x, y)``
and ``guide(x, y)`` take a context ``y`` (class labels ``(B,)``, one-hot encoded when
``num_classes`` is set, or any ``(B, C)`` tensor); the guide's network reads ``x`` and
``y`` side by side, the likelihood's decoder ``z`` and ``y``, and a conditional prior
(``prior.conditional``) is called as ``prior(B, context=y)``.

Semi-supervised (M2, Kingma et al. 2014, arXiv:1406.5298): with a ``classifier`` module
``q(y|x)``, the label is a site ``"y"`` of the model (``OneHotCategorical`` with uniform
probabilities, inside the data plate): observed when ``model(x, y)`` gets labels, latent
(sampled by the guide from ``classifier(x)``, or summed out by enumeration with
``pyro.infer.config_enumerate`` and ``TraceEnum_ELBO``) when it gets ``y=None``.
"""

import pyro
import torch
from torch import nn

from .distributions import CategoricalCode, GaussianProposal


def point_estimate(q):
    """``q.mean`` where it exists (for a categorical code, its most probable code, a point of
    its support); for a transformed distribution, its base distribution's point estimate
    pushed through the transforms; otherwise one sample."""
    if isinstance(q, CategoricalCode):
        return q.mode
    try:
        return q.mean
    except NotImplementedError:
        pass
    if isinstance(q, torch.distributions.TransformedDistribution):
        z = point_estimate(q.base_dist)
        for t in q.transforms:
            z = t(z)
        return z
    return q.sample()


class VAE(nn.Module):
    """A variational autoencoder (Kingma & Welling 2013, arXiv:1312.6114; Rezende et al.
    2014, arXiv:1401.4082) as a Pyro model/guide pair.

    :param prior: a module; ``prior(B)`` returns p(z) with batch ``(B,)``, event ``(D,)``.
    :param guide: a module; ``guide(x)`` returns q(z|x) with batch ``(B,)``, event ``(D,)``.
    :param likelihood: a module; ``likelihood(z)`` returns p(x|z) with event ``event_shape``.
    :param tuple event_shape: shape of one datapoint; taken from ``likelihood.event_shape``
        when not given.
    :param str name: prefix of the parameter names in Pyro's param store.
    :param int context_dim: C, the size of the context y (0: unconditional). The guide must
        then be built for inputs of ``prod(event_shape) + C`` values and the likelihood for
        latents of ``D + C``.
    :param int num_classes: when set, y is given as integer labels ``(B,)`` and one-hot
        encoded (``context_dim`` must equal it).
    :param classifier: a module, ``classifier(x)`` returning logits ``(B, num_classes)``:
        makes y a latent site ``"y"`` (M2).
    :raises ValueError: if the event shape is unknown, the components' ``latent_dim``
        attributes (where they have one) differ, or the context settings disagree.

    The modules are reachable as ``vae.prior``, ``vae.posterior`` (the guide module; the
    name ``guide`` is the Pyro guide method) and ``vae.likelihood``.
    """

    def __init__(self, prior, guide, likelihood, event_shape=None, name="vae", context_dim=0,
                 num_classes=None, classifier=None):
        super().__init__()
        self.prior = prior
        self.posterior = guide
        self.likelihood = likelihood
        self.context_dim = int(context_dim)
        self.num_classes = None if num_classes is None else int(num_classes)
        self.classifier = classifier
        if self.num_classes is not None and self.num_classes != self.context_dim:
            raise ValueError(f"num_classes ({num_classes}) must equal context_dim "
                             f"({context_dim}): labels are one-hot encoded")
        if classifier is not None and self.num_classes is None:
            raise ValueError("a classifier q(y|x) needs num_classes")
        if event_shape is None:
            event_shape = getattr(likelihood, "event_shape", None)
        if event_shape is None:
            raise ValueError("event_shape is unknown: pass VAE(..., event_shape=(784,))")
        self.event_shape = tuple(int(s) for s in event_shape)
        self.name = name
        self.check_latent_sizes()

    def check_latent_sizes(self):
        """Check that the components' ``latent_dim`` attributes (where they have one) agree.

        :raises ValueError: naming each component's size.
        """
        sizes = {role: getattr(module, "latent_dim", None) for role, module in
                 (("prior", self.prior), ("guide", self.posterior),
                  ("likelihood", self.likelihood))}
        if sizes["likelihood"] is not None:  # its decoder reads z and the context
            sizes["likelihood"] -= self.context_dim
        known = {role: d for role, d in sizes.items() if d is not None}
        if len(set(known.values())) > 1:
            raise ValueError(f"the components disagree on the latent size: {known}; build "
                             "them with the same latent_dim")

    def register(self, *roles):
        """``pyro.module`` for the named submodules (``"prior"``, ``"posterior"`` (the guide
        module), ``"likelihood"``, ...), named ``<name>.<role>``: their parameters are
        registered in Pyro's param store, which Pyro's optimizers (``SVI`` with
        ``pyro.optim``) read."""
        for role in roles:
            pyro.module(f"{self.name}.{'guide' if role == 'posterior' else role}",
                        getattr(self, role))

    def proposal(self):
        """The Pyro guide with which to estimate log p(x) by importance sampling: the guide
        itself (``self.guide``), or, when the guide module is a point mass
        (``posterior.point_mass``, e.g. :class:`~pyro_vae.point_mass.DeltaGuide`), a
        :class:`~pyro_vae.distributions.GaussianProposal` around its point with standard
        deviation ``posterior.eval_scale``, whose ``description`` says so. Takes the same
        arguments as :meth:`guide`; call ``self.eval()`` first for an evaluation."""
        if getattr(self.posterior, "point_mass", False):
            return GaussianProposal(self.guide, self.posterior.eval_scale)
        return self.guide

    def check_input(self, x):
        """Check that ``x`` has shape ``(B, *event_shape)``; return ``B``.

        :raises ValueError: naming the expected and the actual shape.
        """
        if x.dim() != len(self.event_shape) + 1 or tuple(x.shape[1:]) != self.event_shape:
            expected = ", ".join(["B"] + [str(s) for s in self.event_shape])
            raise ValueError(
                f"expected x of shape ({expected}), got {tuple(x.shape)}; "
                "the network was built for that datapoint shape"
            )
        return x.shape[0]

    @property
    def conditional(self):
        """Whether ``model`` and ``guide`` need the context y (a CVAE; an M2 model's y is
        optional)."""
        return self.context_dim > 0 and self.classifier is None

    @property
    def semi_supervised(self):
        """Whether y is a site of the model (M2)."""
        return self.classifier is not None

    def context(self, y, batch_size):
        """The context as the networks read it, ``(B, C)`` floats: one-hot labels when
        ``num_classes`` is set; ``None`` for an unconditional VAE.

        :raises ValueError: for a missing context, labels outside ``[0, num_classes)`` or a
            context of the wrong shape.
        """
        if self.context_dim == 0:
            if y is not None:
                raise ValueError("this VAE is unconditional (context_dim = 0) but got y")
            return None
        if y is None:
            raise ValueError(f"this VAE is conditional: pass y ({self.context_dim} values or a "
                             "label per datapoint), e.g. vae.model(x, y)")
        if self.num_classes is not None and not y.is_floating_point():
            if y.shape != (batch_size,) or y.min() < 0 or y.max() >= self.num_classes:
                raise ValueError(f"expected {batch_size} labels in [0, {self.num_classes}), got "
                                 f"shape {tuple(y.shape)}")
            return torch.nn.functional.one_hot(y, self.num_classes).float()
        if y.shape[-1] != self.context_dim or y.shape[0] != batch_size:
            raise ValueError(f"expected a context of shape ({batch_size}, {self.context_dim}), "
                             f"got {tuple(y.shape)}")
        return y

    def _prior(self, batch_size, y):
        if getattr(self.prior, "conditional", False):
            return self.prior(batch_size, context=y)
        return self.prior(batch_size)

    def _label_prior(self, batch_size, device):
        probs = torch.full((batch_size, self.num_classes), 1.0 / self.num_classes, device=device)
        return pyro.distributions.OneHotCategorical(probs=probs)

    def model(self, x, y=None):
        """The generative model p(z) p(x|z) with ``x`` observed (p(z|y) p(x|z,y) with a
        context; p(y) p(z) p(x|y,z) for M2, y observed when given).

        :param torch.Tensor x: a batch, shape ``(B, *event_shape)``.
        :param y: the context or labels (see :meth:`context`).
        :returns: the latent sample ``z`` (leading particle dims, then ``(B, D)``).
        """
        batch_size = self.check_input(x)
        self.register("prior", "likelihood")
        with pyro.plate("data", batch_size, dim=-1):
            if self.semi_supervised:
                obs = None if y is None else self.context(y, batch_size)
                y = pyro.sample("y", self._label_prior(batch_size, x.device), obs=obs)
            else:
                y = self.context(y, batch_size)
            z = pyro.sample("z", self._prior(batch_size, y))
            pyro.sample("x", self.likelihood(join(z, y)), obs=x)
        return z

    def guide(self, x, y=None):
        """The amortized variational posterior q(z|x) (q(z|x,y) with a context; for M2
        q(y|x) q(z|x,y), with y not sampled when given).

        :param torch.Tensor x: a batch, shape ``(B, *event_shape)``.
        :param y: the context or labels (see :meth:`context`).
        :returns: the latent sample ``z``.
        """
        batch_size = self.check_input(x)
        self.register("posterior", *(["classifier"] if self.semi_supervised else []))
        with pyro.plate("data", batch_size, dim=-1):
            if self.semi_supervised and y is None:
                y = pyro.sample("y", self.label_posterior(x))
            else:
                y = self.context(y, batch_size)
            return pyro.sample("z", self.posterior(self.encoder_input(x, y)))

    def label_posterior(self, x):
        """q(y|x) of M2: ``OneHotCategorical`` with batch ``(B,)``, event ``(num_classes,)``."""
        return pyro.distributions.OneHotCategorical(logits=self.classifier(self._flat(x)))

    def _flat(self, x):
        return x.reshape(*x.shape[:x.dim() - len(self.event_shape)], -1)

    def encoder_input(self, x, y):
        """What the guide's network reads: ``x``, or with a context ``x`` flattened and
        ``y`` beside it, broadcast over leading (particle, enumeration) dims."""
        if y is None:
            return x
        return join(self._flat(x), y)

    def _point_context(self, x, y):
        if self.semi_supervised and y is None:  # M2: the classifier's most probable label
            logits = self.classifier(self._flat(x))
            return torch.nn.functional.one_hot(logits.argmax(-1), self.num_classes).float()
        return self.context(y, x.shape[0])

    def reconstruct(self, x, y=None):
        """Decode a point estimate of the latent: the mean of p(x | z_hat), shape
        ``(B, *event_shape)``. ``z_hat`` is the guide's mean, or for a flow guide (whose
        mean has no closed form) the base distribution's mean pushed through the flow.
        With a context, ``y`` is needed (M2: the classifier's label when not given)."""
        self.check_input(x)
        y = self._point_context(x, y)
        return self.likelihood(join(point_estimate(self.posterior(self.encoder_input(x, y))),
                                    y)).mean

    @torch.no_grad()
    def sample(self, num_samples, temperature=1.0, y=None):
        """Draw z from the prior and return the likelihood's mean, shape ``(n, *event_shape)``
        (without gradients: for figures).

        :param float temperature: scale of the prior's standard deviation (below 1: more
            typical, less varied samples; Kingma & Dhariwal 2018, arXiv:1807.03039); needs
            a Gaussian prior.
        :param y: with a context: labels ``(n,)`` or a context ``(n, C)``; default, labels
            ``0, 1, ..., num_classes - 1`` in turn.
        :raises ValueError: for a temperature other than 1 with a non-Gaussian prior, or a
            conditional VAE without ``num_classes`` and without ``y``.
        """
        if self.context_dim and y is None:
            if self.num_classes is None:
                raise ValueError("this VAE is conditional: pass y, a (n, C) context")
            device = next(self.parameters()).device
            y = torch.arange(num_samples, device=device) % self.num_classes
        y = self.context(y, num_samples) if self.context_dim else None
        z = draw(self._prior(num_samples, y), temperature)
        return self.likelihood(join(z, y)).mean


def join(a, b):
    """``a`` and ``b`` side by side along the last dim, broadcast over the leading dims
    (``b`` may be ``None``: then ``a``)."""
    if b is None:
        return a
    shape = torch.broadcast_shapes(a.shape[:-1], b.shape[:-1])
    return torch.cat([a.expand(*shape, a.shape[-1]), b.expand(*shape, b.shape[-1])], -1)


def draw(d, temperature=1.0):
    """One sample of ``d``; with ``temperature`` T != 1, of the same diagonal Gaussian with
    its standard deviation times T.

    :raises ValueError: if T != 1 and ``d`` is not a diagonal Gaussian, or T <= 0.
    """
    if temperature == 1.0:
        return d.sample()
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    base = getattr(d, "base_dist", d)
    if not isinstance(base, torch.distributions.Normal):
        raise ValueError(f"a temperature needs a Gaussian prior (standard normal, Gaussian "
                         f"conditionals); {type(base).__name__} has no scale to temper")
    return base.loc + temperature * base.scale * torch.randn_like(base.loc)
