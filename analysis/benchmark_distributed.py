"""Throughput of data-parallel training against one process.

Trains the same recipe with ``pyro-vae train`` in one process and under
``torchrun --nproc_per_node N`` (gloo on CPUs, NCCL on GPUs), and reads the training
images per second of every epoch after the first from ``metrics.jsonl`` (the first holds
start-up work). On CPUs the cores are divided among the processes (``OMP_NUM_THREADS``),
so N processes use the same cores as one.

    python analysis/benchmark_distributed.py --data fashion-mnist --epochs 4 \\
        --nproc 1 2 --batch-size 100 1000 --json analysis/benchmark_distributed.json
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def train(nproc, recipe, data, epochs, batch_size, device, threads, out):
    """One training run; returns the per-epoch images/s (first epoch dropped)."""
    args = ["train", recipe, "--data", data, "--epochs", str(epochs), "--batch-size",
            str(batch_size), "--device", device, "--out", str(out), "--quiet",
            "--set", "eval.k=1"]
    if nproc == 1:
        command = [sys.executable, "-m", "pyro_vae", *args]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   "--nproc_per_node", str(nproc), "-m", "pyro_vae", *args]
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, threads // nproc))}
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    lines = (Path(out) / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["images_per_second"] for line in lines[1:]]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipe", default="vae")
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--nproc", type=int, nargs="+", default=[1, 2])
    p.add_argument("--batch-size", type=int, nargs="+", default=[100])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=os.cpu_count(),
                   help="CPU threads shared among the processes (default: all cores)")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for batch in args.batch_size:
            base = None
            for n in args.nproc:
                speeds = train(n, args.recipe, args.data, args.epochs, batch, args.device,
                               args.threads, Path(tmp) / f"b{batch}-n{n}")
                median = statistics.median(speeds)
                base = median if base is None else base
                rows.append({"batch_size": batch, "nproc": n, "images_per_second": median,
                             "epochs_timed": len(speeds), "vs_first": median / base})
                print(f"batch {batch:5d}  {n} process(es): {median:9.0f} images/s "
                      f"({median / base:.2f}x)", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"settings": vars(args), "rows": rows},
                                              indent=1) + "\n")


if __name__ == "__main__":
    main()
