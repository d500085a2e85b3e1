"""The commands of the estimators beyond IWAE: ``pyro-vae evaluate RUN --method ais``,
``pyro-vae bdmc RUN`` and ``pyro-vae gaps RUN``.

AIS (Wu et al. 2017, arXiv:1611.04273) adds ``test_log_likelihood_ais`` and its settings to
``RUN/eval.json`` beside the IWAE numbers and keeps the per-image estimates in
``RUN/ais-<settings>.pt``; BDMC (Grosse et al. 2015, arXiv:1511.02543) and the inference
gaps (Cremer et al. 2018, arXiv:1801.03558) keep one entry per settings in ``RUN/bdmc.json``
and ``RUN/gaps.json``. Each prints a table. All hold the run's lock while they write.
"""

import json
from pathlib import Path

import torch

from .checkpoint import atomic_save
from .errors import ConfigError, RunFolderError
from .files import write_text
from .infer import rows
from .runs import load_for_evaluation
from .tables import fmt, print_table

#: The estimates of ``pyro-vae evaluate --method``.
EVALUATION_METHODS = ("iwae", "ais")


def _ais_kwargs(args, config):
    return dict(num_chains=args.num_chains, num_steps=args.num_steps,
                num_leapfrog=args.num_leapfrog, step_size=args.step_size,
                batch_size=config.eval.batch_size,
                seed=config.eval.seed if args.seed is None else args.seed)


def _first(test, num_test):
    """The first ``num_test`` test points (all when ``num_test`` is 0)."""
    total = (test[0] if isinstance(test, tuple) else test).shape[0]
    if num_test < 0:
        raise ConfigError(f"--num-test must be at least 0 (0: all {total}), got {num_test}")
    return test if num_test in (0, total) else rows(test, 0, min(num_test, total))


def ais_path(run, result):
    """Where the per-image AIS estimates of ``result`` are kept in the run folder."""
    return Path(run) / (f"ais-T{result.num_steps}-C{result.num_chains}-L{result.num_leapfrog}-"
                        f"{result.step_size_rule}-seed{result.seed}-"
                        f"n{result.log_likelihood.shape[0]}.pt")


def ais_result(run, args, reuse=False, test_sets=None):
    """AIS on the first ``args.num_test`` test images of ``run`` with the settings of
    ``args``; saves the per-image estimates in the run folder (:func:`ais_path`). With
    ``reuse``, a saved estimate of the same settings, images and weights (the checkpoint's
    digest) is read instead: with the same seed a new run would repeat it.

    :returns: ``(result, config, state, proposal)``.
    """
    from . import infer
    from .checkpoint import safe_load

    vae, config, state, test, device, proposal = load_for_evaluation(run, args, test_sets)
    test = _first(test, args.num_test)
    kwargs = _ais_kwargs(args, config)
    if reuse:
        for path in sorted(Path(run).glob("ais-*.pt")):
            saved = safe_load(path)
            if saved.get("format") == "pyro_vae.ais" and all(
                    saved.get(key) == value for key, value in (
                        ("num_chains", kwargs["num_chains"]),
                        ("num_steps", kwargs["num_steps"]),
                        ("num_leapfrog", kwargs["num_leapfrog"]), ("seed", kwargs["seed"]),
                        ("step_size_rule", "pilot" if args.step_size is None else "fixed"),
                        ("fingerprint", infer.data_fingerprint(test)),
                        ("weights_digest", state.get("digest")))):
                if args.step_size is None or torch.allclose(
                        saved["step_size"], torch.tensor(float(args.step_size))):
                    for key in ("format", "weights_digest"):
                        saved.pop(key)
                    return infer.AISResult(**saved), config, state, proposal
    vae.eval()
    result = infer.ais_log_likelihood(vae.model, vae.proposal(), test, device=device,
                                      progress=not args.quiet, **kwargs)
    atomic_save({"format": "pyro_vae.ais", "weights_digest": state.get("digest"),
                 **vars(result)}, ais_path(run, result))
    return result, config, state, proposal


def evaluate_ais(args):
    """``pyro-vae evaluate RUN --method ais``: AIS on the first ``--num-test`` test images;
    merges ``test_log_likelihood_ais*`` into ``RUN/eval.json`` (with the IWAE estimate of the
    same images, where the run's saved IWAE estimates cover them) and saves the per-image
    estimates, or reports the saved ones of the same settings, images and weights. The
    caller holds the run's lock."""
    from .estimate_files import load_result
    from .runs import update_eval_json

    result, config, state, proposal = ais_result(args.run, args, reuse=True)
    summary = result.summary()
    iwae = load_result(args.run, config.eval.k, config.eval.seed)
    n = result.num_datapoints
    if iwae is not None and iwae.num_datapoints >= n:
        same = iwae.log_likelihood[:n].double()
        summary["test_log_likelihood_ais_iwae_same_images"] = float(same.mean())
        summary["test_log_likelihood_ais_iwae_k"] = iwae.num_particles
        summary["test_log_likelihood_ais_minus_iwae"] = float(
            (result.log_likelihood.double() - same).mean())
    if proposal:
        summary["test_log_likelihood_ais_proposal"] = proposal
    update_eval_json(args.run, summary)
    rows_ = ais_rows(result)
    if "test_log_likelihood_ais_minus_iwae" in summary:
        rows_.append((f"AIS - IWAE (k={iwae.num_particles}), same images",
                      f"{summary['test_log_likelihood_ais_minus_iwae']:+.3f}"))
    print(f"{args.run}: {n} test images, epoch {int(state['epoch'])}; values in nats per image")
    print_table(["estimate"], [rows_])
    print(f"written to {Path(args.run) / 'eval.json'} (per image: {ais_path(args.run, result)}, "
          f"{result.seconds / 60:.1f} min)")
    return 0


def ais_rows(result):
    """Table rows ``(label, text)`` of an :class:`~pyro_vae.infer.AISResult`."""
    return [("log p(x), AIS", f"{fmt(result.mean)} +- {fmt(result.se)}"),
            ("  Monte Carlo error (chains)", fmt(result.chain_se)),
            ("settings", result.describe()),
            ("mean acceptance", fmt(float(result.acceptance.mean()), 2)
             if result.acceptance.numel() else "no transitions"),
            ("effective chains (mean)", f"{float(result.ess.mean()):.1f} of {result.num_chains}")]


def merge_entry(path, entry, same):
    """Add ``entry`` to the JSON list ``{"entries": [...]}`` at ``path``, replacing the one
    with equal values of the keys ``same`` (written atomically).

    :raises RunFolderError: if the file exists but is not such a list (edited or damaged).
    """
    entries = []
    if path.is_file():
        try:
            entries = json.loads(path.read_text(encoding="utf-8"))["entries"]
            if not isinstance(entries, list):
                raise ValueError("entries is not a list")
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise RunFolderError(f"{path} is damaged ({e}); move it away to write a new "
                                 "one") from None
    entries = [e for e in entries if any(e.get(k) != entry.get(k) for k in same)] + [entry]
    write_text(path, json.dumps({"entries": entries}, indent=2) + "\n")


def run_estimate(args, name, estimate, same):
    """Under the run's lock: load ``args.run`` and its first ``args.num_test`` test images,
    call ``estimate(vae, test, device, config)`` and merge its summary (with the epoch)
    into ``RUN/<name>.json`` (see :func:`merge_entry`, ``same``: the keys of one setting).

    :returns: ``(result, summary)``.
    """
    from .lock import RunLock

    lock = RunLock(args.run, f"pyro-vae {name}").acquire()
    try:
        vae, config, state, test, device, _ = load_for_evaluation(args.run, args)
        vae.eval()
        result = estimate(vae, _first(test, args.num_test), device, config)
        summary = {**result.summary(), "epoch": int(state["epoch"])}
        merge_entry(Path(args.run) / f"{name}.json", summary, same)
    finally:
        lock.release()
    return result, summary


def cmd_bdmc(args):
    """``pyro-vae bdmc RUN``: BDMC bounds on data simulated from the run's model."""
    from . import infer

    result, summary = run_estimate(args, "bdmc", lambda vae, test, device, config: infer.bdmc(
        vae.model, vae.proposal(), test, device=device, progress=not args.quiet,
        **_ais_kwargs(args, config)), ("bdmc_settings", "bdmc_num_simulated"))
    print(f"{args.run}: {summary['bdmc_num_simulated']} images simulated from the model; "
          "values in nats per image")
    print_table(["estimate"], [[
        ("lower bound (forward AIS)", f"{fmt(summary['bdmc_lower'])} +- {fmt(summary['bdmc_lower_se'])}"),
        ("upper bound (reverse AIS)", f"{fmt(summary['bdmc_upper'])} +- {fmt(summary['bdmc_upper_se'])}"),
        ("gap (upper - lower)", f"{fmt(summary['bdmc_width'])} +- {fmt(summary['bdmc_width_se'])}"),
        ("settings", result.describe())]])
    print(f"written to {Path(args.run) / 'bdmc.json'} ({result.seconds / 60:.1f} min)")
    return 0


def cmd_gaps(args):
    """``pyro-vae gaps RUN``: approximation and amortization gaps on test images."""
    from . import infer

    def estimate(vae, test, device, config):
        log_likelihood = args.log_likelihood
        if log_likelihood == "ais":  # the saved estimate of these settings and images, or
            log_likelihood = ais_result(args.run, args, reuse=True)[0]  # a new one, saved
        return infer.inference_gaps(
            vae.model, vae.proposal(), test, log_likelihood=log_likelihood,
            local_steps=args.local_steps, local_lr=args.local_lr, device=device,
            progress=not args.quiet, **_ais_kwargs(args, config))

    result, summary = run_estimate(args, "gaps", estimate, ("method", "settings", "num_test"))
    print(f"{args.run}: {summary['num_test']} test images; values in nats per image")
    print_table(["estimate"], [[
        (label, f"{fmt(summary[key])} +- {fmt(summary[key + '_se'])}") for label, key in (
            ("ELBO (amortized guide)", "elbo"), ("ELBO (local Gaussians)", "local_elbo"),
            (f"log p(x) ({args.log_likelihood.upper()})", "log_likelihood"),
            ("approximation gap", "approximation_gap"), ("amortization gap", "amortization_gap"),
            ("inference gap", "inference_gap"))]])
    if summary["local_family_worse"]:
        print("note: the local diagonal Gaussians fit worse than the amortized guide (a "
              "negative amortization gap): the guide's family is richer (a flow, or latent "
              "layers that depend on one another), so these gaps compare families, not "
              "amortization")
    print(f"written to {Path(args.run) / 'gaps.json'} ({result.seconds / 60:.1f} min)")
    return 0
