"""What moving a flow guide's chains in the flow's base space buys: one AIS transition with
the IAF guide, in the base space (the default of :class:`pyro_vae.infer.AnnealedChains`)
against in z through the flow's inverse (``flow_base=False``).

In z, ``log q(z|x)`` at a point the chains reach needs the flow's inverse: for an
autoregressive flow of a D-dimensional latent, D sequential network passes per flow step,
at every leapfrog step. In the base space the flow runs forwards once per leapfrog step
(NeuTra HMC, Hoffman et al. 2019, arXiv:1903.03704). Both run in this process on the same
images and weights, alternating blocks of transitions; the figure is the median over
blocks. The script also checks that both give the same ``log q(z|x)`` at the chains'
common start (the guide's draws).

Usage::

    python analysis/benchmark_flow_ais.py runs/ais50/vae_iaf --json analysis/benchmark_flow_ais.json
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import pyro
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a run folder with a flow guide (e.g. the vae_iaf recipe)")
    parser.add_argument("--batch-size", type=int, default=100, help="images")
    parser.add_argument("--num-chains", type=int, default=4)
    parser.add_argument("--num-leapfrog", type=int, default=5)
    parser.add_argument("--transitions", type=int, default=2, help="transitions per block")
    parser.add_argument("--blocks", type=int, default=3, help="alternating blocks of each")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)

    from pyro_vae.batches import prepare_eval_splits
    from pyro_vae.datasets import load_dataset
    from pyro_vae.infer import AnnealedChains
    from pyro_vae.runs import load_run

    vae, config, _ = load_run(args.run, "cpu")
    vae.eval()
    _, test = prepare_eval_splits(load_dataset(config.data.name, config.data.data_dir),
                                  config.data.binarization)
    x = test[:args.batch_size]
    chains = {}
    for name, flow_base in (("base space", True), ("z, through the inverse", False)):
        pyro.set_rng_seed(0)
        with pyro.validation_enabled(False):
            chains[name] = AnnealedChains(vae.model, vae.guide, x, args.num_chains, "data", 1,
                                          flow_base=flow_base)
    a, b = (c.log_q for c in chains.values())
    max_diff = float((a - b).abs().max())
    eps = torch.full((x.shape[0],), 0.05)
    timings = {name: [] for name in chains}
    with pyro.validation_enabled(False):
        for block in range(args.blocks + 1):  # block 0 warms up, untimed
            for name, c in chains.items():
                start = time.perf_counter()
                for _ in range(args.transitions):
                    c.transition(0.5, eps, args.num_leapfrog)
                if block:
                    timings[name].append((time.perf_counter() - start) / args.transitions)
    per_transition = {name: statistics.median(ts) for name, ts in timings.items()}
    rows = x.shape[0] * args.num_chains
    summary = {
        "run": str(args.run), "guide": config.model.guide,
        "guide_options": config.model.guide_options, "latent_dim": config.model.latent_dim,
        "images": x.shape[0], "num_chains": args.num_chains,
        "num_leapfrog": args.num_leapfrog, "torch_threads": torch.get_num_threads(),
        "max_abs_difference_log_q_at_start": max_diff,
        "microseconds_per_chain_transition": {k: 1e6 * v / rows
                                              for k, v in per_transition.items()},
        "speedup_base_over_z": per_transition["z, through the inverse"]
        / per_transition["base space"],
        "command": "python analysis/benchmark_flow_ais.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    print(json.dumps(summary, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
