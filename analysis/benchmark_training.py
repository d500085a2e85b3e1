"""Training throughput: the project's SVI loop against a plain-PyTorch loop.

Both train the same network (the Pyro VAE example's: MLP 784-400-50 with softplus, a
diagonal-Gaussian encoder, a Bernoulli decoder) with Adam on the same single-sample ELBO
estimator, log p(x|z) + log p(z) - log q(z|x) at one z ~ q(z|x), which is what Pyro's
Trace_ELBO computes from its traces.

Two measurements, both alternating between the two loops in one process so that both see
the same machine state:

The project's trainer uses Adam's fused kernel (see ``pyro_vae.optim.make_optimizer``);
the plain loop is measured twice: as written straightforwardly (default ``torch.optim.Adam``)
and with the same fused Adam, which isolates what Pyro's tracing and distribution objects
cost. Also measured, unless left out: the project's trainer with its networks compiled by
``torch.compile`` (``train.compile = true``; compiled before the timers start), and, when
pythae is installed, pythae's own training epoch on the same network (``BaseTrainer``).

1. steps: blocks of ``--steps`` optimizer steps on the same pre-binarized batches, the
   batches prepared outside the timer, the first block of each loop discarded as warm-up
   (the method of DESIGN.md).
2. epochs: whole epochs over the training set, data path included: the project's
   ``Trainer.train_epoch`` (shuffle + dynamic binarization + batches), against a plain
   loop that indexes each batch out of the dataset tensor and binarizes it.

Usage::

    python analysis/benchmark_training.py                       # Fashion-MNIST, batch 256
    python analysis/benchmark_training.py --data digits --blocks 2 --steps 5 --epochs 1
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyro
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pyro_vae.config import ModelConfig# noqa: E402
from pyro_vae.registries import build_vae# noqa: E402
from pyro_vae.batches import EpochBatches# noqa: E402
from pyro_vae.datasets import load_dataset# noqa: E402
from pyro_vae.infer.objectives import IWAEObjective  # noqa: E402
from pyro_vae.trainer import Trainer, compile_networks  # noqa: E402

LOG_2PI = 1.8378770664093453


class PlainVAE(nn.Module):
    """The same network in plain PyTorch, with the same Monte Carlo ELBO as Trace_ELBO."""

    def __init__(self, x_dim, hidden, z_dim):
        super().__init__()
        self.z_dim = z_dim
        self.encoder = nn.Sequential(nn.Linear(x_dim, hidden), nn.Softplus(),
                                     nn.Linear(hidden, 2 * z_dim))
        self.decoder = nn.Sequential(nn.Linear(z_dim, hidden), nn.Softplus(),
                                     nn.Linear(hidden, x_dim))

    @classmethod
    def from_vae(cls, vae):
        """The same weights as a project VAE built with ``hidden=[h]`` (one hidden layer)."""
        enc, dec = vae.posterior.encoder.net, vae.likelihood.decoder.net
        plain = cls(enc[0].in_features, enc[0].out_features, vae.posterior.latent_dim)
        for mine, theirs in ((plain.encoder, enc), (plain.decoder, dec)):
            mine[0].load_state_dict(theirs[0].state_dict())
            mine[2].load_state_dict(theirs[2].state_dict())
        return plain

    def log_weights(self, x, num_particles=1):
        """``(k, B)`` log p(x, z) - log q(z|x), z ~ q(z|x), vectorized over particles."""
        loc, raw = self.encoder(x).split(self.z_dim, dim=-1)
        scale = F.softplus(raw) + 1e-5
        eps = torch.randn((num_particles, *loc.shape), dtype=loc.dtype, device=loc.device)
        z = loc + scale * eps
        log_q = (-0.5 * eps**2 - scale.log() - 0.5 * LOG_2PI).sum(-1)
        log_p_z = (-0.5 * z**2 - 0.5 * LOG_2PI).sum(-1)
        logits = self.decoder(z)
        log_p_x = -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits),
                                                      reduction="none").sum(-1)
        return log_p_x + log_p_z - log_q

    def loss(self, x):
        """Negative single-sample ELBO summed over the batch, nats."""
        return -self.log_weights(x, 1).sum()


def plain_step(model, optimizer, x):
    optimizer.zero_grad(set_to_none=True)
    loss = model.loss(x)
    loss.backward()
    optimizer.step()
    return loss.item()


def plain_epoch(model, optimizer, train, batch_size, generator):
    """A straightforward plain epoch: index each batch out of the dataset, binarize it."""
    perm = torch.randperm(train.shape[0], generator=generator)
    for start in range(0, train.shape[0], batch_size):
        x = torch.bernoulli(train[perm[start:start + batch_size]], generator=generator)
        plain_step(model, optimizer, x)


def pythae_epoch_runner(train, batch_size, lr, out_dir):
    """pythae's own VAE training epoch (``BaseTrainer.train_step``) on the same network,
    or ``None`` when pythae is not installed. pythae has no dynamic binarization: it is
    given the training set binarized once, so its data path does less work than ours.
    Its loss is the analytic-KL ELBO averaged over the batch."""
    try:
        from pythae.data.datasets import BaseDataset
        from pythae.models import VAE as PythaeVAE
        from pythae.models import VAEConfig
        from pythae.models.base.base_utils import ModelOutput
        from pythae.models.nn import BaseDecoder, BaseEncoder
        from pythae.trainers import BaseTrainer, BaseTrainerConfig
    except ImportError:
        return None
    x_dim = train.shape[1]

    class Encoder(BaseEncoder):
        def __init__(self):
            super().__init__()
            self.hidden = nn.Sequential(nn.Linear(x_dim, 400), nn.Softplus())
            self.mu, self.log_var = nn.Linear(400, 50), nn.Linear(400, 50)

        def forward(self, x):
            h = self.hidden(x.reshape(x.shape[0], -1))
            return ModelOutput(embedding=self.mu(h), log_covariance=self.log_var(h))

    class Decoder(BaseDecoder):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(50, 400), nn.Softplus(), nn.Linear(400, x_dim))

        def forward(self, z):
            return ModelOutput(reconstruction=torch.sigmoid(self.net(z)))

    model = PythaeVAE(VAEConfig(input_dim=(x_dim,), latent_dim=50, reconstruction_loss="bce"),
                      encoder=Encoder(), decoder=Decoder())
    binary = torch.bernoulli(train, generator=torch.Generator().manual_seed(0))
    config = BaseTrainerConfig(output_dir=str(out_dir), per_device_train_batch_size=batch_size,
                               num_epochs=1, learning_rate=lr, no_cuda=True)
    trainer = BaseTrainer(model, BaseDataset(binary, torch.zeros(binary.shape[0])),
                          training_config=config)
    trainer.prepare_training()
    epoch = iter(range(1, 10**9))
    return lambda: trainer.train_step(next(epoch))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--blocks", type=int, default=11, help="blocks per loop (first is warm-up)")
    parser.add_argument("--steps", type=int, default=20, help="steps per block")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per loop (alternating)")
    parser.add_argument("--train-size", type=int, default=None,
                        help="use only the first N training images for the epoch measurement")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--particles", type=int, nargs="*", default=[5],
                        help="k of the IWAE objective whose step cost is compared with one "
                             "particle's (empty: skip)")
    parser.add_argument("--no-compile", action="store_true",
                        help="leave out the project's trainer with torch.compile'd networks")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    data = load_dataset(args.data)
    train = data.train[:args.train_size] if args.train_size else data.train
    x_dim, bs = train.shape[1], args.batch_size
    vae = build_vae(ModelConfig(latent_dim=50, hidden=[400], activation="softplus"), (x_dim,))
    trainer = Trainer(vae, EpochBatches(train, bs, "dynamic", seed=0), lr=1e-3)
    plain = PlainVAE(x_dim, 400, 50)
    plain_opt = torch.optim.Adam(plain.parameters(), lr=1e-3)
    fused = PlainVAE(x_dim, 400, 50)
    fused_opt = torch.optim.Adam(fused.parameters(), lr=1e-3, fused=True)
    loops = {
        "project": trainer.training_step,
        "plain": lambda x: plain_step(plain, plain_opt, x),
        "plain_fused_adam": lambda x: plain_step(fused, fused_opt, x),
    }
    compiled = None
    if not args.no_compile:
        compiled_vae = build_vae(ModelConfig(latent_dim=50, hidden=[400], activation="softplus"),
                                 (x_dim,))
        compile_networks(compiled_vae)
        compiled = Trainer(compiled_vae, EpochBatches(train, bs, "dynamic", seed=0), lr=1e-3)
        loops["project_compiled"] = compiled.training_step

    # 1. steady-state steps on the same prepared batches
    fixed = [torch.bernoulli(train[(i * bs) % (train.shape[0] - bs):][:bs])
             for i in range(args.steps)]
    times = {name: [] for name in loops}
    for block in range(args.blocks):
        for name, step in loops.items():
            start = time.perf_counter()
            for x in fixed:
                step(x)
            if block > 0:
                times[name].append(time.perf_counter() - start)
    steps = {k: args.steps * bs / statistics.median(v) for k, v in times.items()} \
        if args.blocks > 1 else None

    # 1b. vectorized k-particle objectives: cost of a step relative to one particle
    particle_costs = {}
    if args.blocks > 1 and args.particles:
        step_seconds = {}
        for k in [1, *args.particles]:
            vae_k = build_vae(ModelConfig(latent_dim=50, hidden=[400], activation="softplus"),
                              (x_dim,))
            trainer_k = Trainer(vae_k, EpochBatches(train, bs, "dynamic", seed=0), lr=1e-3,
                                loss=IWAEObjective(k) if k > 1 else None)
            block_times = []
            for block in range(args.blocks):
                start = time.perf_counter()
                for x in fixed:
                    trainer_k.training_step(x)
                if block > 0:
                    block_times.append(time.perf_counter() - start)
            step_seconds[k] = statistics.median(block_times) / args.steps
        particle_costs = {k: step_seconds[k] / step_seconds[1] for k in args.particles}

    # 2. whole epochs, data path included
    generator = torch.Generator().manual_seed(0)
    epoch_loops = {
        "project": trainer.train_epoch,
        "plain": lambda: plain_epoch(plain, plain_opt, train, bs, generator),
        "plain_fused_adam": lambda: plain_epoch(fused, fused_opt, train, bs, generator),
    }
    if compiled is not None:
        for x in compiled.batches.epoch():  # the last, smaller batch compiles once too
            pass
        compiled.training_step(x)
        epoch_loops["project_compiled"] = compiled.train_epoch
    with tempfile.TemporaryDirectory() as out_dir:
        pythae_epoch = pythae_epoch_runner(train, bs, 1e-3, out_dir)
        if pythae_epoch is not None:
            pythae_epoch()  # warm-up
            epoch_loops["pythae"] = pythae_epoch
        epoch_times = {name: [] for name in epoch_loops}
        for _ in range(args.epochs):
            for name, run_epoch in epoch_loops.items():
                start = time.perf_counter()
                run_epoch()
                epoch_times[name].append(time.perf_counter() - start)
    epochs = {k: train.shape[0] / statistics.median(v) for k, v in epoch_times.items()}

    results = {"data": args.data, "batch_size": bs, "threads": torch.get_num_threads(),
               "torch": torch.__version__, "pyro": pyro.__version__}
    print(f"data {args.data}, batch {bs}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, pyro {pyro.__version__}")
    for label, measured, how in (("steps", steps, f"median of {args.blocks - 1} blocks of "
                                                   f"{args.steps} steps"),
                                 ("epochs", epochs, f"median of {args.epochs}, data path included")):
        if not measured:
            continue
        ratios = {}
        for mine in ("project", "project_compiled"):
            for other in ("plain", "plain_fused_adam", "pythae"):
                if mine in measured and other in measured:
                    ratios[f"{mine}_vs_{other}"] = measured[mine] / measured[other]
        results[label] = {"images_per_second": measured, "ratios": ratios}
        print(f"{label} ({how}), images/s:")
        for name, value in measured.items():
            print(f"  {name:<18} {value:>10,.0f}")
        for name, value in ratios.items():
            print(f"  ratio {name:<36} {value:.3f}")
    if particle_costs:
        results["iwae_step_cost_vs_one_particle"] = particle_costs
        for k, cost in particle_costs.items():
            print(f"IWAE objective with k = {k}: a step costs {cost:.2f} x a one-particle step "
                  f"(at most {k} x expected)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
