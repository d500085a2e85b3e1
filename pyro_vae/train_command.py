"""``pyro-vae train``: a new run (``--out``, ``--overwrite``) or ``--resume RUN``.

The run folder is created, marked and locked before training (see
:mod:`pyro_vae.runfolder`); under torchrun every rank trains its shard and rank 0 writes.
"""

import sys
import time
from pathlib import Path

from .config import RESUME_BUDGET_KEYS, Config
from .distributed import lock_on_main, on_main
from .errors import ConfigError, TrainingDiverged
from .recipes import apply_overrides, parse_value, resolve_recipe
from .tables import print_summary


def _overrides(args):
    pairs = {}
    for flag, key in (("data", "data.name"), ("data_dir", "data.data_dir"),
                      ("epochs", "train.epochs"), ("batch_size", "train.batch_size"),
                      ("lr", "train.lr"), ("seed", "train.seed"),
                      ("latent_dim", "model.latent_dim"), ("labels", "data.labels")):
        if getattr(args, flag) is not None:
            pairs[key] = getattr(args, flag)
    if args.download:
        pairs["data.download"] = True
    for item in args.set:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected TABLE.KEY=VALUE, e.g. train.epochs=10")
        key, value = item.split("=", 1)
        pairs[key.strip()] = parse_value(value.strip())
    return pairs


def cmd_train(args):
    """``pyro-vae train``: a new run, or ``--resume RUN``; under torchrun, data-parallel
    over the ranks (rank 0 writes the run folder and holds its lock)."""
    from .checkpoint import load_checkpoint
    from .lock import note_stale
    from .run import Run
    from .runfolder import (check_resumable, check_run_folder, create_run_folder,
                            create_unique_run_folder, open_run_folder)

    world = args.world
    if args.resume:
        changed = _overrides(args)
        budget = {key: changed.pop(key) for key in RESUME_BUDGET_KEYS if key in changed}
        if changed or args.recipe or args.out or args.overwrite:
            raise ConfigError("--resume continues a run as it was recorded; only its budget "
                              "(--epochs, --set train.max_minutes=N, both new totals), --device "
                              f"and --quiet may be given with it, not {', '.join(sorted(changed))}"
                              if changed else
                              "--resume continues a run as it was recorded in its own folder; "
                              "a recipe, --out or --overwrite cannot be given with it")
        on_main(world, lambda: check_resumable(args.resume))
        # rank 0 reads the run; the other ranks (other nodes, maybe) get its recipe
        config = on_main(world, lambda: load_checkpoint(args.resume)["config"])
        config = Config.from_dict(config, where=f"run {args.resume}")
        if budget:
            config = apply_overrides(config, budget)
        out = Path(args.resume)
        lock = lock_on_main(world, lambda: open_run_folder(out, "pyro-vae train --resume"))
    else:
        config = apply_overrides(resolve_recipe(args.recipe), _overrides(args))
        if args.out:
            out = Path(args.out)
            on_main(world, lambda: check_run_folder(out, overwrite=args.overwrite))
        else:  # a name of our own: a free one is taken when the run starts
            data_name = Path(config.data.name).stem
            stamp = time.strftime('%Y%m%d-%H%M%S')
            out = Path("runs") / f"{config.name}-{data_name}-{stamp}"
        lock = None
    try:
        if args.resume:
            run = Run(config, out, device=args.device, quiet=args.quiet, world=world)
            run.resume()
        else:
            # data and model first: if they fail, nothing on disk has changed
            run = Run(config, out, device=args.device, quiet=args.quiet, world=world)
            command = "pyro-vae train" + (" --overwrite" if args.overwrite else "")
            if args.out:
                lock = lock_on_main(world, lambda: create_run_folder(out, args.overwrite,
                                                                      command))
            else:
                made = lock_on_main(world, lambda: create_unique_run_folder(out, command))
                run.run_dir = Path(world.broadcast(str(made[0]) if made else None))
                lock = made[1] if made else None
        if lock is not None:
            note_stale(lock)
        return _fit_and_finish(run, config, world)
    finally:
        if lock is not None:
            lock.release()


def _fit_and_finish(run, config, world):
    """Train ``run``, evaluate it and print the summary; returns the exit status."""
    try:
        run.fit()
    except TrainingDiverged as e:
        if world.is_main:
            print(f"pyro-vae: {e}", file=sys.stderr)
        return 1
    if run.stop_reason == "interrupted":
        t = run.trainer
        if world.is_main:
            launch = "torchrun ... -m pyro_vae" if world.distributed else "pyro-vae"
            print(f"pyro-vae: interrupted in epoch {t.epoch + 1} after step {t.step}; the "
                  f"checkpoint is saved: continue with  {launch} train --resume {run.run_dir}",
                  file=sys.stderr)
        return 130
    try:
        summary = run.finish()
    except KeyboardInterrupt:
        if world.is_main:
            print(f"pyro-vae: interrupted during the final evaluation; training is complete and "
                  f"saved in {run.run_dir}: evaluate it with  pyro-vae evaluate {run.run_dir}",
                  file=sys.stderr)
        return 130
    if world.is_main:
        if world.distributed:
            print(f"trained data-parallel on {world.size} processes "
                  f"({run.device.type}); global batch {config.train.batch_size}")
        print_summary(summary)
    if run.diverging:
        if world.is_main:
            print(f"pyro-vae: error: the objective diverged (the last epoch's train ELBO is far "
                  f"below the untrained model's; see {run.run_dir / 'metrics.jsonl'}); the run "
                  "is kept but its numbers are not those of a trained model. Lower train.lr or "
                  "set train.clip_norm", file=sys.stderr)
        return 1
    return 0
