"""Log-likelihood estimation speed and memory: the project's estimator against plain PyTorch.

The project's :func:`pyro_vae.infer.log_likelihood` reads the log weights off Pyro
traces (with the k-sweep, ESS and arviz's k-hat on top); the plain estimator is a
vectorized IWAE written for the baseline network alone (784-400-50, softplus, Bernoulli),
with the same weights, the same k and the same chunking (datapoints x particles). Each
estimate runs in its own process, alternating project / plain, so that peak memory
(``ru_maxrss``) belongs to one estimator; the figure reported is the median over rounds.

Usage::

    python analysis/benchmark_loglik.py                           # 1000 test images, k = 1000
    python analysis/benchmark_loglik.py --run runs/fmnist10       # that run's trained weights
    python analysis/benchmark_loglik.py --data digits --num-test 50 --k 50 --rounds 1
"""

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "analysis"))


def _peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def plain_iwae(plain, data, k, batch_size, particle_batch):
    """Per-datapoint IWAE bound ``(N,)`` of the plain network, chunked like the project's."""
    out = []
    with torch.no_grad():
        for start in range(0, data.shape[0], batch_size):
            x = data[start:start + batch_size]
            lw = torch.cat([plain.log_weights(x, min(particle_batch, k - s))
                            for s in range(0, k, particle_batch)]).double()
            out.append(torch.logsumexp(lw, 0) - math.log(k))
    return torch.cat(out)


def worker(args):
    """Run one estimator in this process and print a JSON line."""
    from benchmark_training import PlainVAE
    from pyro_vae.config import ModelConfig
    from pyro_vae.registries import build_vae
    from pyro_vae.batches import prepare_eval_splits
    from pyro_vae.datasets import load_dataset
    from pyro_vae.infer import log_likelihood
    from pyro_vae.runs import load_run

    torch.manual_seed(0)
    if args.run:
        vae, config, _ = load_run(args.run, "cpu")
        data_name = config.data.name
    else:
        data_name = args.data
    _, test = prepare_eval_splits(load_dataset(data_name), "dynamic")
    test = test[:args.num_test]
    if not args.run:
        vae = build_vae(ModelConfig(latent_dim=50, hidden=[400]), (test.shape[1],))
    vae.eval()
    plain = PlainVAE.from_vae(vae)
    # warm-up on a small piece, outside the timer
    log_likelihood(vae.model, vae.proposal(), test[:2], num_particles=50)
    plain_iwae(plain, test[:2], 50, 2, 50)
    baseline = _peak_rss_mb()
    start = time.perf_counter()
    if args.worker == "project":
        estimate = log_likelihood(vae.model, vae.proposal(), test, num_particles=args.k,
                                  batch_size=args.batch_size,
                                  particle_batch=args.particle_batch).log_likelihood
    else:
        with torch.random.fork_rng():
            estimate = plain_iwae(plain, test, args.k, args.batch_size, args.particle_batch)
    seconds = time.perf_counter() - start
    print(json.dumps({"estimator": args.worker, "seconds": seconds,
                      "datapoint_particles_per_second": test.shape[0] * args.k / seconds,
                      "peak_rss_mb": _peak_rss_mb(), "rss_before_mb": baseline,
                      "mean_log_likelihood": float(estimate.mean()),
                      "num_test": int(test.shape[0]), "k": args.k}))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--run", help="take the trained weights (and data) of this run folder")
    parser.add_argument("--num-test", type=int, default=1000, help="first N test images")
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--particle-batch", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--worker", choices=["project", "plain"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)

    passthrough = [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
                   if k not in ("rounds", "json", "worker") and v is not None]
    runs = {"project": [], "plain": []}
    for _ in range(args.rounds):
        for name in runs:
            out = subprocess.run([sys.executable, __file__, *passthrough, "--worker", name],
                                 capture_output=True, text=True, check=True).stdout
            runs[name].append(json.loads(out.strip().splitlines()[-1]))
    summary = {}
    for name, rs in runs.items():
        summary[name] = {key: statistics.median(r[key] for r in rs)
                         for key in ("datapoint_particles_per_second", "seconds", "peak_rss_mb",
                                     "rss_before_mb", "mean_log_likelihood")}
    ratio = summary["project"]["datapoint_particles_per_second"] / \
        summary["plain"]["datapoint_particles_per_second"]
    results = {"data": args.run or args.data, "num_test": args.num_test, "k": args.k,
               "batch_size": args.batch_size, "particle_batch": args.particle_batch,
               "threads": torch.get_num_threads(), "torch": torch.__version__,
               "estimators": summary, "ratio": ratio, "rounds": runs}
    print(f"{args.num_test} test images of {args.run or args.data}, k = {args.k}, chunks of "
          f"{args.batch_size} x {args.particle_batch}, {torch.get_num_threads()} threads")
    for name, s in summary.items():
        print(f"{name:<8} {s['datapoint_particles_per_second']:>12,.0f} datapoint-particles/s  "
              f"peak RSS {s['peak_rss_mb']:,.0f} MB (before estimating {s['rss_before_mb']:,.0f} MB)"
              f"  mean log p(x) {s['mean_log_likelihood']:.3f}")
    print(f"ratio project / plain: {ratio:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
