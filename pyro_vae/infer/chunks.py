"""Evaluation data as Pyro model arguments, in seeded chunks.

The data an estimator takes is one tensor ``(N, *event_shape)`` or a tuple of tensors with
a common first dimension (the model's arguments, e.g. ``(x, y)`` for a conditional model).
:func:`map_chunks` runs a per-chunk computation over it with each chunk seeded by its
index, so that the result does not depend on how chunks are shared among processes.
"""

import hashlib
from contextlib import contextmanager

import torch

from ..distributed import SINGLE, chunk_seed


def batch_args(data):
    """The model's positional arguments for ``data`` (a tensor or a tuple of tensors)."""
    return tuple(data) if isinstance(data, (tuple, list)) else (data,)


def batch_size_of(data):
    """N, the first dimension of ``data``."""
    return batch_args(data)[0].shape[0]


def rows(data, start, stop):
    """Datapoints ``start:stop`` of ``data`` (of every tensor of a tuple)."""
    if isinstance(data, (tuple, list)):
        return tuple(a[start:stop] for a in data)
    return data[start:stop]


def to_device(data, device):
    """``data`` (a tensor or a tuple of tensors) on ``device``."""
    if isinstance(data, (tuple, list)):
        return tuple(a.to(device) for a in data)
    return data.to(device)


def device_of(data):
    """The device of ``data``'s first tensor."""
    return batch_args(data)[0].device


@contextmanager
def seeded(seed, device=None):
    """Seed torch's RNG for the block and restore the caller's RNG state afterwards.

    :param int seed: the seed.
    :param device: a CUDA device whose RNG is forked too (CPU is always forked).
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def map_chunks(compute, data, batch_size, seed=0, device=None, world=None, progress=False,
               desc=None):
    """Apply ``compute`` to the data chunk by chunk, each chunk seeded by its index, and
    concatenate the results in data order.

    With a :class:`~pyro_vae.distributed.World` of several ranks the chunks are dealt
    round-robin and the results gathered on every rank; since a chunk's draws depend only
    on ``(seed, chunk index)``, the result is the same for any number of ranks.

    :param callable compute: ``compute(x)`` for a chunk ``x`` of ``(b, *event_shape)`` on
        ``device``, returning a dict of tensors whose first dimension is ``b``.
    :param torch.Tensor data: ``(N, *event_shape)``.
    :param int batch_size: datapoints per chunk.
    :param int seed: seeds the chunks (see :func:`~pyro_vae.distributed.chunk_seed`); the
        caller's RNG state is restored afterwards.
    :param device: where chunks are sent (default: where ``data`` is).
    :param world: a :class:`~pyro_vae.distributed.World` (default: one process).
    :returns: dict of CPU tensors with first dimension ``N``.
    """
    from tqdm.auto import tqdm


    world = SINGLE if world is None else world
    device = torch.device(device) if device is not None else device_of(data)
    starts = list(range(0, batch_size_of(data), int(batch_size)))
    mine = {}
    for index in tqdm(world.shard(len(starts)), disable=not progress or not world.is_main,
                      unit="chunk", desc=desc):
        x = to_device(rows(data, starts[index], starts[index] + batch_size), device)
        with seeded(chunk_seed(seed, index), device), torch.no_grad():
            mine[index] = {key: value.cpu() for key, value in compute(x).items()}
    chunks = {}
    for part in world.all_gather(mine):
        chunks.update(part)
    keys = chunks[0].keys()
    return {key: torch.cat([chunks[i][key] for i in range(len(starts))]) for key in keys}


def data_fingerprint(data):
    """A short SHA-256 of the data's bytes, to check that two results share test points."""
    digest = hashlib.sha256()
    for tensor in batch_args(data):
        array = tensor.detach().cpu().contiguous().numpy()
        digest.update(array.tobytes() + str(array.shape).encode())
    return digest.hexdigest()[:16]


def check_data(data, num_particles, batch_size, particle_batch):
    """Check an estimator's data and chunk sizes before any work.

    :param data: a tensor ``(N, *event_shape)`` or a tuple of tensors with one ``N``.
    :raises ValueError: for data that is not a tensor (or tuple of them), tensors that
        disagree on ``N``, an empty set, NaN values, or sizes that are not integers >= 1.
    """
    if isinstance(data, (tuple, list)) and data and \
            all(isinstance(a, torch.Tensor) and a.dim() >= 1 for a in data):
        if len({a.shape[0] for a in data}) > 1:
            raise ValueError(f"the tensors of data disagree on N: {[tuple(a.shape) for a in data]}")
        data = data[0]
    if not isinstance(data, torch.Tensor):
        raise ValueError(f"data must be a torch.Tensor of shape (N, *event_shape) (or a tuple "
                         f"(x, y) for a conditional model), got {type(data)}")
    if data.dim() < 1 or data.shape[0] == 0:
        raise ValueError(f"data is empty (shape {tuple(data.shape)}): there is nothing to evaluate")
    if data.is_floating_point() and torch.isnan(data).any():
        raise ValueError(f"data holds {int(torch.isnan(data).sum())} NaN values; clean it first")
    for name, value in (("num_particles", num_particles), ("batch_size", batch_size),
                        ("particle_batch", particle_batch)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be an integer of at least 1, got {value}")
