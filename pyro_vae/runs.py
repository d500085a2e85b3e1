"""Run folders: creating them safely, reading them back, and evaluating a trained run.

A run folder holds ``config.json``, ``checkpoint.pt``, ``metrics.jsonl``, ``eval.json``,
figures, and the per-datapoint log-likelihood estimates of each evaluation
(``loglik-k<K>-seed<S>.pt``, tensors only), which ``pyro-vae compare`` reuses.
"""

import json
from pathlib import Path

import torch

from . import infer
from .checkpoint import load_checkpoint
from .config import RESUME_BUDGET_KEYS, Config
from .registries import build_vae
from .distributed import SINGLE, resolve_device
from .errors import CheckpointError, ConfigError, RunFolderError
from .factor_eval import factor_metrics_for, write_factor_figures
from .files import write_text
from .runfolder import check_run_argument, is_packed




def read_metrics(run_dir):
    """The per-epoch records of ``run_dir/metrics.jsonl`` (a list of dicts). A last line
    cut short (the process killed while appending it) is left out.

    :raises RunFolderError: for a line before the last that is not a JSON object (the file
        was edited or damaged), naming the line.
    """
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise RunFolderError(f"{path}: cannot read it ({e}); restore it or move it aside") from None
    numbered = [(i + 1, line) for i, line in enumerate(lines) if line.strip()]
    records = []
    for j, (number, line) in enumerate(numbered):
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or not isinstance(record.get("epoch"), int):
                raise ValueError("not a record with an integer 'epoch'")
            records.append(record)
        except ValueError as e:
            if j < len(numbered) - 1:
                raise RunFolderError(f"{path}: line {number} is not a metrics record ({e}); the "
                                     "file was edited or damaged. Fix or delete that line (the "
                                     "checkpoint does not depend on it), then run again") from None
    return records


def validation_elbos(metrics, evaluated_epoch):
    """The validation ELBOs ``eval.json`` records beside a test estimate.

    :param metrics: the records of ``metrics.jsonl`` (:func:`read_metrics`).
    :param evaluated_epoch: the epoch whose weights were evaluated (the best validation
        epoch's under early stopping, else the last).
    :returns: ``{"validation_elbo": ..., "final_validation_elbo": ...}`` in nats per image:
        the evaluated epoch's and the last epoch's (either left out where ``metrics`` has no
        such epoch).
    """
    found = {}
    for record in metrics:
        if record.get("validation_elbo") is None:
            continue
        if record.get("epoch") == evaluated_epoch:
            found["validation_elbo"] = record["validation_elbo"]
        found["final_validation_elbo"] = record["validation_elbo"]
    return found


def write_json(path, obj):
    """Write ``obj`` as indented JSON to ``path`` atomically.

    :raises RunFolderError: if the file cannot be written (the old one is kept)."""
    return write_text(path, json.dumps(obj, indent=2) + "\n", error=RunFolderError)


def read_eval_json(run_dir):
    """The dict in ``run_dir/eval.json`` (empty if there is none).

    :raises RunFolderError: if the file is not a JSON object (it was edited or damaged),
        saying where and what to do; nothing is overwritten.
    """
    path = Path(run_dir) / "eval.json"
    if not path.is_file():
        return {}
    try:
        current = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise RunFolderError(f"{path} is not valid JSON ({e}); it was edited or damaged. Move "
                             "it aside (pyro-vae evaluate then writes a new one) or repair "
                             "it") from None
    if not isinstance(current, dict):
        raise RunFolderError(f"{path} holds {type(current).__name__}, not a JSON object; move "
                             "it aside (pyro-vae evaluate then writes a new one)")
    return current


def update_eval_json(run_dir, results):
    """Merge ``results`` into ``run_dir/eval.json`` (written atomically)."""
    current = read_eval_json(run_dir)
    if "k_sweep" in results:  # the k-sweep's keys before its rename, now stale
        current.pop("ladder", None)
        current.pop("ladder_se", None)
    current.update(results)
    write_json(Path(run_dir) / "eval.json", current)
    return current



def write_figures(vae, test, image_shape, run_dir, metrics=None, seed=0, n=64, summary=None):
    """Write ``samples.png``, ``reconstructions.png``, for data with known factors (a
    ``summary`` with ``"disentanglement"``) ``mutual_information.png`` and
    ``factor_traversals.png`` (see :func:`~pyro_vae.factor_eval.write_factor_figures`), for
    a VQ-VAE ``codebook.png`` (see
    :func:`~pyro_vae.plots.plot_code_usage`), for a categorical code
    ``traversal.png`` (see :func:`~pyro_vae.plots.plot_code_traversal`), for a hierarchical
    VAE ``layers.png``
    (see :func:`~pyro_vae.plots.plot_layer_samples`), and (with metrics) ``curves.png``."""
    from . import plots

    run_dir = Path(run_dir)
    device = next(vae.parameters()).device
    vae.eval()
    with torch.no_grad(), infer.seeded(seed, device):
        samples = vae.sample(n)
        originals = infer.to_device(infer.rows(test, 0, 30), device)
        recon = vae.reconstruct(*infer.batch_args(originals))
        originals = infer.batch_args(originals)[0]
    plots.save_figure(plots.plot_images(samples, image_shape, title="samples (pixel means)"),
                      run_dir / "samples.png")
    plots.save_figure(plots.plot_reconstructions(originals, recon, image_shape),
                      run_dir / "reconstructions.png")
    if hasattr(vae.posterior, "code_usage"):  # a vector-quantized code
        with torch.no_grad():
            usage = vae.posterior.code_usage(infer.to_device(test, device))
        plots.save_figure(plots.plot_code_usage(usage), run_dir / "codebook.png")
    if getattr(vae.posterior, "categorical", False):
        plots.save_figure(plots.plot_code_traversal(vae, originals[:1], image_shape),
                          run_dir / "traversal.png")
    if getattr(vae, "num_layers", 1) > 1:
        with infer.seeded(seed, device):
            axes = plots.plot_layer_samples(vae, image_shape)
        plots.save_figure(axes[0], run_dir / "layers.png")
    if metrics:
        plots.save_figure(plots.plot_curves(metrics), run_dir / "curves.png")
    if summary and "disentanglement" in summary:
        write_factor_figures(vae, summary["disentanglement"], originals[0], image_shape, run_dir)



def load_run(run_dir, device="auto", weights="auto"):
    """Rebuild the trained VAE of a run folder from its checkpoint alone.

    :param str weights: ``"last"`` (``checkpoint.pt``), ``"best"`` (``best.pt``, the best
        validation epoch) or ``"auto"``: the best epoch when the run used early stopping
        (``train.patience``) and has one, as the test evaluation after training does. A
        packed folder (:mod:`pyro_vae.pack`) has only the evaluated weights, in ``best.pt``.
        The best epoch is the one the checkpoint records (see :func:`best_state`).
    :returns: ``(vae, config, checkpoint)`` with the VAE on ``device`` in eval mode.
    :raises RunFolderError: if ``run_dir`` is not a run folder (e.g. a checkpoint file), or
        its checkpoint holds another recipe than its ``config.json``.
    :raises CheckpointError: for a missing or bad checkpoint, or weights that do not fit
        the model its own config describes.
    :raises ConfigError: if the stored recipe is invalid.
    """
    check_run_argument(run_dir)
    device = device if isinstance(device, torch.device) else resolve_device(device)
    packed = is_packed(run_dir)
    if packed:
        if weights == "last":
            raise CheckpointError(f"{run_dir} is a packed folder: it holds only the weights its "
                                  "evaluation used (best.pt), not the last epoch's")
        state = load_checkpoint(Path(run_dir) / "best.pt", map_location=device)
    else:
        state = load_checkpoint(run_dir, map_location=device)
    check_recorded_config(run_dir, state)
    config = Config.from_dict(state["config"], where=f"checkpoint in {run_dir}")
    if not packed and (weights == "best" or (weights == "auto" and config.train.patience)):
        # a packed folder's best.pt is already the evaluated epoch: not read a second time
        best = best_state(run_dir, state, map_location=device)
        if best is not None:
            state = best
        elif weights == "best":
            raise CheckpointError(f"{run_dir} has no best epoch (no validation ran)")
    vae = build_vae(config.model, tuple(state["event_shape"]), state.get("image_shape")).to(device)
    load_weights(vae, state, run_dir)
    vae.eval()
    return vae, config, state


def check_recorded_config(run_dir, state):
    """Refuse a checkpoint whose recipe is not the one the run folder's ``config.json``
    records (the budget :data:`RESUME_BUDGET_KEYS` aside, which ``--resume`` may change): a
    checkpoint copied in from another run.

    :raises RunFolderError: naming both recipes and the keys that differ, or for a
        damaged ``config.json``.
    """
    recorded = Path(run_dir) / "config.json"
    if not recorded.is_file():
        return
    try:
        on_disk = json.loads(recorded.read_text(encoding="utf-8"))
        if not isinstance(on_disk, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as e:
        raise RunFolderError(f"{recorded} is damaged ({e}); restore it, or delete it to use "
                             "the checkpoint's own recipe") from None
    on_disk = {key: value for key, value in on_disk.items() if key != "data_source"}
    tables = ("model", "data", "train", "eval")

    def comparable(d):
        try:  # defaults filled in: a recipe written before a key existed equals its default
            d = Config.from_dict(d, where="recorded recipe").to_dict()
        except ConfigError:
            pass
        budget = {key.split(".", 1)[1]: None for key in RESUME_BUDGET_KEYS}
        return {**d, "train": {**(d.get("train") or {}), **budget}}

    mine, theirs = comparable(state["config"]), comparable(on_disk)
    if mine != theirs:
        keys = sorted(f"{t}.{k}" for t in tables
                      for k in set(mine.get(t) or {}) | set(theirs.get(t) or {})
                      if (mine.get(t) or {}).get(k) != (theirs.get(t) or {}).get(k))
        raise RunFolderError(
            f"{Path(run_dir) / 'checkpoint.pt'} holds recipe {state['config'].get('name')!r}, but "
            f"this run folder's config.json is recipe {on_disk.get('name')!r}"
            f"{' (they differ in ' + ', '.join(keys[:6]) + ')' if keys else ''}; the checkpoint "
            "comes from another run. Use that run's own folder, or start a new run")


def check_data_source(recorded, current, subject, consequence):
    """Refuse data whose fingerprint differs from the one a run recorded when it trained.

    :param dict recorded: the run's ``data_source`` (``None`` for a run of pyro_vae 0.1,
        which recorded none: nothing is checked).
    :param dict current: :func:`~pyro_vae.datasets.data_fingerprint` of the data read now.
    :param str subject: who was trained (``"the run"``, a run folder).
    :param str consequence: what using the other data would mean, and what to do.
    :raises RunFolderError: naming both sources and fingerprints.
    """
    if recorded and recorded.get("fingerprint") != current["fingerprint"]:
        raise RunFolderError(
            f"{subject} was trained on {recorded.get('name')} read from {recorded.get('source')} "
            f"(fingerprint {recorded.get('fingerprint')}), but the data read now from "
            f"{current['source']} differs (fingerprint {current['fingerprint']}); {consequence}")


def load_weights(vae, state, where):
    """``vae.load_state_dict(state["model"])`` with a clear error.

    :raises CheckpointError: if the checkpoint's weights do not fit the model its config
        describes (the file was edited, or mixed from two runs).
    """
    try:
        vae.load_state_dict(state["model"])
    except (RuntimeError, KeyError, TypeError) as e:
        text = str(e).strip().splitlines()
        raise CheckpointError(f"{where}: the checkpoint's weights do not fit the model its own "
                              f"config describes ({' '.join(t.strip() for t in text[:3])[:300]}); "
                              "the checkpoint was edited or mixed from two runs. Use another "
                              "copy") from None


def best_state(run_dir, state, map_location="cpu"):
    """The checkpoint of the best validation epoch that ``state`` (the run's last
    checkpoint) records, or ``None`` when it records none.

    ``best.pt`` is used when it holds that epoch. A run killed after writing its checkpoint
    and before writing ``best.pt`` left ``best.pt`` an epoch behind; then the best epoch is
    the checkpoint's own (it was written at the end of it), which is returned instead.

    :raises CheckpointError: if neither holds the recorded best epoch.
    """
    epoch = int((state.get("best") or {}).get("epoch") or 0)
    if epoch == 0:
        return None
    path = Path(run_dir) / "best.pt"
    found = None
    if path.is_file():
        best = load_checkpoint(path, map_location=map_location)
        if int(best["epoch"]) == epoch:
            return best
        found = int(best["epoch"])
    if int(state["epoch"]) == epoch and not state.get("batch_in_epoch"):
        return state
    raise CheckpointError(f"{run_dir}: the checkpoint records epoch {epoch} as the best, but "
                          + ("there is no best.pt" if found is None else f"best.pt holds epoch "
                             f"{found}") + "; the best weights are lost (the last epoch is in checkpoint.pt)")


def evaluate_run(vae, test, config, device, k=None, seed=None, progress=False, world=None,
                 factor_metrics=True):
    """Evaluate a trained VAE on its test set: log-likelihood, ELBO, diagnostics, latents.

    :param vae: the model (on ``device``).
    :param torch.Tensor test: the test set as the model sees it (binarized), ``(N, D)``.
    :param Config config: the run's recipe; its ``[eval]`` table sets chunk sizes, and
        ``k`` and ``seed`` unless given here.
    :param bool factor_metrics: on data with known factors, add the disentanglement
        metrics (:func:`~pyro_vae.factor_eval.factor_metrics_for`; about 15 s).
    :returns: ``(summary, result)``: a JSON-safe dict for ``eval.json`` (see
        :meth:`~pyro_vae.infer.LogLikelihoodResult.summary` and
        :meth:`~pyro_vae.infer.LatentReport.summary`) and the
        :class:`~pyro_vae.infer.LogLikelihoodResult`.

    The proposal is the guide, or for a point-mass guide the Gaussian around its point that
    :meth:`~pyro_vae.vae.VAE.proposal` gives; the summary then says so under ``"proposal"``
    (e.g. ``"gaussian(0.1) around the point-mass guide"``), and its ELBO, KL and active
    units are of that Gaussian.

    With a :class:`~pyro_vae.distributed.World` of several ranks the log-likelihood is
    shared among them (every rank gets the result); the latent report is computed on rank 0
    only, and the other ranks' summary holds the log-likelihood part alone.
    """
    e = config.eval
    k = e.k if k is None else int(k)
    seed = e.seed if seed is None else int(seed)
    vae.eval()
    proposal = vae.proposal()
    described = {"proposal": proposal.description} if hasattr(proposal, "description") else {}
    result = infer.log_likelihood(vae.model, proposal, test, num_particles=k,
                                     batch_size=e.batch_size, particle_batch=e.particle_batch,
                                     seed=seed, device=device, progress=progress, world=world)
    if world is not None and not world.is_main:
        return {**result.summary(), **described}, result
    latents = infer.latent_report(vae.model, proposal, test, seed=seed, device=device,
                                     batch_size=max(e.batch_size, 100))
    usage = {}
    if hasattr(vae.posterior, "code_usage"):  # a vector-quantized code
        usage = {"codebook": vae.posterior.code_usage(infer.to_device(test, device))}
    factors = factor_metrics_for(vae, config, seed) if factor_metrics else {}
    return {**result.summary(), **latents.summary(), **described, **usage, **factors}, result


def load_for_evaluation(run, args, test_sets=None):
    """A run's model and its test set as the model sees it, on the device of ``args``.

    ``test_sets`` caches test sets by data settings, so that runs on the same data share one.
    Returns ``(vae, config, state, test, device, proposal)``: ``config`` with the ``[eval]``
    overrides of ``args`` applied (``k``, ``batch_size``, ``particle_batch``, ``seed``
    where given); ``test`` a tensor, or ``(x, y)`` for a conditional model; ``proposal``
    describes the proposal of a point-mass guide (``None`` for a guide that is its own
    proposal, see :meth:`~pyro_vae.vae.VAE.proposal`).

    :raises ConfigError: for a conditional model whose data has no test labels.
    :raises RunFolderError, CheckpointError, DataError: from loading the run and its data
        (e.g. data files that are not the ones the run was trained on).
    """
    from .batches import prepare_eval_splits
    from .datasets import data_fingerprint, load_dataset
    from .recipes import apply_overrides

    world = getattr(args, "world", None) or SINGLE
    device = world.device if world.distributed else resolve_device(args.device)
    vae, config, state = load_run(run, device)
    proposal = getattr(vae.proposal(), "description", None)
    overrides = {f"eval.{key}": getattr(args, key, None) for key in ("k", "batch_size",
                                                                     "particle_batch", "seed")}
    config = apply_overrides(config, {k: v for k, v in overrides.items() if v is not None})
    key = (config.data.name, config.data.data_dir, config.data.binarization)
    test_sets = {} if test_sets is None else test_sets
    if key not in test_sets:
        data = load_dataset(config.data.name, config.data.data_dir, config.data.download)
        test_sets[key] = (prepare_eval_splits(data, config.data.binarization)[1],
                          data.test_labels, data_fingerprint(data))
        del data
    test, labels, source = test_sets[key]
    check_data_source(state.get("data_source"), source, run,
                      "its test log-likelihood would be of other images. Give the original "
                      "files, or score other data deliberately with  pyro-vae score RUN --data ...")
    if getattr(vae, "conditional", False):  # log p(x | y): the model reads the labels too
        if labels is None:
            raise ConfigError(f"{run} is a conditional model, but its data has no test labels")
        test = (test, labels)
    return vae, config, state, test, device, proposal
