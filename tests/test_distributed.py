"""Data-parallel training and evaluation: two gloo processes on the CPU (torchrun), checked
against one process.

The two-process part runs once (tests/distributed_worker.py under torchrun, about ten
seconds); each test below reads what it left.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from pyro_vae import infer
from pyro_vae.batches import EpochBatches, prepare_eval_splits
from pyro_vae.datasets import load_dataset
from pyro_vae.distributed import SINGLE, World, init_world, rank_seed
from pyro_vae.errors import ConfigError, DataError
from pyro_vae.runfolder import prepare_run_folder
from pyro_vae.runs import load_run, read_metrics
from pyro_vae.run import Run

sys.path.insert(0, str(Path(__file__).parent))
from distributed_worker import small_config  # noqa: E402

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """Run the worker on two processes; return its output folder."""
    out = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
         "2", str(Path(__file__).parent / "distributed_worker.py"), str(out)],
        env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def load(out, name):
    return [torch.load(out / f"{name}-rank{r}.pt", weights_only=True) for r in (0, 1)]


def assert_same_weights(a, b, atol=0.0):
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=atol, msg=name)


def one_process_run(config, folder, grads=None):
    prepare_run_folder(folder)
    run = Run(config, folder, device="cpu", quiet=True)
    run.fit()
    if grads is not None:
        grads.update({n: p.grad for n, p in run.vae.named_parameters() if p.grad is not None})
    return {name: value.detach() for name, value in run.vae.state_dict().items()}


# --------------------------------------------------------------------------------------
# training


@pytest.mark.slow
def test_weights_identical_on_both_ranks(two_ranks):
    for name in ("delta", "straight", "resumed"):
        rank0, rank1 = load(two_ranks, name)
        assert_same_weights(rank0, rank1)


@pytest.mark.slow
def test_matches_one_process_with_the_same_global_batch(two_ranks, tmp_path):
    """With a point-mass guide every step is deterministic, so two ranks of 32 images each
    must follow one process with batches of 64, up to float rounding."""
    ddp, _ = load(two_ranks, "delta")
    config = small_config(**{"model.guide": "delta"})
    grads = {}
    single = one_process_run(config, tmp_path / "single", grads)
    assert_same_weights(ddp, single, atol=2e-5)
    # the last step's gradient is the summed loss's over all 64 images (not a mean over
    # ranks: Adam would hide a constant factor in the weights, not in the gradient)
    ddp_grads, _ = load(two_ranks, "delta-grad")
    assert ddp_grads.keys() == grads.keys()
    for name in grads:
        torch.testing.assert_close(ddp_grads[name], grads[name], rtol=1e-3, atol=1e-4)
    # the tolerance is tight next to what a different batch does: 32 images a step
    half = one_process_run(small_config(**{"model.guide": "delta", "train.batch_size": 32}),
                           tmp_path / "half")
    gap = max((half[n] - single[n]).abs().max().item() for n in single)
    assert gap > 1e-3


@pytest.mark.slow
def test_ranks_see_disjoint_shards_of_the_global_batch(two_ranks):
    rank0, rank1 = load(two_ranks, "batches")
    data = load_dataset("digits")
    single = list(EpochBatches(data.train, 64, "dynamic", seed=0).epoch())
    assert len(rank0) == len(rank1) == len(single)
    for g, a, b in zip(single, rank0, rank1):
        assert torch.equal(g[0::2], a) and torch.equal(g[1::2], b)


@pytest.mark.slow
def test_only_rank_0_writes(two_ranks):
    record = [json.loads((two_ranks / f"record-rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["train_status"] for r in record] == [0, 0]
    assert [r["evaluate_status"] for r in record] == [0, 0]
    assert list((two_ranks / "cwd1").iterdir()) == []
    run = two_ranks / "cwd0" / "run"
    for name in ("config.json", "checkpoint.pt", "metrics.jsonl", "eval.json", "samples.png"):
        assert (run / name).is_file(), name
    assert [m["epoch"] for m in read_metrics(run)] == [1]
    assert json.loads((run / "eval.json").read_text())["k"] == 7
    assert [m["epoch"] for m in read_metrics(two_ranks / "straight")] == [1, 2]


@pytest.mark.slow
def test_stop_on_one_rank_stops_both_and_resumes_exactly(two_ranks):
    """Rank 1 alone asks to stop after step 5: both ranks stop after the same step (the
    next exchange), the checkpoint is inside epoch 1, and the resumed run ends with the
    uninterrupted run's exact weights."""
    record = [json.loads((two_ranks / f"record-rank{r}.json").read_text()) for r in (0, 1)]
    assert record[0]["stopped"] == record[1]["stopped"]
    assert record[0]["stopped"]["reason"] == "interrupted"
    assert record[0]["stopped"]["batch_in_epoch"] == 6
    resumed, _ = load(two_ranks, "resumed")
    straight, _ = load(two_ranks, "straight")
    assert_same_weights(resumed, straight)


# --------------------------------------------------------------------------------------
# evaluation


@pytest.mark.slow
def test_sharded_evaluation_equals_one_process(two_ranks):
    vae, config, _ = load_run(two_ranks / "straight", device="cpu")
    test = prepare_eval_splits(load_dataset("digits"), config.data.binarization)[1]
    single = infer.log_likelihood(vae.model, vae.guide, test, num_particles=30,
                                     batch_size=40, particle_batch=7, seed=3)
    for state in load(two_ranks, "loglik"):
        got = infer.LogLikelihoodResult.from_state_dict(state)
        assert got.fingerprint == single.fingerprint
        for field in ("log_likelihood", "elbo", "ess", "mc_se"):
            torch.testing.assert_close(getattr(got, field), getattr(single, field),
                                       rtol=0, atol=1e-9)
        assert got.k_sweep.keys() == single.k_sweep.keys()


# --------------------------------------------------------------------------------------
# pieces, in one process


def test_epoch_batches_shards_partition_every_global_batch():
    ids = torch.arange(23, dtype=torch.float32).unsqueeze(1)  # each row names its image
    single = list(EpochBatches(ids, 10, "none", seed=4).epoch())
    for size in (2, 3):
        shards = [list(EpochBatches(ids, 10, "none", seed=4, rank=r, world_size=size).epoch())
                  for r in range(size)]
        for i, batch in enumerate(single):
            parts = [s[i] for s in shards]
            seen = torch.cat(parts).flatten().tolist()
            if batch.shape[0] >= size:  # disjoint, and together the one-process batch
                assert sorted(seen) == sorted(batch.flatten().tolist())
            else:  # a last batch smaller than the world: every rank still gets an image
                assert all(p.shape[0] >= 1 for p in parts)
                assert set(seen) == set(batch.flatten().tolist())
    # 23 = 2 x 10 + 3: the last global batch of 3 split over 3 ranks is one image each
    last = [list(EpochBatches(ids, 10, "none", seed=4, rank=r, world_size=3).epoch())[-1]
            for r in range(3)]
    assert [p.shape[0] for p in last] == [1, 1, 1]


def test_epoch_batches_refuse_a_batch_smaller_than_the_world():
    with pytest.raises(DataError, match="at least the number of processes"):
        EpochBatches(torch.rand(10, 4), 2, "none", seed=0, rank=0, world_size=4)
    with pytest.raises(DataError, match="outside a world"):
        EpochBatches(torch.rand(10, 4), 8, "none", seed=0, rank=4, world_size=4)


def test_single_process_world():
    world = init_world("cpu", environ={})
    assert world == SINGLE and world.is_main and not world.distributed
    assert world.shard(5) == [0, 1, 2, 3, 4]
    assert world.all_reduce([1.5, 2]) == [1.5, 2.0] and world.any(True)
    assert World(rank=1, size=3).shard(8) == [1, 4, 7]
    assert rank_seed(7, 0) == 7 and rank_seed(7, 1) != rank_seed(7, 2)


def test_incomplete_torchrun_environment_is_refused():
    with pytest.raises(ConfigError, match="RANK, LOCAL_RANK"):
        init_world("cpu", environ={"WORLD_SIZE": "2", "MASTER_ADDR": "x", "MASTER_PORT": "1"})
