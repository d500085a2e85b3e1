"""Per-datapoint ELBO and its terms, for any model/guide pair.

The ELBO of a datapoint is the mean of its log weights (Kingma & Welling 2013,
arXiv:1312.6114); :func:`elbo_terms` splits it into the reconstruction term and each latent
site's KL term, read off the same traces.
"""


from .chunks import batch_size_of, map_chunks
from .traces import (latent_order, log_weights, pair_traces, particle_traces, per_datapoint,
                     prepare_estimate)


def elbo(model, guide, data, batch_size=1000, seed=0, device=None, world=None,
         data_plate="data", vectorize_particles=True, model_kwargs=None, guide_kwargs=None):
    """Single-sample ELBO of every datapoint, in nats.

    :param callable model: a Pyro model (see :func:`log_weights`).
    :param callable guide: its guide.
    :param torch.Tensor data: ``(N, *event_shape)``, or a tuple of model arguments.
    :param int batch_size: datapoints per chunk.
    :param int seed: seeds the guide's samples, chunk by chunk (:func:`map_chunks`); the
        caller's RNG state is restored after.
    :param device: where chunks are sent (default: where ``data`` is).
    :param world: a :class:`~pyro_vae.distributed.World` to share the work with.
    :param str data_plate: the name of the data plate.
    :param bool vectorize_particles: ``False`` traces without an outer particle plate, for
        a model that cannot broadcast over one (see :func:`log_likelihood`).
    :param dict model_kwargs: keyword arguments for every call of the model.
    :param dict guide_kwargs: keyword arguments for every call of the guide.
    :returns: tensor ``(N,)`` on the CPU.
    :raises ValueError: if ``data`` is empty.
    :raises ModelGuideMismatch: see :func:`log_weights`.
    """
    if batch_size_of(data) == 0:
        raise ValueError("data is empty: there is nothing to evaluate")
    model, guide, device, nesting = prepare_estimate(model, guide, data, batch_size, seed, device,
                                                     model_kwargs, guide_kwargs)
    return map_chunks(lambda x: {"elbo": log_weights(model, guide, x, 1, data_plate, nesting,
                                                     vectorize_particles)[0]},
                      data, batch_size, seed, device, world)["elbo"]


def elbo_terms(model, guide, data, batch_size=1000, seed=0, device=None, data_plate="data",
               world=None, vectorize_particles=True, model_kwargs=None, guide_kwargs=None):
    """The single-sample ELBO of every datapoint split into its terms, in nats:
    ``reconstruction`` (log p(x | z) of the observed sites) and, per latent site, the
    Monte Carlo KL term ``log q(z_s | .) - log p(z_s | .)`` at the joint sample (right for
    any order of sampling in model and guide; its sum over sites is the ELBO's KL).

    The chunks are seeded by their index (:func:`map_chunks`); ``world`` shares them
    among the ranks of a distributed job. ``vectorize_particles``, ``model_kwargs`` and
    ``guide_kwargs`` are as in :func:`elbo`.

    :returns: dict of ``(N,)`` CPU tensors: ``"elbo"``, ``"reconstruction"`` and
        ``"kl/<site>"`` for every latent site.
    :raises ValueError: if ``data`` is empty.
    :raises ModelGuideMismatch: see :func:`log_weights`.
    """
    if batch_size_of(data) == 0:
        raise ValueError("data is empty: there is nothing to evaluate")
    model, guide, device, nesting = prepare_estimate(model, guide, data, batch_size, seed, device,
                                                     model_kwargs, guide_kwargs)

    def compute(x):
        if vectorize_particles:
            model_trace, guide_trace, _ = particle_traces(model, guide, x, 1, nesting)
        else:
            model_trace, guide_trace = pair_traces(model, guide, x)
        args = (data_plate, 1, batch_size_of(x), nesting)
        terms = {"reconstruction": per_datapoint(model_trace, "model", *args,
                                                  include="observed")[0]}
        for name in latent_order(guide_trace):
            terms[f"kl/{name}"] = (
                per_datapoint(guide_trace, "guide", *args, include={name}) -
                per_datapoint(model_trace, "model", *args, include={name}))[0]
        terms["elbo"] = terms["reconstruction"] - sum(
            v for k, v in terms.items() if k.startswith("kl/"))
        return terms

    return map_chunks(compute, data, batch_size, seed, device, world)
