"""Pretrained run folders: a finished run packed for others to evaluate and sample from.

A packed folder holds what a reader needs to check a published number and nothing that
only training needs: ``config.json``, ``metrics.jsonl``, ``eval.json`` (the run's test
estimate), the figures, and ``best.pt``, the weights the evaluation used (the best
validation epoch with early stopping, else the last one) without the optimizer state or
the RNG states (a third of a checkpoint's size with Adam); its ``packed_from`` records the
run's id, the evaluated epoch, the epochs trained and the training's wall time in seconds
(``training_seconds``, the last checkpoint's ``elapsed``). It is a run folder of its own
(marked, with the command ``pack``): ``pyro-vae evaluate`` and ``pyro-vae sample`` read it
as they read the run; it cannot be resumed (nothing to resume from), and says so.
Per-image estimate files (``loglik-k*-seed*.pt``) are left out: ``evaluate`` rewrites
them.
"""

import shutil
from pathlib import Path

from .checkpoint import load_checkpoint, save_checkpoint
from .errors import CheckpointError, RunFolderError
from .lock import RunLock
from .runfolder import (PACK_COMMAND, check_run_argument, create_run_folder, is_packed,
                        read_marker)
from .runs import best_state, read_eval_json

#: Files copied from the run, when present.
COPIED = ("config.json", "metrics.jsonl", "eval.json", "samples.png", "reconstructions.png",
          "curves.png", "layers.png")

#: Checkpoint keys a packed ``best.pt`` keeps (weights, recipe, where they came from).
KEPT = ("format", "version", "config", "event_shape", "image_shape", "model", "epoch", "step",
        "best", "data_source", "elapsed", "initial_elbo")


def pack_run(run_dir, out):
    """Write the packed folder ``out`` of the finished run ``run_dir``.

    :param run_dir: a run folder with ``checkpoint.pt`` and ``eval.json``.
    :param out: a new folder (an existing one is refused, as ``train --out`` refuses it).
    :returns: the paths written, name -> size in bytes.
    :raises RunFolderError: if ``run_dir`` is not a run folder, is in use, is packed
        already, has no test estimate (``eval.json``), or ``out`` exists or cannot be
        created.
    :raises CheckpointError: for a bad checkpoint, or a run whose evaluated epoch's weights
        are not in it.
    """
    run_dir, out = Path(run_dir), Path(out)
    check_run_argument(run_dir)
    if is_packed(run_dir):
        raise RunFolderError(f"{run_dir} is already a packed folder; copy it instead")
    lock = RunLock(run_dir, PACK_COMMAND).acquire()
    try:
        evaluation = read_eval_json(run_dir)
        if not evaluation or "test_log_likelihood" not in evaluation:
            raise RunFolderError(f"{run_dir} has no test estimate (eval.json); run "
                                 f"`pyro-vae evaluate {run_dir}` first")
        state = load_checkpoint(run_dir, map_location="cpu")
        trained = {"epochs": int(state["epoch"]), "training_seconds": float(state.get("elapsed", 0.0))}
        epoch = evaluation.get("evaluated_epoch", state["epoch"])
        if int(epoch) != int(state["epoch"]):
            best = best_state(run_dir, state)
            if best is None or int(best["epoch"]) != int(epoch):
                raise CheckpointError(f"{run_dir}: eval.json was computed at epoch {epoch}, "
                                      "whose weights neither checkpoint.pt nor best.pt holds")
            state = best
        packed = {key: state[key] for key in KEPT if key in state}
        packed["best"] = dict(state.get("best") or {}, epoch=int(state["epoch"]))
        packed["packed_from"] = {"run_id": (read_marker(run_dir) or {}).get("run_id"),
                                 "epoch": int(state["epoch"]), **trained}
        out_lock = create_run_folder(out, command=PACK_COMMAND)
        try:
            for name in COPIED:
                if (run_dir / name).is_file():
                    shutil.copyfile(run_dir / name, out / name)
            save_checkpoint(packed, out / "best.pt")
        finally:
            out_lock.release()
    finally:
        lock.release()
    return {p.name: p.stat().st_size for p in sorted(out.iterdir()) if not p.name.startswith(".")}
