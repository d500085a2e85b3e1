"""Training by stochastic variational inference, in a run folder.

The loss is Pyro's :class:`~pyro.infer.Trace_ELBO` computed from the traces of
``vae.model`` and ``vae.guide`` (Kingma & Welling 2013, arXiv:1312.6114; Hoffman et al.
2013, arXiv:1206.7051). The step is ``Trace_ELBO().differentiable_loss`` followed by
``torch.optim.Adam``: the same gradient as ``pyro.infer.SVI`` with ``pyro.optim.Adam``,
measurably faster per step on small networks (DESIGN.md), and its optimizer state is an
ordinary ``state_dict`` for checkpoints. Pyro's argument and shape validation runs on the
first step of every run (it catches a component that breaks the shape contract) and is
off afterwards, where it cost about 15% of a step on the baseline network; the data's
values are checked once when it is loaded.

A run folder (:class:`Run`) holds::

    config.json          the resolved recipe
    checkpoint.pt        weights, optimizer, config, epoch, step, RNG states (atomic)
    metrics.jsonl        one line per epoch: train/validation ELBO, seconds, images/s
    eval.json            test log-likelihood (IWAE, k from the recipe), ELBO, diagnostics
    loglik-k<K>-seed<S>.pt   the per-datapoint estimates behind eval.json
    samples.png, reconstructions.png, curves.png
"""

import dataclasses
import json
import math
import random
import signal
import threading
import time
import warnings
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
import pyro
import torch
from tqdm.auto import tqdm

from . import evaluate
from .checkpoint import load_checkpoint, save_checkpoint
from .config import build_vae, check_model_size, check_step_memory
from .data import (EpochBatches, data_fingerprint, keep_classes, labelled_subset, load_dataset,
                   prepare_eval_splits)
from .distributed import SINGLE, rank_seed
from .errors import (CheckpointError, ConfigError, RunFolderError, TrainingDiverged,
                     TrainingWarning)
from .files import write_text
from .nets import MLP, ConvDecoder, ConvEncoder
from .objectives import (ELBO, FreeBitsELBO, IWAEObjective, ScaleLatents, SemiSupervisedELBO,
                         make_objective)
from .runs import (best_state, check_recorded_config, evaluate_run, load_weights, read_metrics, resolve_device,
                   save_result, update_eval_json, write_figures, write_json)

def check_compatible(likelihood, data, binarization):
    """Refuse a likelihood on data outside its support, before any training.

    :raises ConfigError: e.g. a Bernoulli likelihood on grey-level data without
        binarization, or a discretized logistic on binarized data or off its grid.
    """
    kind = getattr(likelihood, "data_kind", None)
    name = type(likelihood).__name__
    if kind == "binary" and binarization == "none" and not data.is_binary:
        raise ConfigError(
            f"the {name} needs binary data, but {data.name} has grey levels in [0, 1] and "
            "data.binarization is 'none'; set data.binarization to 'dynamic' (the published "
            "protocol) or 'static', or choose a likelihood for grey-level data "
            "(continuous_bernoulli, gaussian, discretized_logistic)")
    if kind == "discrete grey levels" and binarization != "none":
        raise ConfigError(f"the {name} models grey levels, but data.binarization is "
                          f"{binarization!r}; set data.binarization = 'none'")
    if binarization == "none" and hasattr(likelihood, "check_data"):
        try:
            likelihood.check_data(data.train)
        except ValueError as e:
            raise ConfigError(f"{data.name}: {e}") from None


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


def make_optimizer(parameters, lr):
    """Adam (Kingma & Ba 2014, arXiv:1412.6980) with PyTorch's fused kernel.

    The fused kernel computes the same update as the default per-tensor loop in one pass
    over all parameters: on the baseline network (784-400-50) on 2 CPU cores it took
    0.5 ms a step instead of 1.9 ms. Parameters of a dtype or device the fused kernel does
    not take fall back to the default implementation.

    :param parameters: an iterable of tensors to optimize.
    :param float lr: learning rate.
    :returns: a :class:`torch.optim.Adam`.
    """
    parameters = list(parameters)
    fusable = all(p.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64)
                  and p.device.type in ("cpu", "cuda") for p in parameters)
    return torch.optim.Adam(parameters, lr=lr, fused=fusable or None)


class Trainer:
    """Minibatch SVI on a Pyro model/guide pair with Adam.

    :param vae: an object with ``model(x)`` and ``guide(x)`` Pyro callables and
        ``parameters()`` (e.g. :class:`~pyro_vae.vae.VAE`), already on the device.
    :param EpochBatches batches: the training batches, on the device.
    :param float lr: Adam's (initial) learning rate.
    :param loss: the objective: an object with ``differentiable_loss(model, guide, x)``
        returning the negative objective summed over the batch, in nats (default the
        ELBO by ``Trace_ELBO``); the objectives of :mod:`pyro_vae.objectives` also take
        ``kl_weight``, others get the KL weight through :class:`~pyro_vae.objectives.ScaleLatents`.
    :param float beta: the KL weight after warm-up.
    :param int warmup_steps: steps over which the KL weight rises linearly to ``beta``.
    :param str lr_schedule: ``constant``, ``cosine`` (to 0 at ``total_steps``) or
        ``exponential`` (``lr_decay`` per epoch).
    :param float lr_decay: see ``lr_schedule``.
    :param int total_steps: the run's planned number of steps (for ``cosine``).
    :param float clip_norm: clip the global gradient norm to this (0: off).
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
                 world=None):
        self.vae = vae
        self.world = SINGLE if world is None else world
        self.batches = batches
        self.loss = loss if loss is not None else ELBO()
        self.parameters = [p for p in vae.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(self.parameters, lr)
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
        self._found_inf = None
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
        device = evaluate.device_of(x)
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
        """The parameters are optimized here directly: skip Pyro's param-store registration."""
        if hasattr(self.vae, "params_unregistered"):
            return self.vae.params_unregistered()
        return nullcontext()

    def _loss(self, x, kl_weight):
        if isinstance(self.loss, (ELBO, IWAEObjective, FreeBitsELBO, SemiSupervisedELBO)):
            return self.loss.differentiable_loss(self.vae.model, self.vae.guide, x,
                                                 kl_weight=kl_weight)
        model, guide = self.vae.model, self.vae.guide
        if kl_weight != 1.0:
            model, guide = ScaleLatents(kl_weight)(model), ScaleLatents(kl_weight)(guide)
        return self.loss.differentiable_loss(model, guide, *evaluate.batch_args(x))

    def training_step(self, x):
        """One step on the batch ``x``; returns the loss (the negative objective summed
        over the batch, with the current KL weight; nats).

        :raises TrainingDiverged: when the loss or the gradient is NaN or infinite; the
            parameters are not updated with that step.
        """
        with pyro.validation_enabled(self.step == 0), self._unregistered():
            loss = self._forward(x, self.kl_weight())
        value = loss.item()
        if self.initial_elbo is None and math.isfinite(value):
            self.initial_elbo = -value / evaluate.batch_size_of(x)
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
        lr = self.learning_rate()
        if lr != self._lr_set:
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            self._lr_set = lr
        self.optimizer.step()
        self.step += 1
        return value

    def _non_finite_gradient(self):
        """Whether any gradient holds a NaN or an infinity: one fused pass over all
        gradients (the kernel mixed-precision training uses), instead of a global norm."""
        grads = [p.grad for p in self.parameters if p.grad is not None]
        if not grads:
            return False
        if self._found_inf is None or self._found_inf.device != grads[0].device:
            self._found_inf = torch.zeros(1, device=grads[0].device)
            self._unit_scale = torch.ones(1, device=grads[0].device)
        self._found_inf.zero_()
        by_dtype = {}
        for g in grads:
            by_dtype.setdefault(g.dtype, []).append(g)
        try:
            for group in by_dtype.values():
                torch._amp_foreach_non_finite_check_and_unscale_(group, self._found_inf,
                                                                 self._unit_scale)
        except (AttributeError, RuntimeError, NotImplementedError):  # no such kernel here
            return not math.isfinite(torch.nn.utils.get_total_norm(grads).item())
        return bool(self._found_inf.item())

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
            self.epoch_count += evaluate.batch_size_of(x)
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


class Run:
    """A training run in a folder: data, model, trainer, checkpoints, metrics, figures.

    :param Config config: the resolved recipe.
    :param run_dir: the run folder (made by :func:`prepare_run_folder`, or an existing
        one when resuming).
    :param device: ``"auto"``, ``"cpu"``, ``"cuda"`` or a :class:`torch.device`.
    :param bool quiet: no progress bar.
    :param loss: an objective object for :class:`Trainer` (default: the recipe's
        ``train.objective``).
    :param world: a :class:`~pyro_vae.distributed.World` (default: one process). With
        several ranks every rank builds the same run and trains its shard of each batch;
        only rank 0 writes to the run folder (checkpoints are gathered from all ranks and
        read back by rank 0, then broadcast, so other nodes need no shared file system);
        ``device`` is then the rank's own (``world.device``).
    :raises ConfigError, DataError: for a bad recipe or data.

    :ivar str stop_reason: after :meth:`fit`: ``"epochs"``, ``"early_stopping"``,
        ``"max_minutes"`` or ``"interrupted"``.
    """

    def __init__(self, config, run_dir, device="auto", quiet=False, loss=None, world=None):
        self.config = config
        self.run_dir = Path(run_dir)
        self.world = world = SINGLE if world is None else world
        if world.distributed:
            device = world.device
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.quiet = quiet or not world.is_main
        cfg = config
        # a fresh run owns Pyro's global param store, as in Pyro's examples: names left by
        # an earlier model in this process would otherwise shadow this one's parameters
        pyro.clear_param_store()
        seed_everything(cfg.train.seed)
        data = load_dataset(cfg.data.name, cfg.data.data_dir, cfg.data.download)
        #: where the data was read and a fingerprint of it (in config.json and checkpoints)
        self.data_source = data_fingerprint(data)
        self.data = keep_classes(data, cfg.data.classes)
        del data
        if cfg.model.uses_labels:
            self.config = cfg = with_num_classes(cfg, self.data)
        check_model_size(cfg.model, self.data.event_shape, self.data.image_shape)
        check_step_memory(cfg, self.data.event_shape)
        if cfg.data.labels and not cfg.model.semi_supervised:
            raise ConfigError(f"data.labels ({cfg.data.labels}) chooses the labelled images of a "
                              "semi-supervised model; this recipe is not one (set "
                              "model.semi_supervised = true, e.g. the m2 recipe)")
        self.vae = build_vae(cfg.model, self.data.event_shape, self.data.image_shape).to(
            self.device)
        check_compatible(self.vae.likelihood, self.data, cfg.data.binarization)
        if world.rank > 0:  # same initial weights, then each rank's own samples
            seed_everything(rank_seed(cfg.train.seed, world.rank))
        if cfg.train.compile:
            compile_networks(self.vae)
        self.validation, self.test = prepare_eval_splits(self.data, cfg.data.binarization)
        labels = {}
        if cfg.model.conditional:  # the model reads (x, y): so do its evaluations
            labels["labels"] = self.data.train_labels.to(self.device)
            self.validation = (self.validation, self.data.validation_labels)
            self.test = (self.test, self.data.test_labels)
        if cfg.model.semi_supervised:
            keep = labelled_subset(self.data.train_labels, cfg.data.labels, cfg.train.seed)
            labels["labelled"] = (self.data.train[keep].to(self.device),
                                  self.data.train_labels[keep].to(self.device))
            self.num_labelled = int(keep.shape[0])
        batches = EpochBatches(self.data.train.to(self.device), cfg.train.batch_size,
                               cfg.data.binarization, seed=cfg.train.seed, rank=world.rank,
                               world_size=world.size, **labels)
        t = cfg.train
        if loss is None and cfg.model.semi_supervised:
            if t.objective != "elbo" or t.num_particles != 1:
                raise ConfigError("a semi-supervised model trains with its own objective (the "
                                  "M2 ELBO, the label enumerated on unlabelled images); leave "
                                  "train.objective = 'elbo' and num_particles = 1")
            loss = SemiSupervisedELBO(t.classifier_weight)
        if loss is None:
            loss = make_objective(t.objective, t.num_particles, t.free_bits)
        self.trainer = Trainer(self.vae, batches, lr=t.lr, loss=loss, beta=t.beta,
                               warmup_steps=round(t.warmup_epochs * len(batches)),
                               lr_schedule=t.lr_schedule, lr_decay=t.lr_decay,
                               total_steps=t.epochs * len(batches), clip_norm=t.clip_norm,
                               world=world)
        self.best = {"epoch": 0, "validation_elbo": None, "bad_epochs": 0}
        self.elapsed = 0.0
        self.stop_reason = None
        self.diverging = False

    @property
    def checkpoint_path(self):
        """``run_dir/checkpoint.pt``: the last epoch (or the point where SIGINT stopped)."""
        return self.run_dir / "checkpoint.pt"

    @property
    def best_path(self):
        """``run_dir/best.pt``: the epoch with the best validation ELBO so far."""
        return self.run_dir / "best.pt"

    def _state(self):
        state = self.trainer.state_dict()
        state.update(config=self.config.to_dict(), event_shape=list(self.data.event_shape),
                     image_shape=list(self.data.image_shape), best=dict(self.best),
                     elapsed=self.elapsed, data_source=dict(self.data_source))
        return state

    def save(self, best=False):
        """Write the checkpoint (and, with ``best``, ``best.pt``) atomically (rank 0; in a
        distributed run every rank must call it: the state is gathered)."""
        state = self._state()
        if not self.world.is_main:
            return
        save_checkpoint(state, self.checkpoint_path)
        if best:
            save_checkpoint(state, self.best_path)

    def _load(self, path):
        """A checkpoint read by rank 0 and sent to every rank.

        :raises CheckpointError: on every rank, for a missing or bad checkpoint.
        """
        world = self.world
        state, error = None, None
        if world.is_main:
            try:
                state = load_checkpoint(path, map_location="cpu")
            except CheckpointError as e:
                error = e
        if world.distributed:
            state, message = world.broadcast((state, None if error is None else str(error)))
            if message is not None:
                raise CheckpointError(message)
        elif error is not None:
            raise error
        return _to_device(state, self.device)

    def resume(self):
        """Load the run's checkpoint, check that it belongs to this run, drop metrics of
        epochs it does not hold, and make ``best.pt`` agree with it.

        :raises CheckpointError: for a missing or bad checkpoint.
        :raises RunFolderError: if the checkpoint's recipe is not the one in
            ``config.json``, the data differs from the data the run was trained on, or
            ``metrics.jsonl`` is damaged.
        """
        state = self._load(self.checkpoint_path)
        if self.world.is_main:
            self._check_belongs(state)
            # one line per epoch the checkpoint holds (the last one written for an epoch
            # that appears twice), in order
            by_epoch = {m["epoch"]: m for m in read_metrics(self.run_dir)
                        if m["epoch"] <= int(state["epoch"])}
            metrics = [by_epoch[e] for e in sorted(by_epoch)]
        self.trainer.load_state_dict(state)
        self.best = dict(state.get("best", self.best))
        self.elapsed = float(state.get("elapsed", 0.0))
        if self.world.is_main:
            write_text(self.run_dir / "metrics.jsonl",
                       "".join(json.dumps(m) + "\n" for m in metrics), error=RunFolderError)
            if best_state(self.run_dir, state) is state:
                # killed between writing the checkpoint and best.pt: the checkpoint is the
                # best epoch itself, so best.pt is rewritten from it
                self.save_checkpoint_as_best(state)

    def save_checkpoint_as_best(self, state):
        """Write ``state`` (a checkpoint just read) to ``best.pt`` (rank 0)."""
        from .checkpoint import atomic_save

        atomic_save(state, self.best_path)

    def _check_belongs(self, state):
        """Refuse a checkpoint of another recipe or data than the run folder's."""
        check_recorded_config(self.run_dir, state)
        source = state.get("data_source")
        if source and source.get("fingerprint") != self.data_source["fingerprint"]:
            raise RunFolderError(
                f"the run was trained on {source.get('name')} read from {source.get('source')} "
                f"(fingerprint {source.get('fingerprint')}); the data read now from "
                f"{self.data_source['source']} differs (fingerprint "
                f"{self.data_source['fingerprint']}). Resuming would mix two data sets; give "
                "the original files (data.data_dir), or start a new run")

    def validation_terms(self):
        """Means over the validation set (seeded, single sample) of the ELBO, its
        reconstruction term and each latent site's KL term, nats per datapoint:
        ``{"elbo": ..., "reconstruction": ..., "kl/z": ...}``."""
        self.vae.eval()
        with eager():
            terms = evaluate.elbo_terms(self.vae.model, self.vae.guide, self.validation,
                                        10 * self.config.eval.batch_size,
                                        seed=self.config.eval.seed, device=self.device,
                                        world=self.world)
        out = {key: float(value.double().mean()) for key, value in terms.items()}
        if self.vae.semi_supervised:
            out["accuracy"] = classification_accuracy(self.vae, self.validation,
                                                      self.data.validation_labels)
        self.vae.train()
        return out

    def validation_elbo(self):
        """Mean single-sample ELBO of the validation set (seeded), nats per datapoint."""
        return self.validation_terms()["elbo"]

    def _early_stopping(self, validation):
        """Update the best epoch; returns whether this epoch is the best so far."""
        best = self.best
        if best["validation_elbo"] is None or validation > best["validation_elbo"]:
            best.update(epoch=self.trainer.epoch, validation_elbo=validation, bad_epochs=0)
            return True
        best["bad_epochs"] += 1
        return False

    def fit(self, epochs=None):
        """Train to ``epochs`` (default the recipe's), checkpointing after every epoch, until
        early stopping (``train.patience``) or the wall-time limit (``train.max_minutes``)
        ends it first. SIGINT (Ctrl-C) finishes the current step, writes the checkpoint
        (resumable inside the epoch) and returns with ``stop_reason = "interrupted"``.

        :returns: the list of per-epoch metric records of this call.
        :raises TrainingDiverged: with the last good checkpoint named in the message; that
            checkpoint is left untouched.
        """
        t = self.config.train
        epochs = t.epochs if epochs is None else int(epochs)
        main = self.world.is_main
        if main:
            write_json(self.run_dir / "config.json",
                       {**self.config.to_dict(), "data_source": self.data_source})
        trainer = self.trainer
        remaining = max(0, epochs * len(trainer.batches) - trainer.step)
        records = []
        n_train = self.data.train.shape[0]
        bar = tqdm(total=remaining, disable=self.quiet, unit="step",
                   desc=f"{self.config.name} on {self.data.name}", dynamic_ncols=True)
        self.stop_reason = "epochs"
        started = time.perf_counter() - self.elapsed
        with _sigint_requests_stop(trainer):
            try:
                while trainer.epoch < epochs:
                    if t.patience and self.best["bad_epochs"] >= t.patience:
                        self.stop_reason = "early_stopping"
                        break
                    start = time.perf_counter()
                    try:
                        train_elbo = trainer.train_epoch(bar)
                    except TrainingDiverged as e:
                        raise TrainingDiverged(f"{e}; training stopped, {self._kept()}. Lower "
                                               "train.lr, set train.clip_norm, or check the "
                                               "data", e.epoch, e.step) from None
                    self.elapsed = time.perf_counter() - started
                    if train_elbo is None:
                        self.save()
                        self.stop_reason = "interrupted"
                        break
                    seconds = time.perf_counter() - start
                    terms = self.validation_terms()
                    validation = terms.pop("elbo")
                    is_best = self._early_stopping(validation)
                    record = {"epoch": trainer.epoch, "step": trainer.step,
                              "train_elbo": train_elbo, "validation_elbo": validation,
                              **{f"validation_{key}": value for key, value in terms.items()},
                              "kl_weight": trainer.kl_weight(trainer.step - 1),
                              "lr": trainer.learning_rate(trainer.step - 1),
                              "seconds": seconds, "images_per_second": n_train / seconds}
                    self.elapsed = time.perf_counter() - started
                    # the metrics line first, then the checkpoint: killed in between, the
                    # resumed run drops the line of the epoch the checkpoint does not hold
                    if diverging(train_elbo, trainer.initial_elbo):
                        record["diverging"] = True
                        if main and not self.diverging:
                            warnings.warn(
                                f"the objective is diverging: train ELBO {train_elbo:.4g} nats in "
                                f"epoch {trainer.epoch}, against {trainer.initial_elbo:.4g} for "
                                "the untrained model at the first step; lower train.lr or set "
                                "train.clip_norm", TrainingWarning, stacklevel=2)
                    self.diverging = bool(record.get("diverging"))
                    if main:
                        with open(self.run_dir / "metrics.jsonl", "a") as f:
                            f.write(json.dumps(record) + "\n")
                    self.save(best=is_best)
                    records.append(record)
                    if t.max_minutes and trainer.epoch < epochs and self.world.any(
                            self.elapsed + seconds > 60 * t.max_minutes):
                        self.stop_reason = "max_minutes"
                        break
            finally:
                bar.close()
        return records

    def _kept(self):
        if self.checkpoint_path.exists():
            return (f"the last good checkpoint (epoch {self.trainer.epoch}) is kept at "
                    f"{self.checkpoint_path}")
        return "no epoch had completed, so there is no checkpoint"

    def finish(self):
        """Evaluate on the test set (IWAE with the recipe's k) into ``eval.json``, save the
        per-datapoint estimates, and draw the figures. With early stopping
        (``train.patience``), the weights of the best validation epoch (``best.pt``) are
        the ones evaluated. In a distributed run the ranks share the estimate and rank 0
        writes. Returns the summary dict."""
        evaluated_epoch = self.trainer.epoch
        if self.config.train.patience and self.best["epoch"] and \
                self.best["epoch"] != self.trainer.epoch:
            state = self._load(self.best_path)
            if int(state["epoch"]) != self.best["epoch"]:
                raise CheckpointError(f"{self.best_path} holds epoch {int(state['epoch'])}, but "
                                      f"the best validation epoch was {self.best['epoch']}")
            load_weights(self.vae, state, self.best_path)
            evaluated_epoch = int(state["epoch"])
        with eager():
            summary, result = evaluate_run(self.vae, self.test, self.config, self.device,
                                           progress=not self.quiet, world=self.world)
        if self.vae.semi_supervised:
            summary["test_accuracy"] = classification_accuracy(self.vae, self.test,
                                                               self.data.test_labels)
            summary["num_labelled"] = self.num_labelled
        if not self.world.is_main:
            return summary
        save_result(self.run_dir, result)
        summary.update(run=str(self.run_dir), epochs=self.trainer.epoch, steps=self.trainer.step,
                       evaluated_epoch=evaluated_epoch, stopped=self.stop_reason,
                       best_epoch=self.best["epoch"], diverging=self.diverging)
        metrics = read_metrics(self.run_dir)
        if metrics:
            summary["validation_elbo"] = metrics[-1]["validation_elbo"]
        update_eval_json(self.run_dir, summary)
        with eager():
            write_figures(self.vae, self.test, self.data.image_shape, self.run_dir, metrics,
                          seed=self.config.train.seed)
        return summary


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


def with_num_classes(config, data):
    """``config`` with ``model.num_classes`` resolved from the data's labels when it is 0.

    :raises ConfigError: for data without labels, or labels outside the number given.
    """
    if data.train_labels is None:
        raise ConfigError(f"{data.name} has no labels, which a conditional or semi-supervised "
                          "model needs (digits has them, and IDX files whose label files lie "
                          "beside the images)")
    labels = [y for y in (data.train_labels, data.validation_labels, data.test_labels)
              if y is not None]
    found = int(max(int(y.max()) for y in labels)) + 1
    if min(int(y.min()) for y in labels) < 0:
        raise ConfigError(f"{data.name} has negative labels; a model of labels needs classes "
                          "0, 1, ..., K-1")
    m = config.model
    present = torch.cat(labels).unique()
    if not m.num_classes and present.numel() < found:
        missing = sorted(set(range(found)) - set(present.tolist()))
        raise ConfigError(
            f"{data.name} has labels up to {found - 1}, but only {present.numel()} distinct "
            f"values ({_short(present.tolist())}); labels {_short(missing)} never occur, so "
            f"the model would have {found} classes. Relabel the data as 0..K-1, or set "
            f"model.num_classes = {found} if that many classes are meant")
    if m.num_classes and m.num_classes < found:
        raise ConfigError(f"model.num_classes is {m.num_classes} but {data.name} has labels up "
                          f"to {found - 1}")
    if m.num_classes:
        return config
    return dataclasses.replace(config, model=dataclasses.replace(m, num_classes=found))


def _short(values, n=12):
    values = list(values)
    return ", ".join(map(str, values[:n])) + (f", ... ({len(values)} in all)" if len(values) > n
                                              else "")


@torch.no_grad()
def classification_accuracy(vae, x, labels, batch_size=1000):
    """The fraction of images whose most probable label under the classifier q(y|x) of a
    semi-supervised VAE is the true one.

    :param x: ``(N, *event_shape)`` images as the model sees them (binarized like the
        training batches, e.g. the run's validation or test split).
    :param labels: ``(N,)`` integer labels.
    :returns: a float in [0, 1].
    """
    device = next(vae.parameters()).device
    was_training = vae.training
    vae.eval()
    correct = 0
    for start in range(0, x.shape[0], batch_size):
        probs = vae.label_posterior(x[start:start + batch_size].to(device)).probs
        correct += int((probs.argmax(-1).cpu() == labels[start:start + batch_size]).sum())
    vae.train(was_training)
    return correct / x.shape[0]


def _to_device(state, device):
    """``state`` (nested dicts and lists of tensors and plain data) with every tensor on
    ``device``, RNG states (uint8 tensors) left on the CPU."""
    if isinstance(state, torch.Tensor):
        return state if state.dtype == torch.uint8 else state.to(device)
    if isinstance(state, dict):
        return {key: _to_device(value, device) for key, value in state.items()}
    if isinstance(state, list):
        return [_to_device(value, device) for value in state]
    return state


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


#: In a distributed run, SIGINTs this close together count as one (see
#: :func:`_sigint_requests_stop`).
REPEAT_SIGINT_SECONDS = 2.0


@contextmanager
def _sigint_requests_stop(trainer):
    """While training in the main thread, the first SIGINT asks the trainer to stop after
    its current step (the run then saves a resumable checkpoint); a second one interrupts
    at once. Under torchrun a worker gets Ctrl-C twice (from the terminal and forwarded by
    torchrun), so there a second SIGINT counts only after :data:`REPEAT_SIGINT_SECONDS`."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    first = []

    def handler(signum, frame):
        now = time.monotonic()
        if first and (not trainer.world.distributed or
                      now - first[0] > REPEAT_SIGINT_SECONDS):
            raise KeyboardInterrupt
        if not first:
            first.append(now)
        trainer.stop_requested = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
