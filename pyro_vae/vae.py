"""The VAE: a Pyro model (prior + likelihood) and a Pyro guide (encoder posterior).

``VAE(prior, guide, likelihood)`` composes three modules and knows nothing of inference:
``vae.model`` and ``vae.guide`` hold only ``pyro.module``, ``pyro.plate`` and
``pyro.sample``, so any ``pyro.infer`` algorithm takes them unchanged::

    svi = pyro.infer.SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}),
                         pyro.infer.Trace_ELBO())

Sites: ``"z"`` (latent, batch ``(B,)``, event ``(D,)``) and ``"x"`` (observed, batch
``(B,)``, event ``event_shape``), both inside ``pyro.plate("data", B, dim=-1)``. The
leftmost dims are free for an outer particle plate.
"""

from contextlib import contextmanager

import pyro
import torch
from torch import nn


def point_estimate(q):
    """``q.mean`` where it exists; for a transformed distribution, its base distribution's
    point estimate pushed through the transforms; otherwise one sample."""
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
    :raises ValueError: if the event shape is unknown, or the components' ``latent_dim``
        attributes (where they have one) differ.

    The modules are reachable as ``vae.prior``, ``vae.posterior`` (the guide module; the
    name ``guide`` is the Pyro guide method) and ``vae.likelihood``.
    """

    def __init__(self, prior, guide, likelihood, event_shape=None, name="vae"):
        super().__init__()
        self.prior = prior
        self.posterior = guide
        self.likelihood = likelihood
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
        known = {role: d for role, d in sizes.items() if d is not None}
        if len(set(known.values())) > 1:
            raise ValueError(f"the components disagree on the latent size: {known}; build "
                             "them with the same latent_dim")

    #: Whether ``model``/``guide`` register the modules' parameters in Pyro's param store
    #: (``pyro.module``), which Pyro's optimizers (``SVI`` with ``pyro.optim``) need. The
    #: project's trainer optimizes ``vae.parameters()`` directly and switches it off during
    #: its steps (see :meth:`params_unregistered`): registration cost about 0.3 ms a step.
    register_params = True

    def register(self, *roles):
        """``pyro.module`` for the named submodules (``"prior"``, ``"posterior"`` (the guide
        module), ``"likelihood"``, ...), named ``<name>.<role>``, unless
        :attr:`register_params` is off."""
        if self.register_params:
            for role in roles:
                pyro.module(f"{self.name}.{'guide' if role == 'posterior' else role}",
                            getattr(self, role))

    @contextmanager
    def params_unregistered(self):
        """Within the block, ``model`` and ``guide`` skip ``pyro.module`` (for a loop that
        optimizes ``self.parameters()`` itself)."""
        previous = self.register_params
        self.register_params = False
        try:
            yield self
        finally:
            self.register_params = previous

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

    def model(self, x):
        """The generative model p(z) p(x|z) with ``x`` observed.

        :param torch.Tensor x: a batch, shape ``(B, *event_shape)``.
        :returns: the latent sample ``z`` (leading particle dims, then ``(B, D)``).
        """
        batch_size = self.check_input(x)
        self.register("prior", "likelihood")
        with pyro.plate("data", batch_size, dim=-1):
            z = pyro.sample("z", self.prior(batch_size))
            pyro.sample("x", self.likelihood(z), obs=x)
        return z

    def guide(self, x):
        """The amortized variational posterior q(z|x).

        :param torch.Tensor x: a batch, shape ``(B, *event_shape)``.
        :returns: the latent sample ``z``.
        """
        batch_size = self.check_input(x)
        self.register("posterior")
        with pyro.plate("data", batch_size, dim=-1):
            return pyro.sample("z", self.posterior(x))

    def reconstruct(self, x):
        """Decode a point estimate of the latent: the mean of p(x | z_hat), shape
        ``(B, *event_shape)``. ``z_hat`` is the guide's mean, or for a flow guide (whose
        mean has no closed form) the base distribution's mean pushed through the flow."""
        self.check_input(x)
        return self.likelihood(point_estimate(self.posterior(x))).mean

    @torch.no_grad()
    def sample(self, num_samples, temperature=1.0):
        """Draw z from the prior and return the likelihood's mean, shape ``(n, *event_shape)``
        (without gradients: for figures).

        :param float temperature: scale of the prior's standard deviation (below 1: more
            typical, less varied samples; Kingma & Dhariwal 2018, arXiv:1807.03039); needs
            a Gaussian prior.
        :raises ValueError: for a temperature other than 1 with a non-Gaussian prior.
        """
        z = draw(self.prior(num_samples), temperature)
        return self.likelihood(z).mean


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
