"""Objectives that trade the ELBO for disentangled codes: controlled capacity and the
beta-TC-VAE's decomposed KL.

- :class:`CapacityELBO`: Burgess et al. 2018, "Understanding disentangling in beta-VAE",
  arXiv:1804.03599: ``-E_q[log p(x|z)] + gamma |KL(q(z|x) || p(z)) - C|`` with the capacity
  ``C`` raised linearly from 0 to ``C_max`` nats.
- :class:`BetaTCELBO`: Chen et al. 2018, "Isolating Sources of Disentanglement in VAEs",
  arXiv:1802.04942: the KL term of the ELBO split, per datapoint, into index-code mutual
  information, total correlation and dimension-wise KL, estimated by minibatch-weighted
  sampling, with the total correlation weighted by beta.

(The plain beta-VAE, Higgins et al. 2017, is ``train.beta``: the KL weight of every
objective.) Both read the log densities off Pyro's traces, as the other objectives do, so
they work for any model/guide pair with one latent site; :class:`BetaTCELBO` also needs the
guide and the prior to factorize over the latent's dimensions (diagonal Gaussians).
"""

import math

import torch

from .chunks import batch_size_of
from .objectives import Objective
from .traces import factorized_base, is_sample, particle_traces, per_datapoint


class CapacityELBO(Objective):
    """Controlled capacity (Burgess et al. 2018, arXiv:1804.03599):

    .. math:: \\mathrm{loss} = -\\sum_b E_q[\\log p(x_b | z)]
        + B \\gamma \\, \\big| \\overline{KL} - C \\big|

    with :math:`\\overline{KL}` the batch mean of the KL of every latent site: analytic
    where torch knows the pair (diagonal Gaussians; in a hierarchy, given the sampled
    parents), as the paper computes it, else the single-sample estimate ``log q(z|x) -
    log p(z)`` (averaged over ``num_particles``), whose noise inside the absolute value
    biases the objective by about gamma times the estimate's standard deviation; ``B``
    the batch size and ``C = C_max * min(1, step / anneal_steps)`` nats. The KL weight the
    trainer passes (warm-up, ``train.beta``) multiplies the capacity term.

    :param float capacity: ``C_max``, nats (> 0).
    :param float gamma: the weight of the capacity term (> 0; the paper uses 1000 on
        dSprites with a Bernoulli likelihood).
    :param int anneal_steps: steps over which ``C`` rises from 0 to ``C_max`` (0: ``C_max``
        from the start).
    :param int num_particles: particles per datapoint.
    :raises ValueError: for a non-positive capacity or gamma, or ``num_particles < 1``.
    """

    def __init__(self, capacity=25.0, gamma=1000.0, anneal_steps=0, num_particles=1,
                 max_plate_nesting=1):
        if not capacity > 0 or not gamma > 0:
            raise ValueError(f"the capacity objective needs a positive capacity (nats) and "
                             f"gamma, got capacity = {capacity}, gamma = {gamma}")
        if int(num_particles) < 1:
            raise ValueError(f"num_particles must be at least 1, got {num_particles}")
        self.capacity, self.gamma = float(capacity), float(gamma)
        self.anneal_steps, self.num_particles = int(anneal_steps), int(num_particles)
        self.max_plate_nesting = max_plate_nesting
        self.step = 0

    @classmethod
    def from_settings(cls, num_particles=1, free_bits=0.0, capacity=25.0, capacity_weight=1000.0,
                      capacity_steps=0, **options):
        """Build from ``train.capacity``, ``capacity_weight`` and ``capacity_epochs`` (as
        steps)."""
        return cls(capacity, capacity_weight, capacity_steps, num_particles)

    def set_step(self, step):
        """Set the number of steps done, which sets the current capacity."""
        self.step = int(step)

    @property
    def current_capacity(self):
        """``C`` at the current step, nats."""
        if self.anneal_steps <= 0:
            return self.capacity
        return self.capacity * min(1.0, self.step / self.anneal_steps)

    def kl_and_log_likelihood(self, model, guide, x):
        """The batch mean of the KL term and the per-datapoint log-likelihood.

        :returns: ``(kl, log_lik)``: ``kl`` a scalar, nats per image; ``log_lik`` ``(k, B)``.
        """
        k, batch = self.num_particles, batch_size_of(x)
        model_trace, guide_trace, nesting = particle_traces(model, guide, x, k,
                                                            self.max_plate_nesting)
        kl = torch.zeros(())
        for name, site in guide_trace.nodes.items():
            if not is_sample(site) or site["is_observed"]:
                continue
            q, p = site["fn"], model_trace.nodes[name]["fn"]
            try:  # analytic where torch knows it (given the sampled parents), as Burgess et al.
                site_kl = torch.distributions.kl_divergence(q, p)
            except NotImplementedError:
                site_kl = q.log_prob(site["value"]) - p.log_prob(site["value"])
            kl = kl + site_kl.sum() / (k * batch)
        log_lik = per_datapoint(model_trace, "model", "data", k, batch, nesting,
                                include="observed")
        return kl, log_lik

    def differentiable_loss(self, model, guide, x, kl_weight=1.0):
        """Negative capacity objective summed over the batch, nats."""
        kl, log_lik = self.kl_and_log_likelihood(model, guide, x)
        batch = log_lik.shape[1]
        return -log_lik.mean(0).sum() + kl_weight * batch * self.gamma * \
            (kl - self.current_capacity).abs()


class BetaTCELBO(Objective):
    """The beta-TC-VAE objective (Chen et al. 2018, arXiv:1802.04942, eq. 2 and 4). Per
    datapoint ``x_i`` with ``z_i ~ q(z|x_i)``, the KL term ``log q(z_i|x_i) - log p(z_i)`` is
    the sum of

    - index-code mutual information ``log q(z_i|x_i) - log q(z_i)``,
    - total correlation ``log q(z_i) - sum_d log q(z_id)``,
    - dimension-wise KL ``sum_d log q(z_id) - log p(z_id)``,

    where ``q(z) = (1/N) sum_n q(z|x_n)`` is the aggregate posterior over the N training
    images. Minibatch-weighted sampling estimates it from the batch of M images drawn
    uniformly from the N:

    .. math:: \\log q(z_i) \\approx \\log \\frac{1}{M} \\sum_{j=1}^{M} q(z_i | x_j)

    and likewise each marginal ``q(z_id)``. Chen et al. write the normalizer as
    ``1 / (N M)``; that shifts the three terms by ``log N``, ``(D - 1) log N`` and
    ``-D log N`` (D latent dimensions), constants that cancel in their sum and leave every
    gradient unchanged but make the terms' values wrong; with ``1 / M`` the estimates are
    exact when the batch is the whole data set. The own image's term ``q(z_i | x_i)``
    weighs ``1/M`` rather than ``1/N``, so for ``M << N`` the estimate of ``log q(z)`` is
    biased upwards (the paper's stratified estimator corrects that; not implemented here).
    The loss is
    ``-sum_i [log p(x_i|z_i) - w (alpha MI_i + beta TC_i + gamma DWKL_i)]`` with ``w`` the KL
    weight the trainer passes (warm-up); with ``alpha = beta = gamma = 1`` it is the negative
    ELBO on the same draws (the log q(z) terms cancel).

    :param float tc_weight: beta, the weight of the total correlation (the paper: 6 on
        dSprites).
    :param int dataset_size: N, the number of training images (> 0); a batch larger than N
        is refused.
    :param float mi_weight: alpha (1 in the paper).
    :param float dimension_kl_weight: gamma (1 in the paper).
    :raises ValueError: for a non-positive ``dataset_size`` or a negative weight; when
        called, for a model with more than one latent site, or whose guide or prior does
        not factorize over dimensions (say what to use instead).
    """

    def __init__(self, tc_weight=6.0, dataset_size=None, mi_weight=1.0, dimension_kl_weight=1.0,
                 max_plate_nesting=1):
        if dataset_size is None or int(dataset_size) < 1:
            raise ValueError(f"the beta-TC-VAE objective needs the number of training images "
                             f"(dataset_size) for minibatch-weighted sampling, got {dataset_size}")
        for name, value in (("tc_weight", tc_weight), ("mi_weight", mi_weight),
                            ("dimension_kl_weight", dimension_kl_weight)):
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        self.tc_weight, self.mi_weight = float(tc_weight), float(mi_weight)
        self.dimension_kl_weight = float(dimension_kl_weight)
        self.dataset_size = int(dataset_size)
        self.max_plate_nesting = max_plate_nesting

    @classmethod
    def from_settings(cls, num_particles=1, free_bits=0.0, tc_weight=6.0, dataset_size=None,
                      **options):
        """Build from ``train.tc_weight`` and the number of training images.

        :raises ValueError: for ``num_particles`` other than 1 (the estimator pairs each
            image with the batch's other images, one draw each).
        """
        if int(num_particles) != 1:
            raise ValueError("the beta-TC-VAE objective draws one z per image (its estimator "
                             "of q(z) uses the batch's other images); set train.num_particles = 1")
        return cls(tc_weight, dataset_size)

    def decomposition(self, model, guide, x):
        """The per-datapoint terms on one draw ``z_i ~ q(z|x_i)`` per image, nats.

        :returns: a dict of ``(B,)`` tensors: ``log_likelihood`` (log p(x_i|z_i)),
            ``mutual_information``, ``total_correlation``, ``dimension_kl`` (see the class
            docstring); their batch means estimate the aggregate quantities.
        :raises ValueError: see the class docstring.
        """
        model_trace, guide_trace, nesting = particle_traces(model, guide, x, 1,
                                                            self.max_plate_nesting)
        batch = batch_size_of(x)
        latents = [name for name, site in guide_trace.nodes.items()
                   if is_sample(site) and not site["is_observed"]]
        if len(latents) != 1:
            raise ValueError(f"the beta-TC-VAE objective splits the KL of one latent; this guide "
                             f"has {len(latents)} latent sites {latents}; use a model with one "
                             "latent layer")
        name = latents[0]
        z = guide_trace.nodes[name]["value"]
        q_base = factorized_base(guide_trace.nodes[name]["fn"])
        p_base = factorized_base(model_trace.nodes[name]["fn"])
        if q_base is None or p_base is None:
            raise ValueError(f"the beta-TC-VAE objective needs a guide and a prior that factorize "
                             f"over the dimensions of {name!r} (diagonal Gaussians); this pair does "
                             "not (a flow, a full covariance or a mixture prior): use "
                             "objective 'elbo' with train.beta instead")
        if batch > self.dataset_size:
            raise ValueError(f"a batch of {batch} images is larger than the data set "
                             f"(dataset_size = {self.dataset_size})")
        dims = z.shape[-1]
        z = z.reshape(batch, dims)
        # pairwise[i, j, d] = log q(z_id | x_j)
        pairwise = q_base.log_prob(z.reshape(batch, 1, dims)).reshape(batch, batch, dims)
        log_m = math.log(batch)
        log_q_joint = torch.logsumexp(pairwise.sum(-1), dim=1) - log_m
        log_q_marginals = (torch.logsumexp(pairwise, dim=1) - log_m).sum(-1)
        log_q_given_x = pairwise.diagonal(dim1=0, dim2=1).sum(0)
        log_prior = p_base.log_prob(z).reshape(batch, dims).sum(-1)
        log_lik = per_datapoint(model_trace, "model", "data", 1, batch, nesting,
                                include="observed")[0]
        return {"log_likelihood": log_lik,
                "mutual_information": log_q_given_x - log_q_joint,
                "total_correlation": log_q_joint - log_q_marginals,
                "dimension_kl": log_q_marginals - log_prior}

    def differentiable_loss(self, model, guide, x, kl_weight=1.0):
        """Negative beta-TC-VAE objective summed over the batch, nats."""
        terms = self.decomposition(model, guide, x)
        kl = (self.mi_weight * terms["mutual_information"]
              + self.tc_weight * terms["total_correlation"]
              + self.dimension_kl_weight * terms["dimension_kl"])
        return -(terms["log_likelihood"] - kl_weight * kl).sum()
