"""One rank of the data-parallel checks in test_distributed.py, started by torchrun.

``python -m torch.distributed.run --standalone --nproc_per_node 2 distributed_worker.py OUT``

Each rank trains and evaluates on digits (gloo, CPU) and leaves what the test compares in
OUT: final weights per rank, the first epoch's batches per rank, per-datapoint estimates.
Everything that a test compares across ranks is written here, by the test harness, with
the rank in the file name; the library's own writing goes to run folders.
"""

import json
import os
import sys
from pathlib import Path

import torch

from pyro_vae import cli, infer
from pyro_vae.recipes import apply_overrides, resolve_recipe
from pyro_vae.batches import prepare_eval_splits
from pyro_vae.datasets import load_dataset
from pyro_vae.distributed import init_world
from pyro_vae.runfolder import prepare_run_folder
from pyro_vae.runs import load_run
from pyro_vae.run import Run

#: The recipe of the Run-API checks: small, so that two epochs take a second.
SMALL = {"data.name": "digits", "model.hidden": [64], "model.latent_dim": 8,
         "train.batch_size": 64, "train.epochs": 2, "eval.k": 10}


def small_config(**more):
    return apply_overrides(resolve_recipe("vae"), {**SMALL, **more})


def new_run(world, config, folder):
    if world.is_main:
        prepare_run_folder(folder)
    world.barrier()
    return Run(config, folder, device="cpu", quiet=True, world=world)


def weights(run):
    return {name: value.detach().clone() for name, value in run.vae.state_dict().items()}


def gradients(run):
    """The gradients of the last step (after DDP's averaging)."""
    return {name: p.grad.clone() for name, p in run.vae.named_parameters()
            if p.grad is not None}


def main(out):
    out = Path(out)
    world = init_world("cpu")
    rank = world.rank
    record = {"rank": rank, "size": world.size}

    # 1. a point-mass guide makes every step deterministic: the run must equal one process
    #    with the same global batch (the test trains that one)
    run = new_run(world, small_config(**{"model.guide": "delta"}), out / "delta")
    batches = run.trainer.batches
    state = batches.get_state()
    torch.save(list(batches.epoch()), out / f"batches-rank{rank}.pt")
    batches.set_state(state)
    run.fit()
    torch.save(weights(run), out / f"delta-rank{rank}.pt")
    torch.save(gradients(run), out / f"delta-grad-rank{rank}.pt")

    # 2. a Gaussian guide (each rank draws its own z): weights stay identical over ranks
    run = new_run(world, small_config(), out / "straight")
    run.fit()
    torch.save(weights(run), out / f"straight-rank{rank}.pt")

    # 3. a stop asked for on rank 1 alone, inside epoch 1, then resume to the end: the same
    #    weights as the uninterrupted run
    run = new_run(world, small_config(), out / "stopped")
    step = run.trainer.training_step

    def stop_on_rank_1(x):
        value = step(x)
        if rank == 1 and run.trainer.step == 5:
            run.trainer.stop_requested = True
        return value

    run.trainer.training_step = stop_on_rank_1
    run.fit()
    record["stopped"] = {"reason": run.stop_reason, "step": run.trainer.step,
                         "batch_in_epoch": run.trainer.batch_in_epoch}
    resumed = Run(small_config(), out / "stopped", device="cpu", quiet=True, world=world)
    resumed.resume()
    resumed.fit()
    torch.save(weights(resumed), out / f"resumed-rank{rank}.pt")

    # 4. sharded evaluation: per-datapoint estimates (the test repeats it in one process)
    vae, config, _ = load_run(out / "straight", device="cpu")
    test = prepare_eval_splits(load_dataset("digits"), config.data.binarization)[1]
    result = infer.log_likelihood(vae.model, vae.guide, test, num_particles=30,
                                     batch_size=40, particle_batch=7, seed=3, world=world)
    torch.save(result.state_dict(), out / f"loglik-rank{rank}.pt")

    # 5. the command line, each rank in its own working folder: only rank 0's gets the run
    cwd = out / f"cwd{rank}"
    cwd.mkdir()
    os.chdir(cwd)
    record["train_status"] = cli.main(["train", "vae", "--data", "digits", "--epochs", "1",
                                       "--out", "run", "--quiet", "--device", "cpu",
                                       "--set", "eval.k=5"])
    world.barrier()
    record["evaluate_status"] = cli.main(["evaluate", str(out / "cwd0" / "run"), "--k", "7",
                                          "--quiet", "--device", "cpu"])
    (out / f"record-rank{rank}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main(sys.argv[1])
