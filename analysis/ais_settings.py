"""Choose AIS settings for real data: the estimate as the number of temperatures doubles.

AIS's estimate is a stochastic lower bound of log p(x) that rises to it as ``num_steps``
(T) grows (Wu et al. 2017, arXiv:1611.04273). This script runs
:func:`pyro_vae.infer.ais_log_likelihood` on the first ``--num-test`` test images of a
trained run at T, 2T, 4T, ... with the other settings fixed, and reports for each the mean
estimate, the paired difference against the previous T (image by image, with its standard
error), the mean acceptance rate and the wall time. Settings at which doubling T moves the
mean by less than ``--tolerance`` nats (default 0.1) are converged in this sense; BDMC
(``pyro-vae bdmc``) then says how far they are from log p(x) on the model's own data.

Usage::

    python analysis/ais_settings.py runs/ais50/vae --num-test 200 --steps 50 100 200 400 \\
        --num-chains 4 --json analysis/ais_settings.json
"""

import argparse
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pyro_vae.infer import ais_log_likelihood, standard_error  # noqa: E402
from pyro_vae.runs import load_for_evaluation  # noqa: E402


def sweep(run, steps, num_test, num_chains, num_leapfrog, seed, batch_size, progress=True):
    """AIS on the first ``num_test`` test images of ``run`` at each T of ``steps``.

    :returns: a list of dicts, one per T: ``num_steps``, ``mean`` and ``se`` (nats, over
        images), ``chain_se``, ``acceptance`` (mean), ``seconds``, and against the previous
        T ``difference`` and ``difference_se`` (paired, nats); also ``per_image`` ``(N,)``.
    """
    args = SimpleNamespace(device="cpu", k=None, batch_size=None, particle_batch=None,
                           seed=None)
    vae, config, _, test, _, _ = load_for_evaluation(run, args)
    x = test[:num_test] if num_test else test
    rows, previous = [], None
    for T in steps:
        r = ais_log_likelihood(vae.model, vae.guide, x, num_chains=num_chains, num_steps=T,
                               num_leapfrog=num_leapfrog, seed=seed, batch_size=batch_size,
                               progress=progress)
        ll = r.log_likelihood.double()
        row = {"num_steps": T, "mean": r.mean, "se": r.se, "chain_se": r.chain_se,
               "acceptance": float(r.acceptance.mean()), "seconds": r.seconds,
               "per_image": ll.tolist()}
        if previous is not None:
            d = ll - previous
            row["difference"], row["difference_se"] = float(d.mean()), float(standard_error(d))
        rows.append(row)
        previous = ll
        print(f"T = {T:5d}: {r.mean:9.3f} +- {r.se:.3f} (chains {r.chain_se:.3f})"
              + (f", vs T/2 {row['difference']:+.3f} +- {row['difference_se']:.3f}"
                 if "difference" in row else "")
              + f", acceptance {row['acceptance']:.2f}, {r.seconds / 60:.1f} min", flush=True)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a trained run folder")
    parser.add_argument("--steps", type=int, nargs="+", default=[100, 200, 400, 800],
                        help="the numbers of temperatures T to try, each double the last")
    parser.add_argument("--num-test", type=int, default=1000, help="first N test images")
    parser.add_argument("--num-chains", type=int, default=16)
    parser.add_argument("--num-leapfrog", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=100, help="images per chunk")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tolerance", type=float, default=0.1,
                        help="nats: a doubling that moves the mean by less is converged")
    parser.add_argument("--json", help="write the rows (without per-image values) here")
    parser.add_argument("--quiet", action="store_true")
    a = parser.parse_args(argv)
    rows = sweep(a.run, a.steps, a.num_test, a.num_chains, a.num_leapfrog, a.seed,
                 a.batch_size, progress=not a.quiet)
    converged = [r["num_steps"] for r in rows[1:] if abs(r["difference"]) < a.tolerance]
    print(f"doublings that moved the mean by less than {a.tolerance} nats: "
          f"{', '.join(f'{T // 2} -> {T}' for T in converged) or 'none'}")
    if a.json:
        summary = {"run": str(a.run), "num_test": a.num_test, "num_chains": a.num_chains,
                   "num_leapfrog": a.num_leapfrog, "seed": a.seed, "threads":
                   torch.get_num_threads(), "command": "python analysis/ais_settings.py "
                   + " ".join(argv if argv is not None else sys.argv[1:]),
                   "rows": [{k: v for k, v in r.items() if k != "per_image"} for r in rows]}
        Path(a.json).write_text(json.dumps(summary, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
