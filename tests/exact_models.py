"""Models with closed-form log p(x) and posteriors, shared by the estimator tests."""

import math

import pyro
import pyro.distributions as dist
import torch


def linear_gaussian(W, b, s, data_plate="data"):
    """z ~ N(0, I), x ~ N(Wz + b, s^2 I): exact log p(x) = N(x; b, W W^T + s^2 I).

    :returns: ``(model, exact_guide, exact)``: the exact guide samples the posterior
        N(P^-1 W^T (x - b) / s^2, P^-1) with precision P = I + W^T W / s^2; ``exact(x)`` is
        log p(x) ``(N,)``.
    """
    D, _ = W.shape

    def model(x):
        with pyro.plate(data_plate, x.shape[0], dim=-1):
            z = pyro.sample("z", dist.Normal(torch.zeros(W.shape[1]), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ W.T + b, s).to_event(1), obs=x)

    cov_post = torch.linalg.inv(torch.eye(W.shape[1]) + W.T @ W / s**2)

    def exact_guide(x):
        mean = (x - b) @ W @ cov_post.T / s**2
        with pyro.plate(data_plate, x.shape[0], dim=-1):
            pyro.sample("z", dist.MultivariateNormal(mean, covariance_matrix=cov_post))

    def exact(x):
        return dist.MultivariateNormal(b, W @ W.T + s**2 * torch.eye(D)).log_prob(x)

    return model, exact_guide, exact


def shifted_guide(W, b, s, shift=1.0, widen=1.5, data_plate="data"):
    """An imperfect guide of :func:`linear_gaussian`: diagonal Gaussian, its mean shifted by
    ``shift`` and its scales ``widen`` times the posterior marginals'."""
    cov_post = torch.linalg.inv(torch.eye(W.shape[1]) + W.T @ W / s**2)

    def guide(x):
        mean = (x - b) @ W @ cov_post.T / s**2 + shift
        with pyro.plate(data_plate, x.shape[0], dim=-1):
            pyro.sample("z", dist.Normal(mean, widen * cov_post.diag().sqrt()).to_event(1))

    return guide


def two_layer_gaussian(A, t, W, b, s, data_plate="obs"):
    """z2 ~ N(0, I), z1 | z2 ~ N(A z2, t^2 I), x | z1 ~ N(W z1 + b, s^2 I), in a data plate
    named ``data_plate``; exact log p(x) = N(x; b, W (A A^T + t^2 I) W^T + s^2 I).

    :returns: ``(model, prior_guide, exact)``: the guide draws both layers from the prior
        (a poor proposal that knows nothing of x).
    """
    d1, d2 = A.shape

    def model(x):
        with pyro.plate(data_plate, x.shape[0], dim=-1):
            z2 = pyro.sample("z2", dist.Normal(torch.zeros(d2), 1.0).to_event(1))
            z1 = pyro.sample("z1", dist.Normal(z2 @ A.T, t).to_event(1))
            pyro.sample("x", dist.Normal(z1 @ W.T + b, s).to_event(1), obs=x)

    def prior_guide(x):
        with pyro.plate(data_plate, x.shape[0], dim=-1):
            z2 = pyro.sample("z2", dist.Normal(torch.zeros(x.shape[0], d2), 1.0).to_event(1))
            pyro.sample("z1", dist.Normal(z2 @ A.T, t).to_event(1))

    cov = W @ (A @ A.T + t**2 * torch.eye(d1)) @ W.T + s**2 * torch.eye(W.shape[0])

    def exact(x):
        return dist.MultivariateNormal(b, cov).log_prob(x)

    return model, prior_guide, exact


def linear_gaussian_case(num_data, seed=1, shift=1.0, widen=1.5):
    """The shared test case: a 2-latent, 4-dimensional :func:`linear_gaussian` model with
    random W, b (``seed``), s = 0.7, ``num_data`` rows drawn from its marginal, and the
    imperfect :func:`shifted_guide`.

    :returns: a dict with ``model``, ``guide`` (shifted), ``exact_guide``, ``x``
        ``(num_data, 4)``, ``exact`` (log p(x), ``(num_data,)``, float64), ``exact_fn``,
        ``marginal``, ``precision`` (of the posterior), ``closed_form_elbo`` (the shifted
        guide's ELBO per row, ``(num_data,)``) and ``W``, ``b``, ``s``.
    """
    torch.manual_seed(seed)
    W, b, s = torch.randn(4, 2), torch.randn(4), 0.7
    model, exact_guide, exact = linear_gaussian(W, b, s)
    marginal = dist.MultivariateNormal(b, W @ W.T + s**2 * torch.eye(4))
    x = marginal.sample((num_data,))
    precision = torch.eye(2) + W.T @ W / s**2
    cov_post = torch.linalg.inv(precision)

    # E_q[log p(x|z)] + E_q[log p(z)] + H[q] for q = N(m, diag(v)), in closed form
    m = (x - b) @ W @ cov_post.T / s**2 + shift
    v = (widen * cov_post.diag().sqrt()) ** 2
    resid = x - m @ W.T - b
    e_lik = -0.5 * 4 * math.log(2 * math.pi * s**2) - (
        (resid**2).sum(-1) + (W**2 @ v).sum()) / (2 * s**2)
    e_prior = -math.log(2 * math.pi) - 0.5 * ((m**2).sum(-1) + v.sum())
    entropy = math.log(2 * math.pi * math.e) + 0.5 * v.log().sum()

    return dict(model=model, guide=shifted_guide(W, b, s, shift, widen),
                exact_guide=exact_guide, x=x, exact=exact(x).double(), exact_fn=exact,
                marginal=marginal, precision=precision,
                closed_form_elbo=e_lik + e_prior + entropy, W=W, b=b, s=s)
