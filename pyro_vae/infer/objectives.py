"""Training objectives: the ELBO and its variants, as differentiable losses.

Every objective is an object with ``differentiable_loss(model, guide, x, kl_weight=1.0)``
returning a scalar tensor: the negative objective summed over the batch, in nats. The
``kl_weight`` multiplies the log densities of the latent sites in both model and guide
(``log p(z) - log q(z|x)``, the negative KL), which is how a beta-VAE weight and a linear KL
warm-up (Bowman et al. 2016, arXiv:1511.06349; Sonderby et al. 2016, arXiv:1602.02282) are
applied, as Pyro's DMM example does with ``poutine.scale``.

- :class:`ELBO`: Pyro's :class:`~pyro.infer.Trace_ELBO` (default), or
  :class:`~pyro.infer.TraceMeanField_ELBO` (analytic KL where torch knows it), with
  ``num_particles`` vectorized particles.
- :class:`IWAEObjective`: the importance-weighted bound with k particles (Burda et al. 2016,
  arXiv:1509.00519), computed per datapoint from the traces (see below).
- :class:`DReGIWAEObjective`: the same bound with the doubly-reparameterized gradient for
  the guide (Tucker et al. 2018, arXiv:1810.04152).
- :class:`FreeBitsELBO`: the ELBO whose KL term is floored per latent dimension at
  ``free_bits`` nats, averaged over the batch (Kingma et al. 2016, arXiv:1606.04934, App. C).
- :class:`SemiSupervisedELBO`: the M2 objective (Kingma et al. 2014, arXiv:1406.5298): the
  label summed out by enumeration on unlabelled images, observed on labelled ones, plus
  the classifier's log-likelihood of the labels.

``x`` is a batch tensor, or a tuple of tensors passed to model and guide as their
arguments (``(x, y)`` for a conditional VAE); :class:`SemiSupervisedELBO` takes
``(x_unlabelled, x_labelled, y_labelled)``.

The importance-weighted objective: pyro issue 3104 says ``RenyiELBO`` treats the whole
batch as one global latent, summing log weights over datapoints before the log-mean-exp.
Pyro 1.9 keeps the plates that enclose every site (here the data plate) out of that sum,
so for our models ``RenyiELBO(alpha=0)`` does give the per-datapoint bound: a test checks
that it and :class:`IWAEObjective` agree to the last digit on the same draws. We use our
own because a KL weight (warm-up) must scale the latent terms inside each weight, and to
share code with the evaluation: the per-datapoint log weights come from
:func:`pyro_vae.infer.log_weight_parts`.
"""

import math

import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceEnum_ELBO, TraceMeanField_ELBO, config_enumerate
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

from .chunks import batch_args, batch_size_of
from .traces import factorized_base, is_sample, log_weight_parts, particle_traces, per_datapoint


class ScaleLatents(Messenger):
    """Multiply the log density of every latent (not observed) sample site by ``factor``
    (the observed sites keep scale 1). Used on both model and guide, it weights the KL
    term of the ELBO by ``factor``."""

    def __init__(self, factor):
        super().__init__()
        self.factor = float(factor)

    def _process_message(self, msg):
        if msg["type"] == "sample" and not msg["is_observed"] and not site_is_subsample(msg):
            msg["scale"] = msg["scale"] * self.factor


def scaled(fn, factor):
    """``fn`` with its latent sites' log densities multiplied by ``factor`` (:class:`ScaleLatents`),
    or ``fn`` itself when the factor is 1."""
    return fn if factor == 1.0 else ScaleLatents(factor)(fn)


class Objective:
    """The contract every training objective follows.

    A subclass implements :meth:`differentiable_loss`; the registered ones (:data:`OBJECTIVES`)
    also build themselves from a recipe's settings with :meth:`from_settings`.
    """

    def differentiable_loss(self, model, guide, x, kl_weight=1.0):
        """The negative objective summed over the batch, nats, as a differentiable scalar.

        :param model: a Pyro model following the plate contract.
        :param guide: its guide.
        :param x: the batch, a tensor ``(B, *event_shape)`` or a tuple of model arguments.
        :param float kl_weight: the weight of the latent sites' log densities (``log p(z) -
            log q(z|x)``) in model and guide; 1 for the objective itself.
        """
        raise NotImplementedError

    @classmethod
    def from_settings(cls, num_particles=1, free_bits=0.0, **options):
        """Build from a recipe's ``train.num_particles`` (and ``train.free_bits``; the
        ``options`` are other objectives' settings, e.g. a temperature)."""
        return cls(num_particles)

    def set_step(self, step):
        """Called by the trainer before each step with the number of steps done, for
        objectives that change along the run (a temperature schedule); nothing here."""


class PyroLoss(Objective):
    """Any Pyro loss with ``differentiable_loss(model, guide, *args)`` (e.g.
    :class:`~pyro.infer.Trace_ELBO`, :class:`~pyro.infer.RenyiELBO`) as an
    :class:`Objective`: the KL weight scales the latent sites of model and guide by
    :class:`ScaleLatents`."""

    def __init__(self, loss):
        self.loss = loss

    def differentiable_loss(self, model, guide, x, kl_weight=1.0):
        """The wrapped loss on the (KL-weighted) model and guide, nats."""
        return self.loss.differentiable_loss(scaled(model, kl_weight), scaled(guide, kl_weight),
                                             *batch_args(x))


def as_objective(loss):
    """``loss`` if it follows the :class:`Objective` contract, else it wrapped in
    :class:`PyroLoss` (Pyro's own losses)."""
    return loss if isinstance(loss, Objective) else PyroLoss(loss)


class ELBO(Objective):
    """The ELBO by Pyro's ``Trace_ELBO`` (or ``TraceMeanField_ELBO`` with ``mean_field``),
    with ``num_particles`` vectorized particles; see the module docstring for ``kl_weight``.

    :param int num_particles: particles per datapoint (averaged).
    :param bool mean_field: use analytic KL divergences where torch knows them.
    :param int max_plate_nesting: plates nested in the model (1 for our VAEs).
    :raises ValueError: if ``num_particles < 1``.
    """

    def __init__(self, num_particles=1, mean_field=False, max_plate_nesting=1):
        if int(num_particles) < 1:
            raise ValueError(f"num_particles must be at least 1, got {num_particles}")
        cls = TraceMeanField_ELBO if mean_field else Trace_ELBO
        kw = {}
        if int(num_particles) > 1:
            kw = dict(num_particles=int(num_particles), vectorize_particles=True,
                      max_plate_nesting=max_plate_nesting)
        self.elbo = cls(**kw)

    def differentiable_loss(self, model, guide, x, kl_weight=1.0):
        """Negative (KL-weighted) ELBO summed over the batch, nats."""
        return self.elbo.differentiable_loss(scaled(model, kl_weight), scaled(guide, kl_weight),
                                             *batch_args(x))


class MeanFieldELBO(ELBO):
    """The ELBO by Pyro's ``TraceMeanField_ELBO``: analytic KL divergences where torch knows
    them (lower-variance gradients), else Monte Carlo.

    :param int num_particles: particles per datapoint (averaged).
    """

    def __init__(self, num_particles=1, max_plate_nesting=1):
        super().__init__(num_particles, mean_field=True, max_plate_nesting=max_plate_nesting)


class IWAEObjective(Objective):
    """The importance-weighted bound with k particles (Burda et al. 2016, arXiv:1509.00519):
    per datapoint, ``log (1/k) sum_i exp(log p(x|z_i) + w (log p(z_i) - log q(z_i|x)))``,
    summed over the batch (``w`` the KL weight, 1 for the bound itself). The particles are
    vectorized in one trace; gradients are the plain reparameterized ones (no
    doubly-reparameterized estimator).

    :param int num_particles: k.
    :param int max_plate_nesting: plates nested in the model (1 for our VAEs).
    :raises ValueError: if ``num_particles < 1``.
    """

    def __init__(self, num_particles=5, max_plate_nesting=1):
        if int(num_particles) < 1:
            raise ValueError(f"num_particles must be at least 1, got {num_particles}")
        self.num_particles = int(num_particles)
        self.max_plate_nesting = max_plate_nesting

    def differentiable_loss(self, model, guide, x, kl_weight=1.0):
        """Negative IWAE bound summed over the batch, nats."""
        log_lik, log_prior, log_q = log_weight_parts(
            model, guide, x, self.num_particles, max_plate_nesting=self.max_plate_nesting)
        log_w = log_lik + kl_weight * (log_prior - log_q)
        bound = torch.logsumexp(log_w, dim=0) - math.log(self.num_particles)
        return -bound.sum()


class DReGIWAEObjective(IWAEObjective):
    """The IWAE bound with the doubly-reparameterized gradient estimator for the guide
    (Tucker et al. 2018, arXiv:1810.04152): the guide's parameters get
    :math:`\\sum_i \\tilde w_i^2 \\, \\partial \\log w_i / \\partial z_i \\, \\partial z_i / \\partial \\phi`
    (normalized weights squared, the score term dropped, which has zero mean), whose
    signal-to-noise ratio does not decay with k as the plain IWAE gradient's does (Rainforth
    et al. 2018, arXiv:1802.04537); the model's parameters get the plain IWAE gradient. The
    loss value is the same negative IWAE bound.

    Works for guides with one latent site whose distribution is a diagonal Gaussian
    (``Independent(Normal)``), the case the estimator is derived for.

    :raises ValueError: (when called) for other guides.
    """

    def differentiable_loss(self, model, guide, x, kl_weight=1.0):
        """Surrogate whose gradient is DReG's; its value is the negative IWAE bound, nats."""
        k = self.num_particles
        model_trace, guide_trace, nesting = particle_traces(model, guide, x, k,
                                                            self.max_plate_nesting)
        latents = [(n, s) for n, s in guide_trace.nodes.items()
                   if is_sample(s) and not s["is_observed"]]
        base = factorized_base(latents[0][1]["fn"]) if len(latents) == 1 else None
        if not isinstance(base, torch.distributions.Normal):
            raise ValueError("the DReG estimator here needs a guide with one latent site whose "
                             "distribution is a diagonal Gaussian; use objective = 'iwae'")
        name, site = latents[0]
        z = site["value"]
        log_q = torch.distributions.Normal(base.loc.detach(), base.scale.detach()).log_prob(z)
        log_q = log_q.sum(-1).reshape(k, batch_size_of(x))
        args = ("data", k, batch_size_of(x), nesting)
        log_lik = per_datapoint(model_trace, "model", *args, include="observed")
        log_prior = per_datapoint(model_trace, "model", *args, include="latent")
        log_w = log_lik + kl_weight * (log_prior - log_q)
        weights = torch.softmax(log_w.detach(), dim=0)
        if z.requires_grad:  # the guide's parameters see the weights squared
            z.register_hook(lambda g: g * weights.reshape(weights.shape + (1,) * (g.dim() - 2)))
        bound = torch.logsumexp(log_w.detach(), 0) - math.log(k)
        surrogate = (weights * log_w).sum(0)
        return -(bound + surrogate - surrogate.detach()).sum()


class FreeBitsELBO(Objective):
    """The ELBO with free bits (Kingma et al. 2016, arXiv:1606.04934, Appendix C): the KL
    term of each latent dimension, averaged over the batch, counts as at least ``free_bits``
    nats, so the optimizer gains nothing by pushing it lower:

    .. math:: \\mathrm{loss} = -\\sum_b E_q[\\log p(x_b | z)]
        + B \\sum_d \\max(\\lambda, \\overline{KL}_d)

    (``B`` the batch size, :math:`\\overline{KL}_d` the KL of dimension d averaged over it).

    The per-dimension KL is the single-sample estimate ``log q(z_d|x) - log p(z_d|.)`` for
    sites whose guide and prior factorize over dimensions (diagonal Gaussians); a site that
    does not (flows, full covariance) gets one floor of ``free_bits * D`` on its whole KL.

    :param float free_bits: lambda, nats per dimension (> 0).
    :param int num_particles: particles per datapoint (averaged).
    :raises ValueError: if ``free_bits <= 0`` or ``num_particles < 1``.
    """

    @classmethod
    def from_settings(cls, num_particles=1, free_bits=0.0, **options):
        """Build from ``train.free_bits`` and ``train.num_particles``."""
        return cls(free_bits, num_particles)

    def __init__(self, free_bits=0.5, num_particles=1, max_plate_nesting=1):
        if not free_bits > 0:
            raise ValueError(f"free_bits must be positive, got {free_bits}")
        if int(num_particles) < 1:
            raise ValueError(f"num_particles must be at least 1, got {num_particles}")
        self.free_bits = float(free_bits)
        self.num_particles = int(num_particles)
        self.max_plate_nesting = max_plate_nesting

    def kl_terms(self, model, guide, x):
        """The per-dimension KL estimates and the log-likelihood of a batch.

        :returns: ``(log_lik, kls)``: ``log_lik`` the mean over particles of log p(x | z)
            summed over the batch (nats), and ``kls`` a list of ``(kl, floor)`` pairs, ``kl``
            the batch-averaged KL of one dimension (or of a whole non-factorized site) and
            ``floor`` the free bits it is floored at.
        """
        k, batch = self.num_particles, batch_size_of(x)
        model_trace, guide_trace, nesting = particle_traces(model, guide, x, k,
                                                            self.max_plate_nesting)
        log_lik = 0.0
        for site in model_trace.nodes.values():
            if is_sample(site) and site["is_observed"]:
                log_lik = log_lik + site["fn"].log_prob(site["value"]).sum() / k
        kls = []
        for name, site in guide_trace.nodes.items():
            if not is_sample(site) or site["is_observed"]:
                continue
            q, p, z = site["fn"], model_trace.nodes[name]["fn"], site["value"]
            q_base, p_base = factorized_base(q), factorized_base(p)
            if q_base is not None and p_base is not None:
                per_dim = (q_base.log_prob(z) - p_base.log_prob(z)).reshape(-1, z.shape[-1])
                kls += [(kl, self.free_bits) for kl in per_dim.sum(0) / (k * batch)]
            else:
                total = (q.log_prob(z) - p.log_prob(z)).sum() / (k * batch)
                kls.append((total, self.free_bits * z.shape[-1]))
        return log_lik, kls

    def differentiable_loss(self, model, guide, x, kl_weight=1.0):
        """Negative free-bits objective summed over the batch, nats."""
        log_lik, kls = self.kl_terms(model, guide, x)
        kl = sum(torch.clamp(value, min=floor) for value, floor in kls)
        return -(log_lik - kl_weight * batch_size_of(x) * kl)


class SemiSupervisedELBO(Objective):
    """The semi-supervised objective of M2 (Kingma et al. 2014, arXiv:1406.5298, eq. 9):

    .. math:: \\mathrm{loss} = -\\sum_{x \\in U} \\Big[ \\sum_y q(y|x) \\big(\\log p(x, y, z)
        - \\log q(z|x,y)\\big) + H(q(y|x)) \\Big]_{z \\sim q(z|x,y)}
        - \\sum_{(x,y) \\in L} \\big[ \\mathrm{ELBO}(x, y) + \\alpha \\log q(y|x) \\big]

    On unlabelled images the label site ``"y"`` of the guide is enumerated in parallel
    (``pyro.infer.config_enumerate``) and summed out exactly by Pyro's
    :class:`~pyro.infer.TraceEnum_ELBO`; on labelled images the label is observed and the
    ELBO is Pyro's :class:`~pyro.infer.Trace_ELBO`; the classifier's term ``log q(y|x)`` is
    read off the guide's ``"y"`` site conditioned on the labels. ``alpha`` is the weight of
    the labelled images' classification loss in nats per image (the paper's alpha = 0.1 N
    weighs a classification loss against an ELBO summed over the whole data set; per batch,
    as here, a weight of tens does the same job, as in Pyro's SS-VAE example).

    :param float classifier_weight: alpha (>= 0).
    :raises ValueError: for a negative weight.

    ``differentiable_loss(model, guide, (x_u, x_l, y_l), kl_weight)``: ``y_l`` integer labels
    (or one-hot rows); either part may be empty (0 images).
    """

    def __init__(self, classifier_weight=50.0, max_plate_nesting=1):
        if not classifier_weight >= 0:
            raise ValueError(f"classifier_weight must be >= 0, got {classifier_weight}")
        self.classifier_weight = float(classifier_weight)
        self.enum_elbo = TraceEnum_ELBO(max_plate_nesting=max_plate_nesting)
        self.elbo = Trace_ELBO()

    def unsupervised_loss(self, model, guide, x, kl_weight=1.0):
        """Negative ELBO of unlabelled images, the label summed out by enumeration, nats."""
        guide = config_enumerate(guide, "parallel", expand=False)
        return self.enum_elbo.differentiable_loss(scaled(model, kl_weight),
                                                  scaled(guide, kl_weight), x)

    def supervised_loss(self, model, guide, x, y, kl_weight=1.0):
        """Negative ELBO of labelled images with y observed, nats."""
        return self.elbo.differentiable_loss(scaled(model, kl_weight), scaled(guide, kl_weight),
                                             x, y)

    @staticmethod
    def classifier_log_likelihood(guide, x, y, num_classes=None):
        """Sum over the batch of ``log q(y|x)``, read off the guide's ``"y"`` site with the
        labels substituted (nats).

        :raises ValueError: if the guide has no ``"y"`` site.
        """
        trace = poutine.trace(guide).get_trace(x)  # samples y: find its distribution
        if "y" not in trace.nodes:
            raise ValueError("the guide has no site 'y': the semi-supervised objective needs an "
                             "M2 model (model.semi_supervised = true)")
        q = trace.nodes["y"]["fn"]
        if not y.is_floating_point():
            y = torch.nn.functional.one_hot(y, q.event_shape[-1]).to(q.logits.dtype)
        return q.log_prob(y).sum()

    def differentiable_loss(self, model, guide, x, kl_weight=1.0):
        """The loss of one step on ``x = (x_unlabelled, x_labelled, y_labelled)``, nats."""
        x_u, x_l, y_l = x
        loss = torch.zeros((), device=x_u.device)
        if x_u.shape[0]:
            loss = loss + self.unsupervised_loss(model, guide, x_u, kl_weight)
        if x_l.shape[0]:
            loss = loss + self.supervised_loss(model, guide, x_l, y_l, kl_weight)
            if self.classifier_weight:
                loss = loss - self.classifier_weight * self.classifier_log_likelihood(
                    guide, x_l, y_l)
        return loss
