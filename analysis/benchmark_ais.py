"""The cost of one AIS transition: the project's generic HMC step against plain PyTorch.

The project's transition (:meth:`pyro_vae.infer.AnnealedChains.transition`) reads
``log q(z|x)`` and ``log p(x, z)`` off Pyro traces of the guide and model, conditioned on
the chains' states, at every leapfrog step, and integrates with Pyro's
``velocity_verlet``. The plain transition is written for the baseline network alone
(784-400-50, softplus, Bernoulli; ``PlainVAE`` of ``benchmark_training.py``, the same
weights): the encoder runs once per transition (its output does not depend on z), then
the same leapfrog and Metropolis step with the same number of gradient evaluations
(``num_leapfrog + 1``). Both run in this process, alternating blocks of transitions, so
the ratio is measured under the same conditions; the figure is the median over blocks.

Usage::

    python analysis/benchmark_ais.py                               # 100 images x 16 chains
    python analysis/benchmark_ais.py --run runs/vae50              # a trained run's weights
    python analysis/benchmark_ais.py --data digits --blocks 2 --transitions 2   # a smoke run
"""

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "analysis"))

LOG_2PI = math.log(2 * math.pi)


def plain_transition(plain, x, z, beta, eps, num_leapfrog):
    """One HMC transition of the chains ``z`` ``(C, B, D)`` at temperature ``beta`` for the
    plain network: leapfrog with step ``eps``, Metropolis correction. Returns new ``z``."""
    with torch.no_grad():
        loc, raw = plain.encoder(x).split(plain.z_dim, dim=-1)
        scale = F.softplus(raw) + 1e-5

    def energy_and_grad(z):
        z = z.detach().requires_grad_(True)
        with torch.enable_grad():
            log_q = (-0.5 * ((z - loc) / scale) ** 2 - scale.log() - 0.5 * LOG_2PI).sum(-1)
            log_p_z = (-0.5 * z**2 - 0.5 * LOG_2PI).sum(-1)
            logits = plain.decoder(z)
            log_p_x = -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits),
                                                          reduction="none").sum(-1)
            energy = -((1 - beta) * log_q + beta * (log_p_z + log_p_x))
            (grad,) = torch.autograd.grad(energy.sum(), z)
        return energy.detach(), grad

    r = torch.randn_like(z)
    energy0, grad = energy_and_grad(z)
    start = energy0 + 0.5 * (r**2).sum(-1)
    z1, r1 = z, r
    for _ in range(num_leapfrog):
        r1 = r1 - 0.5 * eps * grad
        z1 = z1 + eps * r1
        energy1, grad = energy_and_grad(z1)
        r1 = r1 - 0.5 * eps * grad
    end = energy1 + 0.5 * (r1**2).sum(-1)
    accept = torch.rand_like(start) < torch.exp(torch.clamp(start - end, max=0.0))
    return torch.where(accept.unsqueeze(-1), z1, z)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--run", help="take the trained weights (and data) of this run folder")
    parser.add_argument("--batch-size", type=int, default=100, help="images per chunk")
    parser.add_argument("--num-chains", type=int, default=16)
    parser.add_argument("--num-leapfrog", type=int, default=10)
    parser.add_argument("--transitions", type=int, default=5, help="transitions per block")
    parser.add_argument("--blocks", type=int, default=6, help="alternating blocks of each")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)

    from benchmark_training import PlainVAE
    from pyro_vae.batches import prepare_eval_splits
    from pyro_vae.config import ModelConfig
    from pyro_vae.datasets import load_dataset
    from pyro_vae.infer import AnnealedChains
    from pyro_vae.registries import build_vae
    from pyro_vae.runs import load_run

    torch.manual_seed(0)
    if args.run:
        vae, config, _ = load_run(args.run, "cpu")
        data_name, data_dir = config.data.name, config.data.data_dir
    else:
        data_name, data_dir = args.data, args.data_dir
    _, test = prepare_eval_splits(load_dataset(data_name, data_dir), "dynamic")
    x = test[:args.batch_size]
    if not args.run:
        vae = build_vae(ModelConfig(latent_dim=50, hidden=[400]), (x.shape[1],))
    vae.eval()
    plain = PlainVAE.from_vae(vae)
    chains = AnnealedChains(vae.model, vae.guide, x, args.num_chains, "data", 1)
    eps = torch.full((x.shape[0],), 0.05)
    z = chains.state["z"].clone()
    timings = {"project": [], "plain": []}
    for block in range(args.blocks + 1):  # block 0 warms up, untimed
        for name in timings:
            start = time.perf_counter()
            for _ in range(args.transitions):
                if name == "project":
                    chains.transition(0.5, eps, args.num_leapfrog)
                else:
                    z = plain_transition(plain, x, z, 0.5, 0.05, args.num_leapfrog)
            if block:
                timings[name].append((time.perf_counter() - start) / args.transitions)
    per_transition = {name: statistics.median(ts) for name, ts in timings.items()}
    rows = x.shape[0] * args.num_chains
    summary = {
        "network": f"{x.shape[1]}-400-50 softplus, Bernoulli (the vae recipe's)",
        "images": x.shape[0], "num_chains": args.num_chains, "num_leapfrog": args.num_leapfrog,
        "seconds_per_transition": per_transition,
        "microseconds_per_chain_transition": {k: 1e6 * v / rows for k, v in per_transition.items()},
        "speed_ratio_project_over_plain": per_transition["plain"] / per_transition["project"],
        "torch_threads": torch.get_num_threads(),
    }
    print(json.dumps(summary, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
