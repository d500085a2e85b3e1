"""Typed configuration: what a recipe holds, checked when it is built.

A recipe (``models/NAME.toml``, read by :mod:`pyro_vae.recipes`) has a ``name`` and four
tables::

    name = "vae"
    [model]            # what the VAE is made of: see ModelConfig
    [data]             # which data and how it is binarized: see DataConfig
    [train]            # optimizer and loop settings: see TrainConfig
    [eval]             # how it is evaluated: see EvalConfig

Unknown keys are errors (a misspelt option is never silently ignored). A run stores the
resolved recipe (:meth:`Config.to_dict`) in its folder and its checkpoint, so the model
can be rebuilt without the recipe file (:func:`pyro_vae.registries.build_vae`).
"""

import dataclasses
import math
import re
import types
from dataclasses import dataclass, field

from .errors import ConfigError
from .infer.registry import ADVERSARIAL_OBJECTIVES, DISCRETE_OBJECTIVES, OBJECTIVES
from .model_config import ModelConfig
from .objective_checks import check_disentangling
from .optim import OPTIMIZERS


@dataclass
class DataConfig:
    """Which data, and how it is binarized.

    :ivar str name: ``digits``, ``fashion-mnist``, ``mnist`` or a path to a ``.npz``.
    :ivar str binarization: ``dynamic`` (fresh binary training batches each epoch; test
        binarized once with seed 777), ``static`` (binarized once) or ``none``.
    :ivar data_dir: a folder searched first for data files (``None``: the default places).
    :ivar bool download: allow torchvision to download missing files.
    :ivar list classes: train (and validate) on these classes only (empty: all); the
        test set is kept whole, e.g. to score a held-out class as anomalies. Needs labels.
    :ivar int labels: for a semi-supervised model, how many training images keep their
        label (the same number from each class, drawn with ``train.seed``); 0: all.
    """

    name: str = "digits"
    binarization: str = "dynamic"
    data_dir: str | None = None
    download: bool = False
    classes: list = field(default_factory=list)
    labels: int = 0


@dataclass
class TrainConfig:
    """Optimizer and loop settings.

    :ivar int epochs: passes over the training set (the most; early stopping and
        ``max_minutes`` may end the run sooner).
    :ivar int batch_size: images per step.
    :ivar float lr: Adam's learning rate.
    :ivar int seed: seeds Pyro/torch/numpy/python RNGs and the data order.
    :ivar str objective: ``elbo`` (Pyro's Trace_ELBO), ``mean_field`` (TraceMeanField_ELBO,
        analytic KL), ``iwae`` (importance-weighted bound with ``num_particles``),
        ``iwae_dreg`` (the same with the doubly-reparameterized guide gradient) or
        ``free_bits`` (see :mod:`pyro_vae.infer.objectives`).
    :ivar int num_particles: particles per datapoint of the objective (vectorized).
    :ivar float beta: weight of the KL term (beta-VAE; Higgins et al. 2017).
    :ivar float warmup_epochs: the KL weight rises linearly from 0 to ``beta`` over this
        many epochs, step by step (0: no warm-up).
    :ivar float free_bits: nats per latent dimension, for ``objective = "free_bits"``.
    :ivar str lr_schedule: ``constant``, ``cosine`` (to 0 at ``epochs``, per step) or
        ``exponential`` (times ``lr_decay`` after each epoch).
    :ivar float lr_decay: the factor of ``exponential``.
    :ivar float clip_norm: clip the gradient's global norm to this (0: no clipping).
    :ivar str optimizer: ``adam`` (PyTorch's Adam), or ``adam_normgrad``: Adam fed each
        parameter tensor's gradient divided by its L2 norm, the optimizer of the VampPrior
        paper's code (Tomczak & Welling 2018, arXiv:1705.07120; see :mod:`pyro_vae.optim`).
    :ivar int patience: stop when the validation ELBO has not improved for this many
        epochs (0: no early stopping); ``best.pt`` always holds the best epoch.
    :ivar float max_minutes: stop after the epoch that would make the next one end past
        this wall time (0: no limit).
    :ivar bool compile: compile the encoder and decoder networks with ``torch.compile``
        for training (the first steps then take a minute longer; validation and test
        evaluation run uncompiled). Needs a C++ compiler on the CPU.
    :ivar float classifier_weight: for a semi-supervised model, the weight alpha of the
        labelled images' classification loss -log q(y|x), per image (see
        :class:`~pyro_vae.infer.objectives.SemiSupervisedELBO`).
    :ivar bool tensorboard: write TensorBoard event files into the run folder (needs the
        ``tensorboard`` extra; without it, a one-line note) (see :mod:`pyro_vae.monitor`).
    :ivar int samples_every: a grid of prior samples in TensorBoard every this many epochs
        (0: never).
    :ivar float temperature: for ``objective = "concrete"`` (categorical latents), the
        Gumbel-softmax temperature at the start (see
        :class:`~pyro_vae.infer.discrete_objectives.ConcreteELBO`).
    :ivar float final_temperature: the temperature reached after ``temperature_epochs``.
    :ivar float temperature_epochs: epochs of the exponential annealing from ``temperature``
        to ``final_temperature`` (0: constant ``temperature``).
    :ivar bool straight_through: for ``objective = "concrete"``, the straight-through
        Gumbel-softmax (one-hot codes forward, the relaxation's gradient backward).
    :ivar float commitment: for ``objective = "vqvae"``, the weight beta of the commitment
        loss (see :class:`~pyro_vae.infer.discrete_objectives.VQObjective`).
    :ivar float adversarial_weight: for ``objective = "aae"`` or ``"vaegan"``, the weight of
        the generator's adversarial term (see :mod:`pyro_vae.infer.adversarial`).
    :ivar float discriminator_lr: the discriminator's Adam learning rate.
    :ivar float feature_weight: for ``"vaegan"``, the weight of the feature-matching term.
    :ivar float capacity: for ``objective = "capacity"``, C_max in nats; ``capacity_weight``
        is its gamma and ``capacity_epochs`` the epochs over which C rises linearly from 0
        (see :class:`~pyro_vae.infer.disentangling.CapacityELBO`).
    :ivar float tc_weight: for ``objective = "beta_tcvae"``, beta, the weight of the total
        correlation (see :class:`~pyro_vae.infer.disentangling.BetaTCELBO`).
    """

    epochs: int = 300
    batch_size: int = 100
    lr: float = 1e-3
    seed: int = 0
    objective: str = "elbo"
    num_particles: int = 1
    beta: float = 1.0
    warmup_epochs: float = 0.0
    free_bits: float = 0.0
    lr_schedule: str = "constant"
    lr_decay: float = 1.0
    clip_norm: float = 0.0
    optimizer: str = "adam"
    patience: int = 0
    max_minutes: float = 0.0
    compile: bool = False
    classifier_weight: float = 50.0
    tensorboard: bool = True
    samples_every: int = 10
    temperature: float = 1.0
    final_temperature: float = 0.5
    temperature_epochs: float = 0.0
    straight_through: bool = False
    commitment: float = 0.25
    adversarial_weight: float = 1.0
    discriminator_lr: float = 2e-4
    feature_weight: float = 1.0
    capacity: float = 25.0
    capacity_weight: float = 1000.0
    capacity_epochs: float = 0.0
    tc_weight: float = 6.0


@dataclass
class EvalConfig:
    """How a run is evaluated (validation every epoch; test at the end of training).

    :ivar int k: particles of the importance-weighted log-likelihood estimate that
        ``pyro-vae train`` reports at the end (``pyro-vae evaluate --k`` overrides it).
    :ivar int batch_size: datapoints per chunk.
    :ivar int particle_batch: particles per chunk; memory grows with
        ``batch_size * particle_batch``.
    :ivar int seed: seed of the guide's samples during evaluation.
    """

    k: int = 100
    batch_size: int = 100
    particle_batch: int = 500
    seed: int = 0


@dataclass
class Config:
    """A whole recipe: ``name`` plus the ``model``, ``data``, ``train`` and ``eval`` tables."""

    name: str = "vae"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def _check_discrete(self, where):
        """Refuse a discrete objective without categorical latents, and bad temperatures."""
        t, m = self.train, self.model
        if not (t.temperature > 0 and t.final_temperature > 0) or t.temperature_epochs < 0:
            raise ConfigError(f"{where}: train.temperature and train.final_temperature must be "
                              f"positive and train.temperature_epochs at least 0, got "
                              f"{t.temperature}, {t.final_temperature}, {t.temperature_epochs}")
        if t.objective in DISCRETE_OBJECTIVES and m.guide != "categorical":
            raise ConfigError(f"{where}: train.objective = {t.objective!r} is a gradient "
                              "estimator for categorical latents; set model.guide = 'categorical' "
                              "and model.prior = 'categorical', or choose objective 'elbo'")
        if t.objective == "score" and t.num_particles < 2:
            raise ConfigError(f"{where}: train.objective = 'score' centres each particle's "
                              "signal on the others' (leave-one-out baseline): set "
                              "train.num_particles to at least 2 (e.g. 4)")
        if (t.objective == "vqvae") != (m.guide == "vq"):
            raise ConfigError(f"{where}: the vector-quantized guide and train.objective = 'vqvae' "
                              "(its commitment and codebook losses) go together; set both "
                              "model.guide = 'vq' (with prior 'vq') and objective 'vqvae', or "
                              "neither")
        wanted = ADVERSARIAL_OBJECTIVES.get(t.objective, "")
        if m.discriminator != wanted:
            raise ConfigError(
                f"{where}: " + (f"train.objective = {t.objective!r} needs model.discriminator = "
                                f"{wanted!r}" if wanted else
                                f"model.discriminator = {m.discriminator!r} is trained only by an "
                                f"adversarial objective ({sorted(ADVERSARIAL_OBJECTIVES)}); set "
                                f"train.objective or leave model.discriminator empty"))
        if wanted and (m.semi_supervised or m.hierarchical):
            raise ConfigError(f"{where}: train.objective = {t.objective!r} is for flat, "
                              "unsupervised VAEs (one latent); not with model.semi_supervised or "
                              "a list of latent layers")
        if min(t.adversarial_weight, t.feature_weight) < 0 or not t.discriminator_lr > 0:
            raise ConfigError(f"{where}: train.adversarial_weight and train.feature_weight must be "
                              f"at least 0 and train.discriminator_lr positive")
        if t.commitment < 0:
            raise ConfigError(f"{where}: train.commitment must be at least 0, got {t.commitment}")
        if t.objective == "enumerate" and t.num_particles != 1:
            raise ConfigError(f"{where}: train.objective = 'enumerate' sums over every code; "
                              "leave train.num_particles = 1")

    def to_dict(self):
        """Plain nested dict (JSON- and checkpoint-safe)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d, where="recipe"):
        """Build from a nested dict, refusing unknown keys and wrongly typed values.

        :raises ConfigError: naming the bad key and the valid ones.
        """
        d = dict(d)
        tables = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig,
                  "eval": EvalConfig}
        _check_keys(d, ["name", *tables], where)
        kwargs = {}
        if "name" in d:
            kwargs["name"] = _coerce(d["name"], str, f"{where}: name")
        for key, sub in tables.items():
            if key in d:
                if not isinstance(d[key], dict):
                    raise ConfigError(f"{where}: [{key}] must be a table, got {d[key]!r}")
                kwargs[key] = _sub_from_dict(sub, d[key], f"{where} [{key}]")
        config = cls(**kwargs)
        config.check(where)
        return config

    def check(self, where="recipe"):
        """Check numeric settings that must be positive.

        :raises ConfigError: naming the setting and its value.
        """
        check_name(self.name, where)
        self.model.latent_sizes()
        if isinstance(self.eval.k, int) and self.eval.k > MAX_PARTICLES:
            raise ConfigError(f"{where}: eval.k = {self.eval.k:g} particles per test image cannot be "
                              f"meant: at about 1e5 datapoint-particles a second on a CPU, 10,000 "
                              f"test images would take {self.eval.k * 1e4 / 1e5 / 86400:,.0f} days. "
                              f"The published protocol uses 5000; at most {MAX_PARTICLES:,} are "
                              "accepted")
        positive = {"train.batch_size": self.train.batch_size, "train.lr": self.train.lr,
                    "eval.k": self.eval.k, "eval.batch_size": self.eval.batch_size,
                    "eval.particle_batch": self.eval.particle_batch}
        for key, value in positive.items():
            if not value > 0:
                raise ConfigError(f"{where}: {key} must be positive, got {value}")
        if not all(isinstance(c, int) and not isinstance(c, bool) for c in self.data.classes):
            raise ConfigError(f"{where}: data.classes must be a list of integer labels, got "
                              f"{self.data.classes!r}")
        t = self.train
        for table in (self.train, self.eval, self.model, self.data):
            for f in dataclasses.fields(table):
                value = getattr(table, f.name)
                if isinstance(value, float) and not math.isfinite(value):
                    raise ConfigError(f"{where}: {_table_name(table)}.{f.name} must be a finite "
                                      f"number, got {value}")
        for key, value in (("train.seed", t.seed), ("eval.seed", self.eval.seed)):
            if not 0 <= value < 2**32:
                raise ConfigError(f"{where}: {key} must lie in 0..2**32-1 (a seed of torch's "
                                  f"generators), got {value}")
        if t.num_particles > MAX_TRAIN_PARTICLES:
            raise ConfigError(f"{where}: train.num_particles = {t.num_particles} cannot be meant; "
                              f"at most {MAX_TRAIN_PARTICLES:,} (the IWAE papers train with up "
                              "to 50)")
        if t.epochs < 0:
            raise ConfigError(f"{where}: train.epochs must be at least 0, got {t.epochs}")
        for key in ("warmup_epochs", "clip_norm", "patience", "max_minutes", "free_bits", "beta",
                    "classifier_weight", "samples_every"):
            if getattr(t, key) < 0:
                raise ConfigError(f"{where}: train.{key} must be at least 0, got {getattr(t, key)}")
        if t.num_particles < 1:
            raise ConfigError(f"{where}: train.num_particles must be at least 1, got {t.num_particles}")
        objectives = tuple(OBJECTIVES)
        if t.objective not in objectives:
            raise ConfigError(f"{where}: unknown train.objective {t.objective!r}; choose one of "
                              f"{list(objectives)}")
        if (t.objective == "free_bits") != (t.free_bits > 0):
            raise ConfigError(f"{where}: train.free_bits = {t.free_bits} goes with "
                              "train.objective = 'free_bits' and a positive number of nats "
                              "(e.g. 0.25); set both or neither")
        if t.objective == "mean_field" and self.model.hierarchical and \
                self.model.inference == "bottom_up" and len(self.model.latent_sizes()) > 1:
            raise ConfigError(f"{where}: train.objective = 'mean_field' takes the analytic KL of "
                              "each latent given its sampled parents, which is wrong when the "
                              "guide samples z1 before z2 (bottom-up inference); use objective "
                              "'elbo', or model.inference = 'ladder'")
        self._check_discrete(where)
        check_disentangling(self, where)
        if t.optimizer not in OPTIMIZERS:
            raise ConfigError(f"{where}: unknown train.optimizer {t.optimizer!r}; choose one of "
                              f"{list(OPTIMIZERS)}")
        if t.optimizer == "adam_normgrad" and t.clip_norm > 0:
            raise ConfigError(f"{where}: train.clip_norm = {t.clip_norm} would do nothing with "
                              "train.optimizer = 'adam_normgrad', which scales every "
                              "parameter's gradient to norm 1; set clip_norm = 0")
        schedules = ("constant", "cosine", "exponential")
        if t.lr_schedule not in schedules:
            raise ConfigError(f"{where}: unknown train.lr_schedule {t.lr_schedule!r}; choose one "
                              f"of {list(schedules)}")
        if not 0 < t.lr_decay <= 1:
            raise ConfigError(f"{where}: train.lr_decay must be in (0, 1], got {t.lr_decay}")


#: The recipe keys ``pyro-vae train --resume`` may change: the run's budget (both new totals
#: counted from the run's start: epochs, and minutes of training wall time), nothing that
#: changes what is trained.
RESUME_BUDGET_KEYS = ("train.epochs", "train.max_minutes")

#: The most particles per datapoint an evaluation accepts (the published protocol: 5000).
MAX_PARTICLES = 100_000


#: The most particles per datapoint a training objective accepts.
MAX_TRAIN_PARTICLES = 10_000


#: What a recipe name may be: it names run folders, so no path separators or leading dot.
SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+=,@-]{0,99}$")


def check_name(name, where="recipe"):
    """Refuse a recipe name that is not a plain file name (it names the default run folder
    ``runs/<name>-<data>-<time>``, so ``../x`` or ``/abs`` would write outside ``runs/``).

    :raises ConfigError: naming the bad value and what is allowed.
    """
    if not isinstance(name, str) or not SAFE_NAME.match(name) or ".." in name:
        raise ConfigError(f"{where}: name {name!r} is not a plain name; it names the run folder "
                          "runs/<name>-<data>-<time>, so it may hold letters, digits and "
                          "_ . + = , @ - (no '/', no '..', no leading '.' or space, at most "
                          "100 characters)")


def _table_name(table):
    return {ModelConfig: "model", DataConfig: "data", TrainConfig: "train",
            EvalConfig: "eval"}[type(table)]


def _check_keys(d, valid, where):
    unknown = sorted(set(d) - set(valid))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys are {sorted(valid)}")


def _coerce(value, typ, where):
    """Check ``value`` against a field type; ints are accepted for floats."""
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, bool) and (typ is int or (isinstance(typ, tuple) and int in typ)):
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if not isinstance(value, typ):
        names = typ.__name__ if isinstance(typ, type) else " or ".join(t.__name__ for t in typ)
        raise ConfigError(f"{where}: expected {names}, got {value!r}")
    return value


def _sub_from_dict(cls, d, where):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    _check_keys(d, fields, where)
    kwargs = {}
    for k, v in d.items():
        typ = fields[k].type
        if isinstance(typ, types.UnionType):
            typ = typ.__args__
        kwargs[k] = _coerce(v, typ, f"{where} {k}")
    return cls(**kwargs)
