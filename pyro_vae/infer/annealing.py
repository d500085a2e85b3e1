"""Annealed chains from a guide q(z|x) to a model's posterior p(z|x), for any Pyro pair.

The geometric path between the two (Neal 2001, arXiv:physics/9803008)

.. math:: f_\\beta(z) = q(z | x)^{1 - \\beta} \\, p(x, z)^{\\beta}, \\qquad 0 = \\beta_0 < \\dots < \\beta_T = 1,

has normalizers ``Z_0 = 1`` and ``Z_T = p(x)``. :class:`AnnealedChains` holds the states of
``C`` chains for each of ``B`` datapoints, as Pyro sites in an outer particle plate, and
runs them along a sequence of temperatures: at each it adds
``(beta_t - beta_{t-1}) (log p(x, z) - log q(z | x))`` to the chains' log weights, then
moves them with one Hamiltonian Monte Carlo transition that leaves ``f_{beta_t}``
invariant: Pyro's leapfrog integrator (:func:`pyro.ops.integrator.velocity_verlet`) and a
Metropolis correction. Densities are read off traces of the model and of the guide
conditioned on the chains' states (as :func:`~pyro_vae.infer.log_weights` reads them), in
the unconstrained space of each latent site (Pyro's ``biject_to``). Run upwards from guide
draws this is annealed importance sampling (AIS; Wu et al. 2017, arXiv:1611.04273); run
downwards from an exact posterior sample it is the reverse chain of bidirectional Monte
Carlo (BDMC; Grosse et al. 2015, arXiv:1511.02543).

Each chain (and datapoint) has its own step size, as a per-chain scale of Pyro's
integrator: with ``step_size=1``, the potential ``sum_c eps_c U_c`` and the kinetic gradient
``eps_c r_c``, :func:`~pyro.ops.integrator.velocity_verlet` takes the leapfrog step
``eps_c`` of every chain ``c`` at once.

Flow guides. A guide site whose distribution is a normalizing flow (a
:class:`~torch.distributions.TransformedDistribution` of a real-valued base, such as the IAF
guide) is moved in the flow's base space: the chain's state is the base value ``e`` and the
site's value is ``z = f(e)``, computed forwards through the site's own transforms, so that
``log q(z|x)`` comes from their cache and the change of variables adds ``log |det df/de|``
to the energy (HMC in a flow's base space is NeuTra HMC, Hoffman et al. 2019,
arXiv:1903.03704). The path, its intermediate densities in z and the weights (ratios of
densities at the same point) are those of the chains in z; only the HMC dynamics differ.
In z itself, ``log q(z|x)`` at a point the chains reach would need the flow's inverse: for
an autoregressive flow, one network pass per latent dimension; for planar and radial flows,
none exists. A flow's inverse is computed only to start chains at given latents (BDMC's
reverse chains).
"""

import math

import pyro
import pyro.poutine as poutine
import torch
from pyro.distributions.util import sum_rightmost
from pyro.poutine.messenger import Messenger
from pyro.ops.integrator import velocity_verlet
from torch.distributions import Independent, TransformedDistribution, biject_to
from torch.distributions.transforms import ComposeTransform

from .chunks import batch_args, batch_size_of
from .traces import (PARTICLE_PLATE, ModelGuideMismatch, check_densities, data_plate_dim,
                     datapoint_sum, is_auxiliary, is_sample, particle_traces, per_datapoint)

#: The Metropolis acceptance rate the step sizes are tuned towards (Wu et al. 2017; the
#: optimum for HMC in high dimensions is about 0.65, Neal 2011, arXiv:1206.1901).
TARGET_ACCEPTANCE = 0.65


def sigmoid_schedule(num_steps, delta=4.0, dtype=torch.float64):
    """The sigmoidal temperature schedule of Grosse et al. (2015, arXiv:1511.02543) and Wu
    et al. (2017, arXiv:1611.04273): ``beta_t = (s_t - s_0) / (s_T - s_0)`` with
    ``s_t = sigmoid(delta (2 t / T - 1))``, denser near both ends of the path.

    :param int num_steps: T, the number of intermediate distributions after ``beta_0 = 0``.
    :param float delta: the steepness.
    :returns: tensor ``(T + 1,)`` rising from exactly 0 to exactly 1.
    :raises ValueError: for ``num_steps < 1`` or ``delta <= 0``.
    """
    if int(num_steps) != num_steps or num_steps < 1:
        raise ValueError(f"num_steps must be an integer of at least 1, got {num_steps}")
    if not delta > 0:
        raise ValueError(f"delta must be positive, got {delta}")
    s = torch.sigmoid(delta * torch.linspace(-1.0, 1.0, int(num_steps) + 1, dtype=dtype))
    beta = (s - s[0]) / (s[-1] - s[0])
    beta[0], beta[-1] = 0.0, 1.0
    return beta


class AnnealedChains:
    """``C`` chains per datapoint on the geometric path from ``q(z|x)`` to ``p(z|x)``.

    :param callable model: a Pyro model (keyword arguments already bound); every sample
        site inside the data plate; continuous latent sites only.
    :param callable guide: its guide.
    :param x: a chunk of data, ``(B, *event_shape)`` or a tuple of model arguments.
    :param int num_chains: C.
    :param str data_plate: the name of the data plate.
    :param int nesting: the plate nesting of model and guide (see
        :func:`~pyro_vae.infer.plate_nesting`).
    :param dict start: latent values to start every chain from, each of the site's shape
        without the particle dim (e.g. ``(B, D)``: an exact posterior sample for the
        reverse chain of BDMC); ``None`` starts each chain at its own draw from the guide.
    :param bool flow_base: move flow sites in their base space (default; see the module's
        docstring); ``False`` moves them in z, through the flow's inverse (benchmarks).
    :raises ModelGuideMismatch: see :func:`~pyro_vae.infer.log_weights`; also for a
        discrete latent site (HMC moves continuous latents only), a site whose
        unconstrained form has another event shape (e.g. ``corr_cholesky``), or a guide
        with auxiliary sites (Pyro's autoguides: no density at arbitrary z), naming them.
    """

    def __init__(self, model, guide, x, num_chains, data_plate, nesting, start=None,
                 flow_base=True):
        self.model, self.guide, self.x = model, guide, x
        self.num_chains, self.data_plate, self.nesting = int(num_chains), data_plate, nesting
        self.batch_size = batch_size_of(x)
        with torch.no_grad():
            _, guide_trace, _ = particle_traces(model, guide, x, self.num_chains, nesting)
        check_densities(guide_trace)
        auxiliary = [name for name, site in guide_trace.nodes.items() if is_auxiliary(site)]
        if auxiliary:
            raise ModelGuideMismatch(
                f"the guide draws auxiliary site(s) {auxiliary} (one of Pyro's autoguides?): "
                "annealing needs q(z|x) at any z the chains reach, and such a guide gives it "
                "only at its own draws. Use a guide that samples the latents themselves "
                "(e.g. a Normal per site), or the IWAE bound (log_likelihood)")
        self.sites = {}
        z = {}
        for name, site in guide_trace.nodes.items():
            if not is_sample(site) or site["is_observed"]:
                continue
            if site["fn"].support.is_discrete:
                raise ModelGuideMismatch(
                    f"latent site {name!r} is discrete ({type(site['fn']).__name__}): "
                    "annealed importance sampling moves the latents with Hamiltonian Monte "
                    "Carlo, which needs continuous ones. Sum the discrete site out in the "
                    "model (enumeration) or use the IWAE bound (log_likelihood)")
            flow = flow_of(site["fn"]) if flow_base else None
            transform = biject_to((flow.base_dist if flow else site["fn"]).support)
            if transform.domain.event_dim != transform.codomain.event_dim:
                raise ModelGuideMismatch(
                    f"latent site {name!r} has support {site['fn'].support}, whose "
                    "unconstrained space has another number of event dims "
                    f"({transform.domain.event_dim}, not {transform.codomain.event_dim}); "
                    "annealing supports latents whose unconstrained form keeps their shape")
            value = site["value"]  # not detached yet: a flow's own draw is in its cache
            if start is not None:
                value = start[name].to(value).expand(value.shape)
            if flow is not None:  # the state is the flow's base value
                value = flow_inverse(flow, value, name)
            value = value.detach()
            self.sites[name] = {"transform": transform, "flow": flow is not None,
                                "event_dim": site["fn"].event_dim,
                                "data_dim": data_plate_dim(guide_trace, "guide", name, data_plate),
                                "shape": value.shape}
            z[name] = value
        self.state = {name: self.sites[name]["transform"].inv(v).detach() for name, v in z.items()}
        with torch.no_grad():
            self.log_q, self.log_joint, self.log_det = self.densities(self.state)

    def spread(self, values, name):
        """A ``(C, B)`` tensor shaped to broadcast against site ``name``'s values."""
        info = self.sites[name]
        full = self.nesting + 1
        shape = [1] * (full + info["event_dim"])
        shape[0], shape[full + info["data_dim"]] = self.num_chains, self.batch_size
        return values.reshape(shape)

    def per_chain(self, values, name):
        """Sum a tensor of site ``name``'s shape to ``(C, B)``."""
        return datapoint_sum(sum_rightmost(values, self.sites[name]["event_dim"]),
                             self.sites[name]["data_dim"], self.nesting)

    def densities(self, state):
        """``(log q(z|x), log p(x, z), log |det dz/du|)``, each ``(C, B)`` in nats, at the
        unconstrained latent values ``state``."""
        z, base, ladjs = {}, {}, {}
        for name, u in state.items():
            info = self.sites[name]
            transform = info["transform"]
            value = transform(u)
            if transform.bijective and not _is_identity(transform):
                ladjs[name] = sum_rightmost(transform.log_abs_det_jacobian(u, value),
                                            info["event_dim"] - transform.codomain.event_dim)
            (base if info["flow"] else z)[name] = value
        args = (self.data_plate, self.num_chains, self.batch_size, self.nesting)
        flows = FlowBaseCondition(base)
        with poutine.block(), pyro.plate(PARTICLE_PLATE, self.num_chains, dim=-(self.nesting + 1)):
            guide_trace = poutine.trace(flows(poutine.condition(self.guide, data=z))).get_trace(
                *batch_args(self.x))
            z.update({name: guide_trace.nodes[name]["value"] for name in base})
            model_trace = poutine.trace(poutine.condition(self.model, data=z)).get_trace(
                *batch_args(self.x))
        log_det = 0.0
        for name, ladj in [*ladjs.items(), *flows.log_det.items()]:
            log_det = log_det + datapoint_sum(ladj, self.sites[name]["data_dim"], self.nesting)
        log_q = per_datapoint(guide_trace, "guide", *args, include="all")
        log_joint = per_datapoint(model_trace, "model", *args, include="all")
        log_det = torch.as_tensor(log_det).to(log_q).expand_as(log_q)
        return log_q, log_joint, log_det

    def log_ratio(self):
        """``log p(x, z) - log q(z|x)`` at the current states, ``(C, B)``, float64."""
        return (self.log_joint - self.log_q).double()

    def transition(self, beta, step_size, num_leapfrog):
        """One HMC transition of every chain, leaving ``f_beta`` invariant.

        The chains must not interact through the model (e.g. a batch-norm layer in
        training mode): each chain's energy is its own. With Pyro's validation on, a
        leapfrog step that leaves a site's support raises; the estimators run with it off,
        where such a proposal gets a non-finite energy and is rejected. A step in which
        Pyro's integrator caught an error (a singular matrix) rejects every chain.

        :param float beta: the temperature.
        :param torch.Tensor step_size: ``(C, B)`` or ``(B,)``, each chain's leapfrog step.
        :param int num_leapfrog: leapfrog steps per transition.
        :returns: ``(C, B)`` the Metropolis acceptance probabilities.
        """
        eps = step_size.to(self.log_q).expand(self.num_chains, self.batch_size)
        stash = {"calls": 0, "done": 0}

        def energy(log_q, log_joint, log_det):  # U = -log f_beta, in unconstrained space
            return -((1 - beta) * log_q + beta * log_joint + log_det)

        def potential(u):
            stash["calls"] += 1
            stash["parts"] = self.densities(u)
            stash["done"] += 1  # not reached when Pyro's integrator catches an error
            return (eps * energy(*stash["parts"])).sum()

        def kinetic_grad(r):
            return {name: self.spread(eps, name) * r[name] for name in r}

        with torch.enable_grad():
            r = {name: torch.randn_like(u) for name, u in self.state.items()}
            start = energy(self.log_q, self.log_joint, self.log_det) + self.kinetic(r)
            u, r, _, _ = velocity_verlet(self.state, r, potential, kinetic_grad, 1.0,
                                         int(num_leapfrog))
        parts = [p.detach() for p in stash["parts"]]
        end = energy(*parts) + self.kinetic(r)
        accept_prob = torch.exp(torch.clamp(start - end, max=0.0))
        accept_prob = torch.where(torch.isfinite(accept_prob), accept_prob, 0.0)
        if stash["done"] != stash["calls"]:  # a step failed (a singular matrix, caught by
            accept_prob = torch.zeros_like(accept_prob)  # Pyro): the trajectory is void
        accept = torch.rand_like(accept_prob) < accept_prob
        for name in self.state:
            self.state[name] = torch.where(self.spread(accept, name), u[name].detach(),
                                           self.state[name])
        self.log_q, self.log_joint, self.log_det = (
            torch.where(accept, new, old) for new, old in
            zip(parts, (self.log_q, self.log_joint, self.log_det)))
        return accept_prob

    def kinetic(self, r):
        """``|r|^2 / 2`` per chain, ``(C, B)``."""
        return sum(self.per_chain(0.5 * v.detach() ** 2, name) for name, v in r.items())

    def run(self, betas, step_sizes, num_leapfrog, adapt_rate=0.0):
        """Run the chains through the temperatures ``betas``, accumulating log weights.

        At step ``t`` the weights gain ``(betas[t] - betas[t-1]) log_ratio`` at the
        current states, then (for ``t < T``: the last transition would not change the
        weights) the chains make one transition at ``betas[t]``.

        :param torch.Tensor betas: ``(T + 1,)``, from 0 up to 1 (AIS) or from 1 down to 0
            (the reverse chain).
        :param torch.Tensor step_sizes: ``(T + 1, B)`` per-datapoint step sizes (row ``t``
            for the transition at ``betas[t]``), or ``(B,)``: the initial step sizes of an
            adaptive (pilot) run.
        :param int num_leapfrog: leapfrog steps per transition.
        :param float adapt_rate: 0 for fixed step sizes; otherwise each datapoint's log step
            size moves by ``adapt_rate * (acceptance - TARGET_ACCEPTANCE)`` after each
            transition, from its chains' mean acceptance (a pilot run: the step sizes it
            used are returned for a measured run).
        :returns: ``(log_w, acceptance, used)``: log weights ``(C, B)`` float64, mean
            acceptance per datapoint and transition ``(B, T - 1)``, step sizes used
            ``(T + 1, B)`` (rows 0 and T unused, equal to their neighbours).
        """
        num_steps = betas.shape[0] - 1
        log_w = torch.zeros(self.num_chains, self.batch_size, dtype=torch.float64,
                            device=self.log_q.device)
        eps = step_sizes if adapt_rate == 0 else step_sizes.expand(num_steps + 1, -1).clone()
        eps = eps.to(self.log_q)
        acceptance = []
        for t in range(1, num_steps + 1):
            log_w = log_w + float(betas[t] - betas[t - 1]) * self.log_ratio()
            if t == num_steps:
                break
            accept_prob = self.transition(float(betas[t]), eps[t], num_leapfrog).mean(0)
            acceptance.append(accept_prob)
            if adapt_rate:
                eps[t + 1] = eps[t] * torch.exp(adapt_rate * (accept_prob - TARGET_ACCEPTANCE))
        if adapt_rate:
            eps[0] = eps[1]
        acceptance = torch.stack(acceptance, 1) if acceptance else \
            self.log_q.new_zeros(self.batch_size, 0)
        return log_w, acceptance, eps


def flow_of(fn):
    """The :class:`~torch.distributions.TransformedDistribution` inside a guide site's
    distribution ``fn`` (itself, or under ``to_event``) when the chains can move in its base
    space: a real-valued base and bijective transforms that keep the event dims. ``None``
    otherwise (e.g. HalfNormal, whose absolute value is not a bijection, or Gumbel, whose
    base is bounded): such sites move in z."""
    while isinstance(fn, Independent):
        fn = fn.base_dist
    if isinstance(fn, TransformedDistribution) and fn.transforms and all(
            t.bijective and t.domain.event_dim == t.codomain.event_dim
            for t in fn.transforms) and _is_identity(biject_to(fn.base_dist.support)):
        return fn
    return None


def flow_inverse(flow, value, name):
    """The base value ``e`` with ``f(e) = value`` for ``flow``'s transforms: free for the
    flow's own draws (the transforms' cache), one inverse otherwise.

    :raises ModelGuideMismatch: when a transform has no inverse (planar, radial)."""
    for t in reversed(flow.transforms):
        try:
            value = t.inv(value)
        except (NotImplementedError, KeyError):  # KeyError: Pyro's planar and radial
            raise ModelGuideMismatch(
                f"the guide's flow at site {name!r} has a transform without an inverse "
                f"({type(t).__name__}): chains can start only at the flow's own draws, not at "
                "given latents (BDMC's reverse chains). Use an invertible flow (e.g. iaf) or "
                "forward AIS alone") from None
    return value


class FlowBaseCondition(Messenger):
    """Condition flow sites on their base values: at a site named in ``base``, the value
    is ``f(e)`` through the site's own transforms (so the site's ``log_prob`` reads their
    cache, no inverse), observed as with ``poutine.condition``; :attr:`log_det` then holds
    each site's ``log |det df/de|``, summed over its event dims (batch shape).

    :param dict base: site name to base value ``e``, of the site's shape.
    """

    def __init__(self, base):
        super().__init__()
        self.base, self.log_det = base, {}

    def _pyro_sample(self, msg):
        name = msg["name"]
        if name not in self.base:
            return
        flow = flow_of(msg["fn"])
        y, ladj = self.base[name], 0.0
        for t in flow.transforms:
            x, y = y, t(y)
            ladj = ladj + sum_rightmost(t.log_abs_det_jacobian(x, y),
                                        msg["fn"].event_dim - t.codomain.event_dim)
        msg["value"], msg["is_observed"] = y, True
        self.log_det[name] = ladj


def _is_identity(transform):
    """Whether ``transform`` is the identity (a real-valued site: no Jacobian)."""
    while hasattr(transform, "base_transform"):  # IndependentTransform
        transform = transform.base_transform
    return isinstance(transform, ComposeTransform) and not transform.parts


def log_mean_exp(log_w):
    """``log mean_c exp(log_w[c])`` over the chains (dim 0), ``(B,)``."""
    return torch.logsumexp(log_w, 0) - math.log(log_w.shape[0])
