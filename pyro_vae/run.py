"""A training run in a folder: data, model, trainer, checkpoints, metrics, figures.

A run folder (:class:`Run`) holds::

    config.json          the resolved recipe, and where the data was read (data_source)
    checkpoint.pt        weights, optimizer, config, epoch, step, RNG states (atomic)
    best.pt              the same at the best validation epoch
    metrics.jsonl        one line per epoch: train/validation ELBO, seconds, images/s
    eval.json            test log-likelihood (IWAE, k from the recipe), ELBO, diagnostics
    loglik-k<K>-seed<S>.pt   the per-datapoint estimates behind eval.json
    samples.png, reconstructions.png, curves.png
"""

import json
import time
import warnings
from pathlib import Path

import pyro
import torch
from tqdm.auto import tqdm

from . import infer
from .batches import EpochBatches, prepare_eval_splits
from .checkpoint import atomic_save, load_checkpoint, save_checkpoint, to_device
from .compatibility import check_compatible, with_num_classes
from .datasets import data_fingerprint, keep_classes, labelled_subset, load_dataset
from .distributed import SINGLE, rank_seed, resolve_device
from .errors import CheckpointError, ConfigError, RunFolderError, TrainingDiverged, TrainingWarning
from .files import write_text
from .infer.objectives import SemiSupervisedELBO
from .infer.registry import make_objective, objective_options
from .monitor import Monitor
from .registries import build_vae, check_model_size, check_step_memory
from .estimate_files import save_result
from .runs import (best_state, check_data_source, check_recorded_config, evaluate_run,
                   load_weights, read_metrics, update_eval_json, validation_elbos,
                   write_figures, write_json)
from .signals import sigint_requests_stop
from .trainer import Trainer, compile_networks, diverging, eager, seed_everything


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
            loss = make_objective(t.objective, t.num_particles, t.free_bits,
                                  **objective_options(t, len(batches)),
                                  discriminator=getattr(self.vae, "discriminator", None),
                                  dataset_size=self.data.train.shape[0])
            if (cfg.model.discriminator or t.objective == "beta_tcvae") and world.size > 1:
                raise ConfigError(f"objective {t.objective!r} trains in one process (its terms "
                                  "span the whole batch); run it without torchrun")
        self.trainer = Trainer(self.vae, batches, lr=t.lr, loss=loss, beta=t.beta,
                               warmup_steps=round(t.warmup_epochs * len(batches)),
                               lr_schedule=t.lr_schedule, lr_decay=t.lr_decay,
                               total_steps=t.epochs * len(batches), clip_norm=t.clip_norm,
                               world=world, optimizer=t.optimizer)
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
        return to_device(state, self.device)

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
                atomic_save(state, self.best_path)

    def _check_belongs(self, state):
        """Refuse a checkpoint of another recipe or data than the run folder's."""
        check_recorded_config(self.run_dir, state)
        check_data_source(state.get("data_source"), self.data_source, "the run",
                          "resuming would mix two data sets. Give the original files "
                          "(data.data_dir), or start a new run")

    def validation_terms(self):
        """Means over the validation set (seeded, one draw of :meth:`~pyro_vae.vae.VAE.proposal`,
        the guide or a Gaussian around a point-mass one) of the ELBO, its reconstruction
        term and each latent site's KL term, nats per datapoint (keys elbo, reconstruction, kl/z)."""
        self.vae.eval()
        with eager():
            terms = infer.elbo_terms(self.vae.model, self.vae.proposal(), self.validation,
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
        monitor = Monitor(self.run_dir, t.samples_every, self.data.image_shape,
                          purge_step=trainer.epoch + 1, enabled=main and t.tensorboard)
        with sigint_requests_stop(trainer):
            try:
                while trainer.epoch < epochs:
                    if t.patience and self.best["bad_epochs"] >= t.patience:
                        self.stop_reason = "early_stopping"
                        break
                    if t.max_minutes and self.elapsed >= 60 * t.max_minutes:
                        self.stop_reason = "max_minutes"  # a resumed run's budget is spent
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
                    if trainer.adversary is not None:  # both players' epoch means
                        record.update(trainer.adversary.epoch_metrics())
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
                    monitor.log_epoch(record, self.vae)
                    records.append(record)
                    if t.max_minutes and trainer.epoch < epochs and self.world.any(
                            self.elapsed + seconds > 60 * t.max_minutes):
                        self.stop_reason = "max_minutes"
                        break
            finally:
                bar.close()
                monitor.close()
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
        summary.update(validation_elbos(metrics, evaluated_epoch))
        update_eval_json(self.run_dir, summary)
        with eager():
            write_figures(self.vae, self.test, self.data.image_shape, self.run_dir, metrics,
                          seed=self.config.train.seed, summary=summary)
        return summary


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
