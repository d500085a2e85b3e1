"""Data-parallel training and evaluation on ``torch.distributed``.

A run started by PyTorch's launcher, ``torchrun --nproc_per_node N -m pyro_vae train ...``
(one node) or with torchrun's rendezvous across nodes, has one process per rank; torchrun
sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``, and
:func:`init_world` joins the process group from them (NCCL when the ranks run on CUDA
devices, one device per local rank; gloo on CPUs). Without those variables everything runs
in one process and :data:`SINGLE` stands for the world.

How the pieces use the world (see :mod:`pyro_vae.trainer` and :mod:`pyro_vae.run` and :mod:`pyro_vae.infer`):

- training: each global batch of ``train.batch_size`` images is split among the ranks
  (:class:`~pyro_vae.batches.EpochBatches` with ``rank``/``world_size``); the ELBO is
  computed through :class:`torch.nn.parallel.DistributedDataParallel`, which averages the
  gradients, and the loss is scaled by the world size so that the averaged gradient is
  the gradient of the summed loss of the whole global batch, exactly as one process with
  the same batch computes it (data-parallel SGD: Goyal et al. 2017, arXiv:1706.02677;
  PyTorch DDP: Li et al. 2020, arXiv:2006.15704).
- evaluation: the datapoint chunks are dealt round-robin to the ranks, each chunk seeded
  by its index, and the per-datapoint estimates gathered on every rank, so the result does
  not depend on the number of ranks.
- only rank 0 (:attr:`World.is_main`) writes files and prints.
"""

import os
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist

from .errors import ConfigError, PyroVAEError


@dataclass
class World:
    """The processes of a data-parallel job, seen from one of them.

    :ivar int rank: this process's rank, ``0 <= rank < size``.
    :ivar int size: the number of processes (1 without ``torch.distributed``).
    :ivar int local_rank: the rank on this node (the CUDA device index on GPUs).
    :ivar torch.device device: the device this rank computes on.
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    #: whether :func:`init_world` created the process group (and :func:`shutdown_world`
    #: may destroy it); a group made by the caller is left alone
    owns_group: bool = False

    @property
    def is_main(self):
        """Whether this is rank 0, the process that writes files and prints."""
        return self.rank == 0

    @property
    def distributed(self):
        """Whether there is more than one process."""
        return self.size > 1

    @property
    def _comm_device(self):
        # NCCL exchanges CUDA tensors, gloo CPU tensors
        if dist.is_initialized() and dist.get_backend() == "nccl":
            return self.device
        return torch.device("cpu")

    def shard(self, n):
        """The indices ``0 <= i < n`` this rank handles (round-robin: ``rank, rank + size,
        ...``)."""
        return list(range(self.rank, int(n), self.size))

    def all_reduce(self, values, op="sum"):
        """Sum (``op="sum"``) or maximum (``op="max"``) of a list of floats over the ranks.

        :returns: a list of floats, the same on every rank.
        """
        if not self.distributed:
            return [float(v) for v in values]
        t = torch.tensor([float(v) for v in values], dtype=torch.float64,
                         device=self._comm_device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
        return t.tolist()

    def any(self, flag):
        """Whether ``flag`` is true on at least one rank (the same answer on every rank)."""
        return bool(self.all_reduce([1.0 if flag else 0.0], op="max")[0])

    def all_gather(self, obj):
        """Every rank's ``obj``, as a list indexed by rank (objects are pickled for the
        exchange only; nothing pickled is ever written to disk)."""
        if not self.distributed:
            return [obj]
        out = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj):
        """Rank 0's ``obj`` on every rank."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self):
        """Wait until every rank gets here."""
        if self.distributed:
            dist.barrier()


#: The world of a single process.
SINGLE = World()


def launched_by_torchrun(environ=None):
    """Whether the environment describes a multi-process job (``WORLD_SIZE`` > 1)."""
    environ = os.environ if environ is None else environ
    return int(environ.get("WORLD_SIZE", "1")) > 1


def resolve_device(device="auto"):
    """``"auto"`` -> CUDA when available, else CPU; ``"cpu"``; ``"cuda"`` / ``"cuda:N"``.

    :raises ConfigError: if CUDA is asked for and not available, or the name is unknown.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"unknown device {device!r}; use auto, cpu or cuda") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but torch sees no CUDA device; "
                          "use --device auto or cpu")
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"unsupported device {device!r}; use auto, cpu or cuda")
    return dev


def init_world(device="auto", environ=None):
    """Join the process group described by torchrun's environment variables, or return
    the single-process world when there are none.

    :param device: ``"auto"`` (CUDA when there is one, else CPU), ``"cpu"`` or ``"cuda"``;
        on CUDA each rank takes device ``LOCAL_RANK``.
    :returns: a :class:`World`.
    :raises ConfigError: when the variables are incomplete, or a node has more ranks than
        CUDA devices.
    """

    environ = os.environ if environ is None else environ
    dev = resolve_device(device)
    if not launched_by_torchrun(environ):
        return World(device=dev)
    missing = [v for v in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
               if v not in environ]
    if missing:
        raise ConfigError(f"WORLD_SIZE is {environ['WORLD_SIZE']} but {', '.join(missing)} "
                          "is not set: start distributed runs with torchrun, e.g. "
                          "torchrun --nproc_per_node 2 -m pyro_vae train ...")
    rank, size = int(environ["RANK"]), int(environ["WORLD_SIZE"])
    local_rank = int(environ["LOCAL_RANK"])
    if dev.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"local rank {local_rank} has no CUDA device: this node has "
                              f"{torch.cuda.device_count()}; start at most that many "
                              "processes per node (torchrun --nproc_per_node)")
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", rank=rank,
                                world_size=size)
    return World(rank=rank, size=size, local_rank=local_rank, device=dev, owns_group=owns)


def shutdown_world(world):
    """Leave the process group if :func:`init_world` created it."""
    if world.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def rank_seed(seed, rank):
    """The seed of rank ``rank``'s sampling RNG: ``seed`` itself on rank 0 (a one-process
    run is rank 0), a well-separated seed derived from ``(seed, rank)`` elsewhere."""
    if rank == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), int(rank)]).generate_state(1)[0])


def chunk_seed(seed, index):
    """The seed of datapoint chunk ``index`` of an evaluation seeded with ``seed``: the
    same chunk gets the same draws whichever rank evaluates it."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def lock_on_main(world, fn):
    """``fn()`` (which takes a run lock) on rank 0: the lock there, ``None`` on the other
    ranks; an error on rank 0 is raised on every rank."""
    held = []
    on_main(world, lambda: held.append(fn()))
    return held[0] if held else None


def on_main(world, fn):
    """``fn()`` on rank 0, its result (or its error, re-raised) on every rank."""
    result, error = None, None
    if world.is_main:
        try:
            result = fn()
        except PyroVAEError as e:
            error = e
    if world.distributed:
        result, message = world.broadcast((result, None if error is None else
                                           (type(error).__name__, str(error))))
        if message is not None and error is None:
            error = (ConfigError if message[0] == "ConfigError" else PyroVAEError)(message[1])
    if error is not None:
        raise error
    return result
