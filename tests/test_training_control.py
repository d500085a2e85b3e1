"""Objectives, KL warm-up, free bits, schedules, early stopping, interruption and faults."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import pyro
import pytest
import torch
from pyro.infer import RenyiELBO, Trace_ELBO

from pyro_vae import cli
from pyro_vae import config, recipes
from pyro_vae.checkpoint import load_checkpoint
from pyro_vae.config import ModelConfig
from pyro_vae.registries import build_vae
from pyro_vae.errors import ConfigError, TrainingDiverged
from pyro_vae.infer import log_weights
from pyro_vae.infer.objectives import ELBO, FreeBitsELBO, IWAEObjective
from pyro_vae.infer.registry import make_objective
from pyro_vae.runfolder import prepare_run_folder
from pyro_vae.runs import load_run
from pyro_vae.run import Run


def tiny_config(**train):
    return recipes.apply_overrides(config.Config(), {"model.hidden": [16], "model.latent_dim": 4,
                                          "train.batch_size": 200, "train.epochs": 2,
                                          **{f"train.{k}": v for k, v in train.items()}})


def small_vae():
    torch.manual_seed(0)
    return build_vae(ModelConfig(latent_dim=4, hidden=[16]), (10,))


X = torch.bernoulli(torch.full((6, 10), 0.5), generator=torch.Generator().manual_seed(0))


# ---------------------------------------------------------------------------------------
# Objectives


def test_iwae_objective_is_the_per_datapoint_bound():
    vae = small_vae()
    for k in (1, 7):
        pyro.set_rng_seed(3)
        ours = IWAEObjective(k).differentiable_loss(vae.model, vae.guide, X)
        pyro.set_rng_seed(3)
        lw = log_weights(vae.model, vae.guide, X, k, max_plate_nesting=1)
        expected = -(torch.logsumexp(lw, 0) - math.log(k)).sum()
        pyro.set_rng_seed(3)
        renyi = RenyiELBO(alpha=0, num_particles=k, vectorize_particles=True,
                          max_plate_nesting=1).loss(vae.model, vae.guide, X)
        assert torch.allclose(ours, expected)
        assert ours.item() == pytest.approx(renyi, rel=1e-6)
    pyro.set_rng_seed(3)
    one = IWAEObjective(1).differentiable_loss(vae.model, vae.guide, X)
    pyro.set_rng_seed(3)
    elbo = Trace_ELBO().differentiable_loss(vae.model, vae.guide, X)
    assert torch.allclose(one, elbo, atol=1e-4)


def test_kl_weight_scales_only_the_latent_terms():
    vae = small_vae()
    lw_parts = {}
    for w in (1.0, 0.0, 0.3):
        pyro.set_rng_seed(5)
        lw_parts[w] = ELBO().differentiable_loss(vae.model, vae.guide, X, kl_weight=w)
    # the loss is -(log_lik - w * KL): linear in w
    kl = lw_parts[1.0] - lw_parts[0.0]
    assert torch.allclose(lw_parts[0.3], lw_parts[0.0] + 0.3 * kl, atol=1e-3)
    for w in (1.0, 0.0, 0.3):  # IWAE weights scale the same way (k = 1: the same number)
        pyro.set_rng_seed(5)
        iwae = IWAEObjective(1).differentiable_loss(vae.model, vae.guide, X, kl_weight=w)
        assert torch.allclose(iwae, lw_parts[w], atol=1e-3)


def test_free_bits_floor_each_dimension_in_the_loss():
    """With the guide equal to the prior, every dimension's KL is about 0: the loss counts
    lambda per dimension, and the KL term gives the guide no gradient."""
    vae = small_vae()
    with torch.no_grad():  # q(z|x) = N(0, 1): zero weights, scale bias softplus^-1(1)
        head = vae.posterior.encoder.output_layer
        head.weight.zero_()
        head.bias[:4] = 0.0
        head.bias[4:] = math.log(math.e - 1)
    fb = FreeBitsELBO(free_bits=0.5)
    pyro.set_rng_seed(1)
    log_lik, kls = fb.kl_terms(vae.model, vae.guide, X)
    assert len(kls) == 4
    assert all(abs(float(torch.as_tensor(kl).detach())) < 1e-3 and floor == 0.5 for kl, floor in kls)
    pyro.set_rng_seed(1)
    loss = fb.differentiable_loss(vae.model, vae.guide, X)
    assert float(loss.detach()) == pytest.approx(float((-log_lik + X.shape[0] * 0.5 * 4).detach()), rel=1e-6)
    # only the reconstruction term reaches the guide; a plain ELBO's KL term would add more
    vae.zero_grad()
    loss.backward()
    g_free = head.bias.grad[4:].clone()
    vae.zero_grad()
    pyro.set_rng_seed(1)
    (-fb.kl_terms(vae.model, vae.guide, X)[0]).backward()
    assert torch.allclose(head.bias.grad[4:], g_free)
    # above the floor, a dimension's KL counts as it is
    with torch.no_grad():
        head.bias[0] = 3.0
    pyro.set_rng_seed(1)
    _, kls = fb.kl_terms(vae.model, vae.guide, X)
    assert float(kls[0][0].detach()) > 0.5 and all(float(kl.detach()) < 0.5 for kl, _ in kls[1:])


@pytest.mark.slow
@pytest.mark.parametrize("objective,extra", [("elbo", {}), ("mean_field", {}),
                                             ("iwae_dreg", {"num_particles": 4}),
                                             ("iwae", {"num_particles": 4}),
                                             ("free_bits", {"free_bits": 0.1})])
def test_each_objective_improves_the_elbo_on_digits(objective, extra, tmp_path):
    run = Run(tiny_config(epochs=3, objective=objective, **extra), prepare_run_folder(tmp_path / "r"),
              device="cpu", quiet=True)
    before = run.validation_elbo()
    records = run.fit()
    assert records[-1]["validation_elbo"] > before + 5


def test_bad_objective_settings_are_refused():
    with pytest.raises(ConfigError, match="unknown train.objective 'renyi'"):
        tiny_config(objective="renyi")
    with pytest.raises(ConfigError, match="free_bits"):
        tiny_config(free_bits=0.5)
    with pytest.raises(ConfigError, match="free_bits"):
        tiny_config(objective="free_bits")
    with pytest.raises(ConfigError, match="lr_schedule"):
        tiny_config(lr_schedule="warm")
    with pytest.raises(ValueError, match="unknown objective"):
        make_objective("nope")


# ---------------------------------------------------------------------------------------
# Warm-up, schedules, clipping


def test_warmup_is_monotone_and_restored_on_resume(tmp_path):
    cfg = tiny_config(epochs=3, warmup_epochs=2, beta=0.8)
    straight = Run(cfg, prepare_run_folder(tmp_path / "a"), "cpu", quiet=True)
    t = straight.trainer
    weights = [t.kl_weight(s) for s in range(3 * 6)]
    assert weights[0] == pytest.approx(0.8 / 12)
    assert all(a < b for a, b in zip(weights[:12], weights[1:12]))
    assert weights[11:] == [0.8] * 7
    records = straight.fit()
    assert [r["kl_weight"] for r in records] == pytest.approx([0.4, 0.8, 0.8])
    # interrupted after one epoch and resumed: the same warm-up, bit-identical weights
    b = Run(cfg, prepare_run_folder(tmp_path / "b"), "cpu", quiet=True)
    b.fit(epochs=1)
    resumed = Run(load_run(tmp_path / "b", "cpu")[1], tmp_path / "b", "cpu", quiet=True)
    resumed.resume()
    assert resumed.trainer.kl_weight() == pytest.approx(weights[6])
    resumed.fit()
    sa, sb = load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "b")
    assert all(torch.equal(sa["model"][k], sb["model"][k]) for k in sa["model"])


def test_learning_rate_schedules(tmp_path):
    run = Run(tiny_config(epochs=4, lr_schedule="cosine"), prepare_run_folder(tmp_path / "c"),
              "cpu", quiet=True)
    lrs = [run.trainer.learning_rate(s) for s in range(24)]
    assert lrs[0] == pytest.approx(1e-3) and all(a > b for a, b in zip(lrs, lrs[1:]))
    assert run.trainer.learning_rate(24) == pytest.approx(0.0, abs=1e-12)
    run = Run(tiny_config(epochs=4, lr_schedule="exponential", lr_decay=0.5),
              prepare_run_folder(tmp_path / "e"), "cpu", quiet=True)
    records = run.fit(epochs=2)
    assert [r["lr"] for r in records] == pytest.approx([1e-3, 5e-4])
    assert run.trainer.optimizer.param_groups[0]["lr"] == pytest.approx(5e-4)


def test_gradient_clipping_bounds_the_update(tmp_path):
    run = Run(tiny_config(epochs=1, clip_norm=1e-3), prepare_run_folder(tmp_path / "r"), "cpu",
              quiet=True)
    seen = []
    original = torch.nn.utils.clip_grad_norm_

    def spy(params, max_norm):
        norm = original(params, max_norm)
        seen.append(torch.nn.utils.get_total_norm([p.grad for p in params]).item())
        return norm

    torch.nn.utils.clip_grad_norm_ = spy
    try:
        run.fit()
    finally:
        torch.nn.utils.clip_grad_norm_ = original
    assert len(seen) == 6 and max(seen) <= 1e-3 * (1 + 1e-4)


# ---------------------------------------------------------------------------------------
# Early stopping and the wall-time limit


def test_early_stopping_keeps_and_evaluates_the_best_epoch(tmp_path, monkeypatch):
    out = prepare_run_folder(tmp_path / "r")
    run = Run(tiny_config(epochs=10, patience=2), out, "cpu", quiet=True)
    scores = iter([-50.0, -40.0, -45.0, -41.0, -30.0])
    monkeypatch.setattr(run, "validation_terms", lambda: {"elbo": next(scores)})
    snapshots = {}
    original_save = run.save

    def save(best=False):
        original_save(best)
        snapshots[run.trainer.epoch] = {k: v.clone() for k, v in run.vae.state_dict().items()}

    monkeypatch.setattr(run, "save", save)
    records = run.fit()
    assert [r["epoch"] for r in records] == [1, 2, 3, 4]  # epochs 3 and 4 not better: stop
    assert run.stop_reason == "early_stopping"
    best = load_checkpoint(out / "best.pt")
    assert best["epoch"] == 2
    assert all(torch.equal(best["model"][k], snapshots[2][k]) for k in best["model"])
    summary = run.finish()
    assert summary["evaluated_epoch"] == 2 and summary["stopped"] == "early_stopping"
    # the validation ELBO recorded beside the test estimate is the evaluated weights'
    assert (summary["validation_elbo"], summary["final_validation_elbo"]) == (-40.0, -41.0)
    assert all(torch.equal(run.vae.state_dict()[k], snapshots[2][k]) for k in snapshots[2])


def test_max_minutes_stops_between_epochs(tmp_path, monkeypatch):
    run = Run(tiny_config(epochs=50, max_minutes=1e-9), prepare_run_folder(tmp_path / "r"), "cpu",
              quiet=True)
    records = run.fit()
    assert len(records) == 1 and run.stop_reason == "max_minutes"
    assert load_checkpoint(tmp_path / "r")["epoch"] == 1


# ---------------------------------------------------------------------------------------
# Interruption and faults


@pytest.mark.slow
def test_stop_inside_an_epoch_then_resume_is_bit_identical(tmp_path):
    cfg = tiny_config(epochs=2)
    straight = Run(cfg, prepare_run_folder(tmp_path / "a"), "cpu", quiet=True)
    straight.fit()
    run = Run(cfg, prepare_run_folder(tmp_path / "b"), "cpu", quiet=True)
    original = run.trainer.training_step

    def step_then_stop(x):
        value = original(x)
        if run.trainer.step == 8:  # inside epoch 2 (6 steps per epoch)
            run.trainer.stop_requested = True
        return value

    run.trainer.training_step = step_then_stop
    run.fit()
    assert run.stop_reason == "interrupted"
    state = load_checkpoint(tmp_path / "b")
    assert (state["epoch"], state["step"], state["batch_in_epoch"]) == (1, 8, 2)
    resumed = Run(load_run(tmp_path / "b", "cpu")[1], tmp_path / "b", "cpu", quiet=True)
    resumed.resume()
    resumed.fit()
    a, b = load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "b")
    assert a["step"] == b["step"] == 12
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    ma = (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
    mb = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    strip = lambda line: {k: v for k, v in json.loads(line).items()  # noqa: E731
                          if k not in ("seconds", "images_per_second")}
    assert [strip(x) for x in ma] == [strip(x) for x in mb]


def test_nan_gradient_stops_with_the_cause(tmp_path):
    out = prepare_run_folder(tmp_path / "r")
    run = Run(tiny_config(epochs=3), out, "cpu", quiet=True)
    run.fit(epochs=1)
    weight = run.vae.likelihood.decoder.output_layer.weight
    weight.register_hook(lambda g: g * float("nan"))
    before = {k: v.clone() for k, v in run.vae.state_dict().items()}
    with pytest.raises(TrainingDiverged, match=r"gradient became non-finite \(NaN or inf\) at "
                                               r"epoch 2, step 7 \(in likelihood.decoder"):
        run.fit()
    assert all(torch.equal(before[k], v) for k, v in run.vae.state_dict().items())
    assert load_checkpoint(out)["epoch"] == 1


@pytest.mark.slow
def test_sigint_saves_a_checkpoint_and_resume_finishes(tmp_path):
    """A real SIGINT to a training process: exit code 130, a resumable checkpoint."""
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "pyro_vae", "train", "--epochs", "500",
                             "--quiet", "--device", "cpu", "--out", str(out), "--set",
                             "model.hidden=[16]", "--set", "model.latent_dim=4",
                             "--set", "eval.k=5"],
                            stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 120
    while not (out / "checkpoint.pt").exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "--resume" in err
    state = load_checkpoint(out)
    assert 0 < state["step"] < 500 * 12
    assert cli.main(["train", "--resume", str(out), "--epochs", str(state["epoch"] + 1),
                     "--quiet", "--device", "cpu"]) == 0
    assert load_checkpoint(out)["epoch"] == state["epoch"] + 1
    assert (out / "eval.json").exists()


@pytest.mark.slow
def test_kill_during_checkpoint_write_keeps_the_previous_one(tmp_path):
    """SIGKILL while a large checkpoint is being written: the old file stays readable."""
    from pyro_vae.checkpoint import save_checkpoint

    path = tmp_path / "checkpoint.pt"
    small = {"model": {"w": torch.zeros(3)}, "optimizer": {}, "config": {}, "event_shape": [3],
             "epoch": 1, "step": 1, "rng": {}}
    save_checkpoint(small, path)
    before = path.read_bytes()
    code = ("import sys, torch; from pyro_vae.checkpoint import save_checkpoint\n"
            "state = {'model': {'w': torch.randn(100_000_000)}, 'optimizer': {}, 'config': {},"
            " 'event_shape': [3], 'epoch': 2, 'step': 2, 'rng': {}}\n"
            "print('writing', flush=True)\n"
            f"save_checkpoint(state, {str(path)!r})\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    deadline = time.time() + 60
    while len(os.listdir(tmp_path)) < 2 and time.time() < deadline:  # the temporary file
        time.sleep(0.005)
    proc.kill()
    assert proc.wait() == -signal.SIGKILL  # killed mid-write, not finished
    assert path.read_bytes() == before
    assert load_checkpoint(path)["epoch"] == 1


def test_evaluate_uses_the_best_epoch_of_an_early_stopped_run(tmp_path, monkeypatch):
    out = prepare_run_folder(tmp_path / "r")
    run = Run(tiny_config(epochs=3, patience=5), out, "cpu", quiet=True)
    scores = iter([-40.0, -50.0, -60.0])
    monkeypatch.setattr(run, "validation_terms", lambda: {"elbo": next(scores)})
    run.fit()
    best, last = load_checkpoint(out / "best.pt"), load_checkpoint(out)
    assert (best["epoch"], last["epoch"]) == (1, 3)
    for weights, expected in (("auto", best), ("best", best), ("last", last)):
        vae, _, state = load_run(out, "cpu", weights=weights)
        assert state["epoch"] == expected["epoch"]
        assert all(torch.equal(vae.state_dict()[k], expected["model"][k]) for k in expected["model"])
    # pyro-vae evaluate records which weights it evaluated, and keeps the epochs trained
    assert cli.main(["evaluate", str(out), "--k", "2", "--quiet"]) == 0
    recorded = json.loads((out / "eval.json").read_text())
    assert (recorded["evaluated_epoch"], recorded["epochs"]) == (1, 3)
    assert (recorded["validation_elbo"], recorded["final_validation_elbo"]) == (-40.0, -60.0)


def test_trainer_skips_the_param_store_and_svi_still_uses_it():
    from pyro_vae.batches import EpochBatches
    from pyro_vae.trainer import Trainer

    pyro.clear_param_store()
    vae = small_vae()
    trainer = Trainer(vae, EpochBatches(X, 3, "none", seed=0))
    before = [p.detach().clone() for p in vae.parameters()]
    trainer.training_step(X)
    assert len(pyro.get_param_store()) == 0
    assert any(not torch.equal(a, b) for a, b in zip(before, vae.parameters()))
    svi = pyro.infer.SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO())
    svi.step(X)
    assert len(pyro.get_param_store()) == len(list(vae.parameters()))


@pytest.mark.slow
@pytest.mark.skipif(not __import__("shutil").which("g++"), reason="torch.compile needs a C++ compiler")
def test_compiled_networks_train_like_eager_ones(tmp_path):
    from pyro_vae.trainer import compile_networks

    eager_vae, compiled_vae = small_vae(), small_vae()
    assert compile_networks(compiled_vae) == 2  # the encoder and the decoder
    for vae in (eager_vae, compiled_vae):
        pyro.set_rng_seed(0)
        loss = Trace_ELBO().differentiable_loss(vae.model, vae.guide, X)
        loss.backward()
        vae.loss = float(loss.detach())
    assert compiled_vae.loss == pytest.approx(eager_vae.loss, rel=1e-5)
    for a, b in zip(eager_vae.parameters(), compiled_vae.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-5)
    # names and checkpoints are unchanged
    assert set(compiled_vae.state_dict()) == set(eager_vae.state_dict())
    run = Run(tiny_config(epochs=1, compile=True), prepare_run_folder(tmp_path / "r"), "cpu",
              quiet=True)
    run.fit()
    assert run.finish()["test_log_likelihood"] < 0


def test_dreg_gradient_is_the_weights_squared_for_the_guide():
    from pyro_vae.infer.objectives import DReGIWAEObjective

    vae, k = small_vae(), 6
    pyro.set_rng_seed(4)
    loss = DReGIWAEObjective(k).differentiable_loss(vae.model, vae.guide, X)
    pyro.set_rng_seed(4)
    iwae = IWAEObjective(k).differentiable_loss(vae.model, vae.guide, X)
    assert torch.allclose(loss, iwae, atol=1e-4)  # the same bound
    guide_params = list(vae.posterior.parameters())
    model_params = list(vae.likelihood.parameters())
    g_dreg = torch.autograd.grad(loss, guide_params + model_params)
    # by hand: log w with the guide's density at stopped parameters, weights squared for
    # the guide (through z), plain weights for the model
    pyro.set_rng_seed(4)
    from pyro_vae.infer import particle_traces
    mt, gt, _ = particle_traces(vae.model, vae.guide, X, k, 1)
    q = gt.nodes["z"]["fn"].base_dist
    z = gt.nodes["z"]["value"]
    log_q = torch.distributions.Normal(q.loc.detach(), q.scale.detach()).log_prob(z).sum(-1)
    log_p = mt.nodes["x"]["fn"].log_prob(X) + mt.nodes["z"]["fn"].log_prob(z)
    log_w = log_p - log_q
    w = torch.softmax(log_w.detach(), 0)
    g_guide = torch.autograd.grad(-(w ** 2 * log_w).sum(), guide_params, retain_graph=True)
    g_model = torch.autograd.grad(-(w * log_w).sum(), model_params)
    for a, b in zip(g_dreg, list(g_guide) + list(g_model)):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="diagonal Gaussian"):
        flow = build_vae(ModelConfig(latent_dim=4, hidden=[16], guide="iaf"), (10,))
        DReGIWAEObjective(2).differentiable_loss(flow.model, flow.guide, X)


@pytest.mark.parametrize("objective,extra", [("iwae", {"num_particles": 3}),
                                             ("free_bits", {"free_bits": 0.05}),
                                             ("mean_field", {})])
def test_objectives_train_a_ladder_hierarchy(objective, extra, tmp_path):
    cfg = recipes.apply_overrides(tiny_config(epochs=2, objective=objective, **extra),
                            {"model.latent_dim": [6, 3], "model.inference": "ladder"})
    run = Run(cfg, prepare_run_folder(tmp_path / "r"), "cpu", quiet=True)
    before = run.validation_elbo()
    assert run.fit()[-1]["validation_elbo"] > before


def test_mean_field_with_bottom_up_hierarchy_is_refused():
    with pytest.raises(ConfigError, match="wrong when the guide samples z1 before z2"):
        recipes.apply_overrides(tiny_config(objective="mean_field"), {"model.latent_dim": [6, 3]})


@pytest.mark.slow
def test_sigkill_at_a_random_point_then_resume_is_bit_identical(tmp_path):
    """Killed with SIGKILL mid-run (mid-epoch, maybe mid-write), resumed with --resume:
    the same weights and metrics as a run that was never interrupted."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    args = ["--epochs", "40", "--quiet", "--device", "cpu", "--set", "model.hidden=[16]",
            "--set", "model.latent_dim=4", "--set", "train.batch_size=200", "--set", "eval.k=5"]
    train = [sys.executable, "-m", "pyro_vae", "train"]
    subprocess.run(train + ["--out", str(tmp_path / "straight")] + args, env=env, check=True,
                   capture_output=True)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(train + ["--out", str(killed)] + args, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (killed / "checkpoint.pt").exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.4)
    proc.kill()
    assert proc.wait() == -signal.SIGKILL
    assert load_checkpoint(killed)["epoch"] < 40
    subprocess.run(train + ["--resume", str(killed), "--quiet", "--device", "cpu"], env=env,
                   check=True, capture_output=True)
    a, b = load_checkpoint(tmp_path / "straight"), load_checkpoint(killed)
    assert a["step"] == b["step"] == 40 * 6
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    strip = lambda line: {k: v for k, v in json.loads(line).items()  # noqa: E731
                          if k not in ("seconds", "images_per_second")}
    ma = (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()
    mb = (killed / "metrics.jsonl").read_text().splitlines()
    assert [strip(x) for x in ma] == [strip(x) for x in mb]


def test_metrics_record_reconstruction_and_kl_per_layer(tmp_path):
    cfg = recipes.apply_overrides(tiny_config(epochs=1), {"model.latent_dim": [6, 3]})
    run = Run(cfg, prepare_run_folder(tmp_path / "r"), "cpu", quiet=True)
    record = run.fit()[0]
    kl = record["validation_kl/z1"] + record["validation_kl/z2"]
    assert record["validation_elbo"] == pytest.approx(record["validation_reconstruction"] - kl)
    assert record["validation_kl/z1"] > 0 and record["validation_reconstruction"] < 0


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_the_gradient_check_finds_one_bad_entry_and_passes_huge_finite_ones(bad):
    from pyro_vae.batches import EpochBatches
    from pyro_vae.trainer import Trainer

    vae = build_vae(ModelConfig(latent_dim=2, hidden=[4]), (6,))
    trainer = Trainer(vae, EpochBatches(torch.rand(4, 6), 2, "none", seed=0))
    for p in trainer.parameters:
        p.grad = torch.full_like(p, 3e38)  # finite, and their float32 sum would overflow
    assert not trainer._non_finite_gradient()
    trainer.parameters[-1].grad.view(-1)[0] = bad
    assert trainer._non_finite_gradient()
