"""Distributions of our own: proposals for guides without a density, and categorical codes.

Categorical codes: :class:`CategoricalCode` (N categorical variables of K classes as one
latent of N one-hot blocks) and its Gumbel-softmax relaxation :class:`RelaxedCategoricalCode`.

Proposals:
A point-mass guide :math:`q(z|x) = \\delta(z - f(x))` (:class:`~pyro_vae.point_mass.DeltaGuide`)
trains an amortized MAP autoencoder, but it cannot be the proposal of an importance-weighted
estimate of log p(x): it has no density away from its point. :class:`GaussianProposal`
wraps such a guide into one that has: a Pyro guide whose point-mass latent sites are
Gaussians around the point. Evaluation code asks for it explicitly (e.g.
:meth:`pyro_vae.vae.VAE.proposal`); the guide itself stays a point mass in every mode.
"""

import torch
from torch.distributions import constraints
from pyro.poutine.messenger import Messenger

import pyro.distributions as dist


class _PointMassesToGaussians(Messenger):
    """Replaces the distribution of every latent (not observed) site that is a
    :class:`~pyro.distributions.Delta` by ``Normal(point, scale).to_event(event_dim)``."""

    def __init__(self, scale):
        super().__init__()
        self.scale = scale

    def _pyro_sample(self, msg):
        fn = msg["fn"]
        if msg["is_observed"] or not isinstance(fn, dist.Delta):
            return
        point = fn.v
        msg["fn"] = dist.Normal(point, torch.full_like(point, self.scale)).to_event(fn.event_dim)


class GaussianProposal:
    """A Pyro guide: ``guide`` with each point-mass latent site
    :math:`\\delta(z - f)` replaced by the Gaussian :math:`\\mathcal{N}(z; f, \\sigma^2 I)`.

    Any proposal with a density gives a valid importance-weighted lower bound on log p(x)
    (Burda et al. 2016, Importance Weighted Autoencoders, arXiv:1509.00519) that tightens
    with the number of particles k, so an autoencoder's point-mass guide can be evaluated
    on the same footing as a VAE's guide. The ELBO estimated with this proposal is the
    Gaussian's, a true ELBO. Sites with any other distribution, and observed sites, are
    left as the guide makes them; site names, plates and shapes are the guide's.

    :param guide: a Pyro guide callable (e.g. ``vae.guide`` of a VAE with a
        :class:`~pyro_vae.point_mass.DeltaGuide`); run it in eval mode (``vae.eval()``) so that
        a denoising guide does not corrupt its input.
    :param float scale: :math:`\\sigma`, the standard deviation of the Gaussian, in the
        units of the latent.
    :raises ValueError: if ``scale`` is not positive.

    Example::

        >>> proposal = GaussianProposal(vae.guide, 0.1)  # doctest: +SKIP
        >>> log_likelihood(vae.model, proposal, x, num_particles=1000)  # doctest: +SKIP
    """

    def __init__(self, guide, scale):
        if not float(scale) > 0:
            raise ValueError(f"the proposal's scale must be positive, got {scale}")
        self.guide = guide
        self.scale = float(scale)

    @property
    def description(self):
        """What the estimate used, for reports: ``"gaussian(0.1) around the point-mass guide"``."""
        return f"gaussian({self.scale:g}) around the point-mass guide"

    def __call__(self, *args, **kwargs):
        """Run the guide with its point masses replaced; returns what the guide returns."""
        with _PointMassesToGaussians(self.scale):
            return self.guide(*args, **kwargs)


#: The most joint configurations :meth:`CategoricalCode.enumerate_support` lists.
MAX_ENUMERATION = 4096


class CategoricalCode(dist.TorchDistribution):
    """N independent categorical variables of K classes each, as one latent of ``N * K``
    values: N one-hot blocks of K side by side, so that a decoder reads the code as it reads
    any latent vector (Jang et al. 2017, Categorical Reparameterization with Gumbel-Softmax,
    arXiv:1611.01144, whose VAE has 30 variables of 10 classes).

    :param torch.Tensor logits: ``(*batch, N, K)`` unnormalized log-probabilities.
    :raises ValueError: if ``logits`` has fewer than two dims.

    Shapes: batch ``logits.shape[:-2]``, event ``(N * K,)``. ``log_prob`` is in nats, summed
    over the N variables. ``mean`` is the class probabilities (flattened), ``mode`` the most
    probable code. Its support can be enumerated (all ``K ** N`` codes, up to
    :data:`MAX_ENUMERATION`), so Pyro's :class:`~pyro.infer.TraceEnum_ELBO` sums it out
    exactly; :meth:`relaxed` gives its Gumbel-softmax relaxation for
    :class:`~pyro_vae.infer.discrete_objectives.ConcreteELBO`.
    """

    arg_constraints = {"logits": constraints.real}
    has_enumerate_support = True

    def __init__(self, logits, validate_args=None):
        if logits.dim() < 2:
            raise ValueError(f"logits must have shape (*batch, N, K), got {tuple(logits.shape)}")
        self.logits = logits - logits.logsumexp(-1, keepdim=True)
        self.num_variables, self.num_classes = logits.shape[-2:]
        super().__init__(logits.shape[:-2], torch.Size([self.num_variables * self.num_classes]),
                         validate_args=validate_args)

    @constraints.dependent_property(is_discrete=True, event_dim=1)
    def support(self):
        """Codes of N one-hot blocks of K (``one_hot_blocks``)."""
        return OneHotBlocks(self.num_classes)

    @property
    def probs(self):
        """Class probabilities ``(*batch, N, K)``."""
        return self.logits.exp()

    def expand(self, batch_shape, _instance=None):
        """The same code distribution with batch shape ``batch_shape``."""
        shape = torch.Size(batch_shape) + self.logits.shape[-2:]
        return CategoricalCode(self.logits.expand(shape), validate_args=False)

    def _blocks(self, value):
        return value.reshape(value.shape[:-1] + (self.num_variables, self.num_classes))

    def sample(self, sample_shape=torch.Size()):
        """One-hot codes, shape ``sample_shape + batch + (N * K,)``."""
        index = torch.distributions.Categorical(logits=self.logits).sample(sample_shape)
        return self.one_hot(index)

    def one_hot(self, index):
        """The code of class indices ``(..., N)``: shape ``(..., N * K)``, floats."""
        return torch.nn.functional.one_hot(index, self.num_classes).to(self.logits.dtype) \
            .flatten(-2)

    def log_prob(self, value):
        """``sum_n log p(class of block n)``, nats, shape ``value.shape[:-1]`` broadcast with
        the batch."""
        if self._validate_args:
            self._validate_sample(value)
        return (self._blocks(value) * self.logits).sum((-1, -2))

    @property
    def mean(self):
        """The class probabilities, flattened: ``(*batch, N * K)``."""
        return self.probs.flatten(-2)

    @property
    def variance(self):
        """``p (1 - p)`` per entry, flattened."""
        p = self.probs
        return (p * (1 - p)).flatten(-2)

    @property
    def mode(self):
        """The most probable code (each variable's most probable class), one-hot blocks."""
        return self.one_hot(self.logits.argmax(-1))

    def entropy(self):
        """Entropy in nats, summed over the N variables: shape ``batch``."""
        return -(self.probs * self.logits).sum((-1, -2))

    def enumerate_support(self, expand=True):
        """Every code, ``K ** N`` of them, as ``(K ** N, *ones, N * K)`` (``expand``: the batch
        dims filled in), the first variable varying slowest.

        :raises ValueError: above :data:`MAX_ENUMERATION` codes, naming the sizes.
        """
        n, k = self.num_variables, self.num_classes
        if k ** n > MAX_ENUMERATION:
            raise ValueError(f"a code of {n} variables of {k} classes has {k ** n:,} values, more "
                             f"than the {MAX_ENUMERATION} that enumeration sums over; use a "
                             "smaller code, or train with objective 'concrete' or 'score'")
        index = torch.cartesian_prod(*[torch.arange(k, device=self.logits.device)] * n) \
            .reshape(k ** n, n)
        values = self.one_hot(index).reshape((k ** n,) + (1,) * len(self.batch_shape) + (n * k,))
        if expand:
            values = values.expand((k ** n,) + self.batch_shape + (n * k,))
        return values

    def relaxed(self, temperature, straight_through=False):
        """Its Gumbel-softmax / Concrete relaxation at ``temperature`` (Jang et al. 2017,
        arXiv:1611.01144; Maddison et al. 2017, arXiv:1611.00712):
        :class:`RelaxedCategoricalCode` (``straight_through``: samples are one-hot codes
        carrying the relaxed sample's gradient)."""
        return RelaxedCategoricalCode(temperature, self.logits, straight_through)


class OneHotBlocks(constraints.Constraint):
    """Vectors of N one-hot blocks of K (the support of :class:`CategoricalCode`)."""

    is_discrete = True
    event_dim = 1

    def __init__(self, num_classes):
        super().__init__()
        self.num_classes = int(num_classes)

    def check(self, value):
        """Whether each block of ``value`` is one-hot (per batch element)."""
        blocks = value.reshape(value.shape[:-1] + (-1, self.num_classes))
        binary = ((blocks == 0) | (blocks == 1)).all(-1)
        return (binary & (blocks.sum(-1) == 1)).all(-1)


class RelaxedCategoricalCode(dist.TorchDistribution):
    """The Gumbel-softmax (Concrete) relaxation of a :class:`CategoricalCode`: each block a
    point of the simplex, ``softmax((logits + Gumbel noise) / temperature)``, reparameterized
    (Jang et al. 2017, arXiv:1611.01144; Maddison et al. 2017, arXiv:1611.00712). As the
    temperature goes to 0 its samples become the code's one-hot samples.

    Only for training: it has samples but no density here; :attr:`discrete` is the code it
    relaxes, whose KL to the prior the relaxed objective uses (as Jang et al. do).

    :param float temperature: lambda > 0.
    :param torch.Tensor logits: ``(*batch, N, K)``.
    :param bool straight_through: samples are the one-hot codes of the relaxed samples'
        largest entries, with the relaxed samples' gradient (the straight-through
        Gumbel-softmax of Jang et al. 2017): the decoder then reads codes in training as in
        evaluation, at the price of a biased gradient.
    :raises ValueError: for a temperature that is not positive.
    """

    arg_constraints = {"logits": constraints.real}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, temperature, logits, straight_through=False, validate_args=None):
        if not float(temperature) > 0:
            raise ValueError(f"the temperature must be positive, got {temperature}")
        self.temperature = float(temperature)
        self.straight_through = bool(straight_through)
        self.logits = logits
        n, k = logits.shape[-2:]
        super().__init__(logits.shape[:-2], torch.Size([n * k]), validate_args=validate_args)

    @property
    def discrete(self):
        """The :class:`CategoricalCode` it relaxes."""
        return CategoricalCode(self.logits, validate_args=False)

    def expand(self, batch_shape, _instance=None):
        """The same relaxation with batch shape ``batch_shape``."""
        shape = torch.Size(batch_shape) + self.logits.shape[-2:]
        return RelaxedCategoricalCode(self.temperature, self.logits.expand(shape),
                                      self.straight_through, validate_args=False)

    def rsample(self, sample_shape=torch.Size()):
        """Relaxed codes, shape ``sample_shape + batch + (N * K,)``, differentiable in the
        logits."""
        d = torch.distributions.RelaxedOneHotCategorical(
            torch.tensor(self.temperature, device=self.logits.device), logits=self.logits)
        soft = d.rsample(sample_shape)
        if self.straight_through:
            hard = torch.nn.functional.one_hot(soft.argmax(-1), soft.shape[-1]).to(soft.dtype)
            soft = hard + soft - soft.detach()
        return soft.flatten(-2)

    def log_prob(self, value):
        """Not used: :raises NotImplementedError: (the relaxed objective takes the KL of
        :attr:`discrete`)."""
        raise NotImplementedError("the relaxed code's density is not used; the Concrete "
                                  "objective takes the categorical KL of .discrete")


@torch.distributions.kl.register_kl(CategoricalCode, CategoricalCode)
def _kl_code_code(q, p):
    return (q.probs * (q.logits - p.logits)).sum((-1, -2))
