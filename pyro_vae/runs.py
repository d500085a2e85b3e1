"""Run folders: creating them safely, reading them back, and evaluating a trained run.

A run folder holds ``config.json``, ``checkpoint.pt``, ``metrics.jsonl``, ``eval.json``,
figures, and the per-datapoint log-likelihood estimates of each evaluation
(``loglik-k<K>-seed<S>.pt``, tensors only), which ``pyro-vae compare`` reuses.
"""

import json
import shutil
from pathlib import Path

import torch

from . import evaluate
from .checkpoint import atomic_save, load_checkpoint, safe_load
from .config import Config, build_vae
from .errors import CheckpointError, ConfigError, RunFolderError

#: Files that mark a folder as a pyro_vae run folder.
RUN_MARKERS = ("config.json", "checkpoint.pt", "metrics.jsonl")


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



def check_run_folder(out, overwrite=False):
    """Check that a new run may be written to ``out``, changing nothing on disk.

    :returns: True if ``out`` holds a run that ``overwrite`` will replace.
    :raises RunFolderError: if ``out`` is a file, or a non-empty folder, unless
        ``overwrite`` is set and it is a pyro_vae run folder. A non-empty folder that is
        not a run folder is never replaced.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"{out} exists and is a file; choose another --out")
    if not (out.is_dir() and any(out.iterdir())):
        return False
    if not overwrite:
        raise RunFolderError(f"run folder {out} already exists; pass --overwrite to replace it, "
                             f"--resume {out} to continue it, or choose another --out")
    if not any((out / m).exists() for m in RUN_MARKERS):
        raise RunFolderError(f"{out} is not empty and is not a pyro_vae run folder; "
                             "refusing to delete it. Choose another --out")
    return True


def prepare_run_folder(out, overwrite=False):
    """Create ``out`` for a new run, replacing an old run there only if ``overwrite``.

    :raises RunFolderError: see :func:`check_run_folder`.
    """
    out = Path(out)
    if check_run_folder(out, overwrite):
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def read_metrics(run_dir):
    """The per-epoch records of ``run_dir/metrics.jsonl`` (a list of dicts). A last line
    cut short (the process killed while appending it) is left out."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    records = []
    for i, line in enumerate(lines):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i < len(lines) - 1:
                raise
    return records


def write_json(path, obj):
    """Write ``obj`` as indented JSON to ``path`` atomically (temporary file, then rename)."""
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    tmp.replace(path)



def update_eval_json(run_dir, results):
    """Merge ``results`` into ``run_dir/eval.json`` (written atomically)."""
    path = Path(run_dir) / "eval.json"
    current = json.loads(path.read_text()) if path.is_file() else {}
    current.update(results)
    write_json(path, current)
    return current



def write_figures(vae, test, image_shape, run_dir, metrics=None, seed=0, n=64):
    """Write ``samples.png``, ``reconstructions.png``, for a hierarchical VAE ``layers.png``
    (see :func:`~pyro_vae.plots.plot_layer_samples`), and (with metrics) ``curves.png``."""
    import matplotlib

    matplotlib.use("Agg")
    from . import plots

    run_dir = Path(run_dir)
    device = next(vae.parameters()).device
    vae.eval()
    with torch.no_grad(), evaluate.seeded(seed, device):
        samples = vae.sample(n)
        originals = evaluate.to_device(evaluate.rows(test, 0, 30), device)
        recon = vae.reconstruct(*evaluate.batch_args(originals))
        originals = evaluate.batch_args(originals)[0]
    plots.save_figure(plots.plot_images(samples, image_shape, title="samples (pixel means)"),
                      run_dir / "samples.png")
    plots.save_figure(plots.plot_reconstructions(originals, recon, image_shape),
                      run_dir / "reconstructions.png")
    if getattr(vae, "num_layers", 1) > 1:
        with evaluate.seeded(seed, device):
            axes = plots.plot_layer_samples(vae, image_shape)
        plots.save_figure(axes[0], run_dir / "layers.png")
    if metrics:
        plots.save_figure(plots.plot_curves(metrics), run_dir / "curves.png")



def load_run(run_dir, device="auto", weights="auto"):
    """Rebuild the trained VAE of a run folder from its checkpoint alone.

    :param str weights: ``"last"`` (``checkpoint.pt``), ``"best"`` (``best.pt``, the best
        validation epoch) or ``"auto"``: the best epoch when the run used early stopping
        (``train.patience``) and has one, as the test evaluation after training does.
    :returns: ``(vae, config, checkpoint)`` with the VAE on ``device`` in eval mode.
    :raises CheckpointError: for a missing or bad checkpoint.
    :raises ConfigError: if the stored recipe is invalid.
    """
    device = device if isinstance(device, torch.device) else resolve_device(device)
    state = load_checkpoint(run_dir, map_location=device)
    config = Config.from_dict(state["config"], where=f"checkpoint in {run_dir}")
    best = Path(run_dir) / "best.pt"
    if weights == "best" or (weights == "auto" and config.train.patience and best.is_file()):
        state = load_checkpoint(best, map_location=device)
    vae = build_vae(config.model, tuple(state["event_shape"]), state.get("image_shape")).to(device)
    vae.load_state_dict(state["model"])
    vae.eval()
    return vae, config, state


def evaluate_run(vae, test, config, device, k=None, seed=None, progress=False, world=None):
    """Evaluate a trained VAE on its test set: log-likelihood, ELBO, diagnostics, latents.

    :param vae: the model (on ``device``).
    :param torch.Tensor test: the test set as the model sees it (binarized), ``(N, D)``.
    :param Config config: the run's recipe; its ``[eval]`` table sets chunk sizes, and
        ``k`` and ``seed`` unless given here.
    :returns: ``(summary, result)``: a JSON-safe dict for ``eval.json`` (see
        :meth:`~pyro_vae.evaluate.LogLikelihoodResult.summary` and
        :meth:`~pyro_vae.evaluate.LatentReport.summary`) and the
        :class:`~pyro_vae.evaluate.LogLikelihoodResult`.

    With a :class:`~pyro_vae.distributed.World` of several ranks the log-likelihood is
    shared among them (every rank gets the result); the latent report is computed on rank 0
    only, and the other ranks' summary holds the log-likelihood part alone.
    """
    e = config.eval
    k = e.k if k is None else int(k)
    seed = e.seed if seed is None else int(seed)
    vae.eval()
    result = evaluate.log_likelihood(vae.model, vae.guide, test, num_particles=k,
                                     batch_size=e.batch_size, particle_batch=e.particle_batch,
                                     seed=seed, device=device, progress=progress, world=world)
    if world is not None and not world.is_main:
        return result.summary(), result
    latents = evaluate.latent_report(vae.model, vae.guide, test, seed=seed, device=device,
                                     batch_size=max(e.batch_size, 100))
    return {**result.summary(), **latents.summary()}, result


def results_path(run_dir, k, seed):
    """Where the per-datapoint estimates of one evaluation are kept."""
    return Path(run_dir) / f"loglik-k{int(k)}-seed{int(seed)}.pt"


#: Value of the ``"format"`` key of a saved log-likelihood result.
RESULT_FORMAT = "pyro_vae.loglik"


def save_result(run_dir, result):
    """Save a :class:`~pyro_vae.evaluate.LogLikelihoodResult` (tensors only, atomically)."""
    atomic_save({"format": RESULT_FORMAT, **result.state_dict()},
                results_path(run_dir, result.num_particles, result.seed))


def load_result(run_dir, k, seed):
    """The saved estimates of ``k`` particles and ``seed``, or ``None`` if there are none
    (or the file is unreadable: then it is recomputed)."""
    path = results_path(run_dir, k, seed)
    if not path.is_file():
        return None
    try:
        state = safe_load(path)
        if state.pop("format", None) != RESULT_FORMAT:
            return None
        return evaluate.LogLikelihoodResult.from_state_dict(state)
    except (CheckpointError, TypeError):
        return None
