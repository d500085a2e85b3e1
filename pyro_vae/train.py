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

import json
import math
import random
import time
from pathlib import Path

import numpy as np
import pyro
import torch
from pyro.infer import Trace_ELBO
from tqdm.auto import tqdm

from . import evaluate
from .checkpoint import load_checkpoint, save_checkpoint
from .config import build_vae
from .data import EpochBatches, load_dataset, prepare_eval_splits
from .errors import ConfigError, TrainingDiverged
from .runs import (evaluate_run, read_metrics, resolve_device, save_result, update_eval_json,
                   write_figures, write_json)

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
    :param float lr: Adam's learning rate.
    :param loss: an object with ``differentiable_loss(model, guide, x)`` returning the
        negative ELBO summed over the batch, in nats (default ``Trace_ELBO()``).

    :ivar int epoch: completed epochs. :ivar int step: completed optimizer steps.
    """

    def __init__(self, vae, batches, lr=1e-3, loss=None):
        self.vae = vae
        self.batches = batches
        self.loss = loss if loss is not None else Trace_ELBO()
        self.optimizer = make_optimizer(vae.parameters(), lr)
        self.epoch = 0
        self.step = 0

    def training_step(self, x):
        """One SVI step on the batch ``x``; returns the loss (negative ELBO summed over
        the batch, nats).

        :raises TrainingDiverged: when the loss is NaN or infinite; the parameters are
            not updated with that step.
        """
        with pyro.validation_enabled(self.step == 0):
            loss = self.loss.differentiable_loss(self.vae.model, self.vae.guide, x)
        value = loss.item()
        if not math.isfinite(value):
            raise TrainingDiverged(f"the loss became {value} at epoch {self.epoch + 1}, step "
                                   f"{self.step + 1}", epoch=self.epoch + 1, step=self.step + 1)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step += 1
        return value

    def train_epoch(self, progress=None):
        """One pass over the training batches.

        :param progress: a tqdm bar to advance (or ``None``).
        :returns: the mean training ELBO of the epoch, nats per datapoint.
        :raises TrainingDiverged: see :meth:`training_step`.
        """
        total, count = 0.0, 0
        for x in self.batches.epoch():
            total += self.training_step(x)
            count += x.shape[0]
            if progress is not None:
                progress.update(1)
                if self.step % 10 == 0:
                    progress.set_postfix(epoch=self.epoch + 1, elbo=f"{-total / count:.2f}",
                                         refresh=False)
        self.epoch += 1
        return -total / count

    def state_dict(self):
        """Weights, optimizer, epoch, step and RNG states (tensors and plain data)."""
        return {"model": self.vae.state_dict(), "optimizer": self.optimizer.state_dict(),
                "epoch": self.epoch, "step": self.step, "rng": rng_state(self.batches)}

    def load_state_dict(self, state):
        """Restore what :meth:`state_dict` returned."""
        self.vae.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        set_rng_state(state["rng"], self.batches)


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
    :param loss: passed to :class:`Trainer`.
    :raises ConfigError, DataError: for a bad recipe or data.
    """

    def __init__(self, config, run_dir, device="auto", quiet=False, loss=None):
        self.config = config
        self.run_dir = Path(run_dir)
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.quiet = quiet
        cfg = config
        # a fresh run owns Pyro's global param store, as in Pyro's examples: names left by
        # an earlier model in this process would otherwise shadow this one's parameters
        pyro.clear_param_store()
        seed_everything(cfg.train.seed)
        self.data = load_dataset(cfg.data.name, cfg.data.data_dir, cfg.data.download)
        self.vae = build_vae(cfg.model, self.data.event_shape, self.data.image_shape).to(
            self.device)
        check_compatible(self.vae.likelihood, self.data, cfg.data.binarization)
        self.validation, self.test = prepare_eval_splits(self.data, cfg.data.binarization)
        batches = EpochBatches(self.data.train.to(self.device), cfg.train.batch_size,
                               cfg.data.binarization, seed=cfg.train.seed)
        self.trainer = Trainer(self.vae, batches, lr=cfg.train.lr, loss=loss)

    @property
    def checkpoint_path(self):
        """``run_dir/checkpoint.pt``."""
        return self.run_dir / "checkpoint.pt"

    def save(self):
        """Write the checkpoint atomically."""
        state = self.trainer.state_dict()
        state.update(config=self.config.to_dict(), event_shape=list(self.data.event_shape),
                     image_shape=list(self.data.image_shape))
        save_checkpoint(state, self.checkpoint_path)

    def resume(self):
        """Load the run's checkpoint and drop metrics of epochs it does not hold.

        :raises CheckpointError: for a missing or bad checkpoint.
        """
        state = load_checkpoint(self.checkpoint_path, map_location=self.device)
        self.trainer.load_state_dict(state)
        metrics = [m for m in read_metrics(self.run_dir) if m["epoch"] <= self.trainer.epoch]
        (self.run_dir / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))

    def validation_elbo(self):
        """Mean single-sample ELBO of the validation set (seeded), nats per datapoint."""
        self.vae.eval()
        values = evaluate.elbo(self.vae.model, self.vae.guide, self.validation,
                               10 * self.config.eval.batch_size, seed=self.config.eval.seed,
                               device=self.device)
        self.vae.train()
        return float(values.mean())

    def fit(self, epochs=None):
        """Train to ``epochs`` (default the recipe's), checkpointing after every epoch.

        :returns: the list of per-epoch metric records of this call.
        :raises TrainingDiverged: with the last good checkpoint named in the message; that
            checkpoint is left untouched.
        """
        epochs = self.config.train.epochs if epochs is None else int(epochs)
        write_json(self.run_dir / "config.json", self.config.to_dict())
        trainer = self.trainer
        remaining = max(0, epochs - trainer.epoch)
        records = []
        n_train = self.data.train.shape[0]
        bar = tqdm(total=remaining * len(trainer.batches), disable=self.quiet, unit="step",
                   desc=f"{self.config.name} on {self.data.name}", dynamic_ncols=True)
        try:
            while trainer.epoch < epochs:
                start = time.perf_counter()
                try:
                    train_elbo = trainer.train_epoch(bar)
                except TrainingDiverged as e:
                    if self.checkpoint_path.exists():
                        kept = f"the last good checkpoint (epoch {trainer.epoch}) is kept at " \
                               f"{self.checkpoint_path}"
                    else:
                        kept = "no epoch had completed, so there is no checkpoint"
                    raise TrainingDiverged(f"{e}; training stopped, {kept}. Lower train.lr "
                                           "or check the data", e.epoch, e.step) from None
                seconds = time.perf_counter() - start
                record = {"epoch": trainer.epoch, "step": trainer.step, "train_elbo": train_elbo,
                          "validation_elbo": self.validation_elbo(), "seconds": seconds,
                          "images_per_second": n_train / seconds}
                self.save()
                with open(self.run_dir / "metrics.jsonl", "a") as f:
                    f.write(json.dumps(record) + "\n")
                records.append(record)
        finally:
            bar.close()
        return records

    def finish(self):
        """Evaluate on the test set (IWAE with the recipe's k) into ``eval.json``, save the
        per-datapoint estimates, and draw the figures. Returns the summary dict."""
        summary, result = evaluate_run(self.vae, self.test, self.config, self.device,
                                       progress=not self.quiet)
        save_result(self.run_dir, result)
        summary.update(run=str(self.run_dir), epochs=self.trainer.epoch, steps=self.trainer.step)
        metrics = read_metrics(self.run_dir)
        if metrics:
            summary["validation_elbo"] = metrics[-1]["validation_elbo"]
        update_eval_json(self.run_dir, summary)
        write_figures(self.vae, self.test, self.data.image_shape, self.run_dir, metrics,
                      seed=self.config.train.seed)
        return summary
