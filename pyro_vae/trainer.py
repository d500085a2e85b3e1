"""Stochastic variational inference, step by step: the :class:`Trainer`.

The loss is an :class:`~pyro_vae.infer.objectives.Objective` (Pyro's
:class:`~pyro.infer.Trace_ELBO` by default) computed from the traces of ``vae.model`` and
``vae.guide`` (Kingma & Welling 2013, arXiv:1312.6114; Hoffman et al. 2013,
arXiv:1206.7051). The step is the objective's ``differentiable_loss`` followed by
``torch.optim.Adam``: the same gradient as ``pyro.infer.SVI`` with ``pyro.optim.Adam``,
measurably faster per step on small networks (DESIGN.md), and its optimizer state is an
ordinary ``state_dict`` for checkpoints. Pyro's argument and shape validation runs on the
first step of every run (it catches a component that breaks the shape contract) and is
off afterwards, where it cost about 15% of a step on the baseline network.

Everything that varies along a run (KL warm-up, learning-rate schedule) is a function of
the step, and every RNG state is saved, so a resumed run continues exactly.
"""

import math
import random

import numpy as np
import pyro
import torch
from pyro.poutine.messenger import Messenger

from . import infer
from .distributed import SINGLE, rank_seed
from .errors import CheckpointError, TrainingDiverged
from .adversary import Adversary
from .infer.objectives import ELBO, as_objective
from .nets import MLP, ConvDecoder, ConvEncoder
from .optim import OPTIMIZERS, make_optimizer, normalize_gradients
from .runs import load_weights


def rng_state(batches):
    """Every RNG state a resumed run needs, as tensors and plain data."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]),
                  "cached_gaussian": float(np_state[4])},
        "python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
        "data": batches.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state, batches):
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached_gaussian"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    batches.set_state(state["data"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class _OwnParameters(Messenger):
    """A Pyro effect handler: ``pyro.param(name, init)`` with ``init`` one of ``parameters``
    returns ``init`` itself and leaves Pyro's param store untouched (other sites pass)."""

    def __init__(self, parameters):
        super().__init__()
        self.ids = {id(p) for p in parameters}

    def _pyro_param(self, msg):
        args = msg["args"]
        if len(args) > 1 and id(args[1]) in self.ids:
            msg["value"] = args[1]


class Trainer:
    """Minibatch SVI on a Pyro model/guide pair with Adam.

    :param vae: an object with ``model(x)`` and ``guide(x)`` Pyro callables and
        ``parameters()`` (e.g. :class:`~pyro_vae.vae.VAE`), already on the device.
    :param EpochBatches batches: the training batches, on the device.
    :param float lr: Adam's (initial) learning rate.
    :param loss: the objective (default the ELBO by ``Trace_ELBO``): an
        :class:`~pyro_vae.infer.objectives.Objective`, or any Pyro loss with
        ``differentiable_loss(model, guide, *args)`` (wrapped in
        :class:`~pyro_vae.infer.objectives.PyroLoss`, which applies the KL weight).
    :param float beta: the KL weight after warm-up.
    :param int warmup_steps: steps over which the KL weight rises linearly to ``beta``.
    :param str lr_schedule: ``constant``, ``cosine`` (to 0 at ``total_steps``) or
        ``exponential`` (``lr_decay`` per epoch).
    :param float lr_decay: see ``lr_schedule``.
    :param int total_steps: the run's planned number of steps (for ``cosine``).
    :param float clip_norm: clip the global gradient norm to this (0: off).
    :param str optimizer: ``"adam"``, or ``"adam_normgrad"``: each parameter tensor's
        gradient divided by its L2 norm before the Adam step (see
        :func:`~pyro_vae.optim.normalize_gradients`; after any clipping).
    :param world: a :class:`~pyro_vae.distributed.World`. With several ranks the loss is
        computed through :class:`~torch.nn.parallel.DistributedDataParallel` (which
        averages the gradients over the ranks) and scaled by the world size, so each step
        follows the gradient of the loss summed over the whole global batch, as one
        process would; ``batches`` must then hold this rank's shards. The ranks agree after
        every step on stopping (SIGINT on any rank) and on a non-finite loss.

    Everything that varies along the run is a function of :attr:`step`, so a resumed run
    continues the same warm-up and schedule.

    :ivar int epoch: completed epochs. :ivar int step: completed optimizer steps.
    """

    def __init__(self, vae, batches, lr=1e-3, loss=None, beta=1.0, warmup_steps=0,
                 lr_schedule="constant", lr_decay=1.0, total_steps=None, clip_norm=0.0,
                 world=None, optimizer="adam"):
        self.vae = vae
        self.world = SINGLE if world is None else world
        self.batches = batches
        self.loss = as_objective(loss if loss is not None else ELBO())
        self.adversary = Adversary.of(self.loss)  # the discriminator's own optimizer
        held = {id(p) for p in self.adversary.parameters} if self.adversary else set()
        self.parameters = [p for p in vae.parameters() if p.requires_grad and id(p) not in held]
        self.optimizer = make_optimizer(self.parameters, lr)
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {list(OPTIMIZERS)}")
        self.normalize_gradients = optimizer == "adam_normgrad"
        self.lr, self.beta, self.warmup_steps = float(lr), float(beta), int(warmup_steps)
        self.lr_schedule, self.lr_decay = lr_schedule, float(lr_decay)
        self.total_steps = total_steps
        self.clip_norm = float(clip_norm)
        self.epoch = 0
        self.step = 0
        self.batch_in_epoch = 0
        self.epoch_loss = 0.0
        self.epoch_count = 0
        self.stop_requested = False
        self.initial_elbo = None
        self._lr_set = self.lr
        self._stop_agreed = False
        self._forward = _LossModule(self)
        if self.world.distributed:
            self._forward = self._data_parallel()

    def _data_parallel(self):
        """The loss module wrapped in DistributedDataParallel (which broadcasts rank 0's
        weights at construction). Parameters that the loss does not reach (found by one
        probe step on two training images, RNG state kept) make DDP look for unused
        parameters every step; otherwise it does not."""
        x = self.batches.example()
        device = infer.device_of(x)
        devices = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), pyro.validation_enabled(False), \
                self._unregistered():
            self._loss(x, self.kl_weight()).backward()
        unused = any(p.grad is None for p in self.parameters)
        self.optimizer.zero_grad(set_to_none=True)
        ids = [device.index or 0] if device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(
            self._forward, device_ids=ids, find_unused_parameters=unused)

    def kl_weight(self, step=None):
        """The KL weight at ``step`` (default: the next step): ``beta * min(1, (step + 1) /
        warmup_steps)``, or ``beta`` without warm-up."""
        step = self.step if step is None else int(step)
        if self.warmup_steps <= 0:
            return self.beta
        return self.beta * min(1.0, (step + 1) / self.warmup_steps)

    def learning_rate(self, step=None):
        """The learning rate at ``step`` (default: the next step)."""
        step = self.step if step is None else int(step)
        if self.lr_schedule == "cosine" and self.total_steps:
            return self.lr * 0.5 * (1 + math.cos(math.pi * min(step, self.total_steps)
                                                 / self.total_steps))
        if self.lr_schedule == "exponential":
            return self.lr * self.lr_decay ** (step // len(self.batches))
        return self.lr

    def _unregistered(self):
        """The parameters are optimized here directly: within the block, a ``pyro.param``
        site (as ``pyro.module`` makes) whose initial tensor is one of them takes that
        tensor itself instead of going through Pyro's global param store."""
        return _OwnParameters(self.parameters)

    def _loss(self, x, kl_weight):
        return self.loss.differentiable_loss(self.vae.model, self.vae.guide, x,
                                             kl_weight=kl_weight)

    def training_step(self, x):
        """One step on the batch ``x``; returns the loss (the negative objective summed
        over the batch, with the current KL weight; nats).

        :raises TrainingDiverged: when the loss or the gradient is NaN or infinite; the
            parameters are not updated with that step.
        """
        self.loss.set_step(self.step)
        with pyro.validation_enabled(self.step == 0), self._unregistered():
            loss = self._forward(x, self.kl_weight())
        value = loss.item()
        if self.initial_elbo is None and math.isfinite(value):
            self.initial_elbo = -value / infer.batch_size_of(x)
        where = f"at epoch {self.epoch + 1}, step {self.step + 1}"
        world = self.world
        if not math.isfinite(value) and not world.distributed:
            raise TrainingDiverged(f"the loss became {value} {where}", epoch=self.epoch + 1,
                                   step=self.step + 1)
        self.optimizer.zero_grad(set_to_none=True)
        # DDP averages the ranks' gradients: scaled by the world size, the average is the
        # gradient of the loss summed over the global batch
        (loss * world.size if world.distributed else loss).backward()
        if world.distributed:
            # every rank takes the same decision, or the next collective would hang
            bad_loss, stop = world.all_reduce([not math.isfinite(value), self.stop_requested],
                                              op="max")
            if bad_loss:
                raise TrainingDiverged(f"the loss became non-finite on a rank {where}",
                                       epoch=self.epoch + 1, step=self.step + 1)
            self._stop_agreed = bool(stop)
        if self.clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.parameters, self.clip_norm)
        if self._non_finite_gradient():
            bad = [name for name, p in self.vae.named_parameters()
                   if p.grad is not None and not torch.isfinite(p.grad).all()]
            raise TrainingDiverged(f"the gradient became non-finite (NaN or inf) {where} (in "
                                   f"{', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''})",
                                   epoch=self.epoch + 1, step=self.step + 1)
        if self.normalize_gradients:
            normalize_gradients(self.parameters)
        lr = self.learning_rate()
        if lr != self._lr_set:
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            self._lr_set = lr
        self.optimizer.step()
        if self.adversary is not None:
            with self._unregistered():
                self.adversary.step(self.vae.model, self.vae.guide, x)
        self.step += 1
        return value

    def _non_finite_gradient(self):
        """Whether any gradient holds a NaN or an infinity: the sum of all gradient entries
        is then not finite. The sum is taken in the gradients' own precision (one read of
        each and one synchronization, cheaper than a global norm, which squares every entry
        first); only when it is not finite, which finite entries can also cause by
        overflowing it, is it taken again accumulated in float64, which they cannot
        overflow."""
        grads = [p.grad for p in self.parameters if p.grad is not None]
        if not grads:
            return False
        if math.isfinite(torch.stack([g.sum() for g in grads]).sum().item()):
            return False
        total = torch.stack([g.sum(dtype=torch.float64) for g in grads]).sum()
        return not math.isfinite(total.item())

    def train_epoch(self, progress=None):
        """One pass over the training batches (or the rest of one, after a resume inside
        it). Stops early, with the epoch incomplete, when :attr:`stop_requested` is set
        (e.g. by SIGINT); check :attr:`batch_in_epoch`.

        :param progress: a tqdm bar to advance (or ``None``).
        :returns: the mean training loss of the epoch as an ELBO, nats per datapoint (with
            the KL weights used), or ``None`` if stopped inside the epoch.
        :raises TrainingDiverged: see :meth:`training_step`.
        """
        for x in self.batches.epoch(skip=self.batch_in_epoch):
            self.epoch_loss += self.training_step(x)
            self.epoch_count += infer.batch_size_of(x)
            self.batch_in_epoch += 1
            if progress is not None:
                progress.update(1)
                if self.step % 10 == 0:
                    progress.set_postfix(epoch=self.epoch + 1,
                                         elbo=f"{-self.epoch_loss / self.epoch_count:.2f}",
                                         refresh=False)
            # in a distributed run the decision taken together in the step, never the local
            # flag: a signal arriving after that exchange would leave the ranks out of step
            if self._stop_agreed if self.world.distributed else self.stop_requested:
                self.stop_requested = self._stop_agreed = True
                return None
        total, count = self.world.all_reduce([self.epoch_loss, self.epoch_count])
        value = -total / count
        self.epoch += 1
        self.batch_in_epoch, self.epoch_loss, self.epoch_count = 0, 0.0, 0
        return value

    def state_dict(self):
        """Weights, optimizer, epoch, step, position inside the epoch and RNG states (tensors
        and plain data). Inside an epoch, the data generator's state is the one at the
        epoch's start (the batches are regenerated and the trained ones skipped)."""
        rng = rng_state(self.batches)
        if self.batch_in_epoch:
            rng["data"] = self.batches.epoch_start_state
        # a collective in a distributed run: every rank calls it, rank 0 writes the result
        epoch_loss, epoch_count = self.world.all_reduce([self.epoch_loss, self.epoch_count])
        state = {"model": self.vae.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "epoch": self.epoch, "step": self.step, "rng": rng,
                 "batch_in_epoch": self.batch_in_epoch, "epoch_loss": epoch_loss,
                 "epoch_count": int(epoch_count), "initial_elbo": self.initial_elbo}
        if self.adversary is not None:
            state["adversary"] = self.adversary.state_dict()
        if self.world.distributed:
            # each rank samples with its own RNG; the data generator is shared
            state["rng_ranks"] = self.world.all_gather(
                {key: rng[key] for key in ("torch", "cuda") if key in rng})
        return state

    def load_state_dict(self, state):
        """Restore what :meth:`state_dict` returned.

        :raises CheckpointError: if the weights or the optimizer state do not fit the model.
        """
        load_weights(self.vae, state, "checkpoint")
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError, RuntimeError, TypeError) as e:
            raise CheckpointError(f"the checkpoint's optimizer state does not fit the model ({e});"
                                  " it was edited or mixed from two runs") from None
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                for key, value in self.optimizer.state.get(p, {}).items():
                    if torch.is_tensor(value) and value.dim() > 0 and value.shape != p.shape:
                        raise CheckpointError(f"the checkpoint's optimizer state {key!r} has shape "
                                              f"{tuple(value.shape)} for a parameter of shape "
                                              f"{tuple(p.shape)}; it was edited or mixed from "
                                              "two runs")
        if self.adversary is not None:
            if "adversary" not in state:
                raise CheckpointError("the checkpoint holds no discriminator optimizer state, "
                                      "which this adversarial objective needs")
            self.adversary.load_state_dict(state["adversary"])
        self.initial_elbo = state.get("initial_elbo")
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self._lr_set = None
        self.batch_in_epoch = int(state.get("batch_in_epoch", 0))
        self.epoch_loss = float(state.get("epoch_loss", 0.0))
        self.epoch_count = int(state.get("epoch_count", 0))
        set_rng_state(state["rng"], self.batches)
        world = self.world
        if world.rank > 0:  # the epoch's partial sums are global: rank 0 carries them
            self.epoch_loss, self.epoch_count = 0.0, 0
        ranks = state.get("rng_ranks")
        if ranks is not None and len(ranks) == world.size:
            torch.set_rng_state(ranks[world.rank]["torch"])
            if "cuda" in ranks[world.rank] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(ranks[world.rank]["cuda"])
        elif world.rank > 0 or ranks is not None:
            # resumed with another number of ranks: every rank still needs its own stream
            pyro.set_rng_seed(rank_seed(self.step, world.rank))


class _LossModule(torch.nn.Module):
    """The trainer's loss as a module whose ``forward(x, kl_weight)`` returns it, the form
    DistributedDataParallel wraps (its hooks run in ``forward``)."""

    def __init__(self, trainer):
        super().__init__()
        self.vae = trainer.vae
        object.__setattr__(self, "_trainer", trainer)  # not a submodule

    def forward(self, x, kl_weight):
        return self._trainer._loss(x, kl_weight)


def seed_everything(seed):
    """Seed python, numpy and torch (CPU and CUDA) through Pyro."""
    pyro.set_rng_seed(int(seed))


#: The objective counts as diverging when the epoch's train ELBO lies this many times the
#: untrained model's magnitude below the untrained model's ELBO.
DIVERGENCE_FACTOR = 10.0


def diverging(train_elbo, initial_elbo):
    """Whether an epoch's train ELBO (nats per datapoint) is far worse than the untrained
    model's at the first step: below ``initial - DIVERGENCE_FACTOR * max(1, |initial|)``.
    Ordinary training only raises the ELBO, so this flags a learning rate that throws the
    model far from any sensible one (e.g. ``--lr 1000``)."""
    if train_elbo is None or initial_elbo is None:
        return False
    return train_elbo < initial_elbo - DIVERGENCE_FACTOR * max(1.0, abs(initial_elbo))


def compile_networks(module):
    """Compile every encoder/decoder network inside ``module`` in place with
    ``torch.compile`` (``nn.Module.compile``: parameter names and checkpoints unchanged).

    :returns: the number of networks compiled.
    """
    if isinstance(module, (MLP, ConvEncoder, ConvDecoder)):
        module.compile()
        return 1
    return sum(compile_networks(child) for child in module.children())


def eager():
    """Run compiled networks eagerly inside the block (evaluation: other shapes than the
    training batches, which would each trigger a compilation)."""
    return torch.compiler.set_stance("force_eager")
