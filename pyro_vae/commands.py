"""The ``pyro-vae`` commands that read trained runs: ``evaluate``, ``compare``, ``sample``,
``export``, ``report``, ``score``, ``recipes``.

Each is a function of the parsed arguments returning the exit status; bad input raises a
:class:`~pyro_vae.errors.PyroVAEError` that :func:`pyro_vae.cli.main` prints.
"""

from pathlib import Path

from .distributed import SINGLE, lock_on_main, on_main
from .errors import ConfigError
from .recipes import list_recipes
from .tables import evaluation_rows, print_table


def _evaluate_run(run, args, reuse=False, test_sets=None):
    """Load a run, its test set, and evaluate it with the command-line options.

    Returns ``(summary, result, state, proposal)``: ``summary`` is ``None`` for a reused
    result; ``proposal`` as in :func:`load_for_evaluation`.
    """
    from .infer import data_fingerprint as tensor_fingerprint
    from .estimate_files import load_result, save_result
    from .runs import evaluate_run, load_for_evaluation

    world = getattr(args, "world", None) or SINGLE
    vae, config, state, test, device, proposal = load_for_evaluation(run, args, test_sets)
    cached = load_result(run, config.eval.k, config.eval.seed) if reuse else None
    if cached is not None and cached.fingerprint == tensor_fingerprint(test):
        return None, cached, state, proposal
    summary, result = evaluate_run(vae, test, config, device, factor_metrics=not reuse,
                                   progress=not args.quiet and world.is_main, world=world)
    if world.is_main:
        save_result(run, result)
    return summary, result, state, proposal


def cmd_evaluate(args):
    """``pyro-vae evaluate RUN --k 5000``: table on stdout, numbers into ``RUN/eval.json``."""
    from .files import remove_temporary_files
    from .lock import RunLock
    from .runfolder import check_run_argument
    from .runs import read_eval_json, update_eval_json

    world = args.world
    on_main(world, lambda: check_run_argument(args.run))
    # eval.json is rewritten: one process at a time, and a damaged one is reported before,
    # not after, the work
    lock = lock_on_main(world, lambda: RunLock(args.run, "pyro-vae evaluate").acquire())
    try:
        on_main(world, lambda: (read_eval_json(args.run), remove_temporary_files(args.run)))
        if getattr(args, "method", "iwae") == "ais":
            from .estimate_commands import evaluate_ais

            if world.distributed:
                raise ConfigError("pyro-vae evaluate --method ais runs in one process; "
                                  "start it without torchrun")
            return evaluate_ais(args)
        summary, _, state, _ = _evaluate_run(args.run, args)
        if not world.is_main:
            return 0
        return _write_evaluation(args.run, summary, state, update_eval_json)
    finally:
        if lock is not None:
            lock.release()


def _write_evaluation(run, summary, state, update_eval_json):
    """Merge an evaluation into ``run/eval.json`` and print its table: the epoch of the
    weights evaluated (``evaluated_epoch``), the epochs trained (``epochs``, from
    ``metrics.jsonl``) and the evaluated epoch's validation ELBO."""
    from .runs import read_metrics, validation_elbos

    metrics = read_metrics(run)
    summary["evaluated_epoch"] = int(state["epoch"])
    if metrics:
        summary["epochs"] = int(metrics[-1]["epoch"])
    summary.update(validation_elbos(metrics, summary["evaluated_epoch"]))
    update_eval_json(run, summary)
    print(f"{run}: {summary['num_test']} test images, weights of epoch "
          f"{summary['evaluated_epoch']}; values in nats per image")
    print_table(["estimate"], [evaluation_rows(summary)])
    print(f"written to {Path(run) / 'eval.json'}")
    return 0


def cmd_compare(args):
    """``pyro-vae compare RUN_A RUN_B --k 1000``: a paired comparison table."""
    from .checkpoint import load_checkpoint
    from .infer import compare
    from .runfolder import check_run_argument

    conditional = []
    for run in (args.run_a, args.run_b):
        check_run_argument(run)
        conditional.append(bool(load_checkpoint(run)["config"]["model"].get("conditional")))
    if conditional[0] != conditional[1]:
        a, b = (args.run_a, args.run_b) if conditional[0] else (args.run_b, args.run_a)
        raise ConfigError(f"{a} is a conditional model, whose estimate is log p(x|y), and {b} "
                          "is not (log p(x)); the two are different quantities and are not "
                          "compared")
    results, proposals, test_sets = [], [], {}
    for run in (args.run_a, args.run_b):
        if args.method == "ais":
            from .estimate_commands import ais_result

            result, _, _, proposal = ais_result(run, args, reuse=True, test_sets=test_sets)
        else:
            _, result, _, proposal = _evaluate_run(run, args, reuse=True, test_sets=test_sets)
        results.append(result)
        proposals.append(proposal)
    try:
        comparison = compare(results[0], results[1], name_a=args.run_a, name_b=args.run_b)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    rows = []
    for r, proposal in zip(results, proposals):
        if args.method == "ais":
            from .estimate_commands import ais_rows

            rows.append(ais_rows(r))
            continue
        rows.append([
            (f"log p(x), k={r.num_particles}", f"{r.mean:.3f} +- {r.se:.3f}"),
            ("ELBO", f"{float(r.elbo.mean()):.3f}"),
            ("bits/dim", f"{r.bits_per_dim:.4f}"),
            ("k-hat > 0.7", "not fitted" if r.khat_above_07 is None else
             f"{100 * r.khat_above_07:.1f}%"),
        ] + ([("proposal", proposal or "the guide q(z|x)")] if any(proposals) else []))
    print_table([args.run_a, args.run_b], rows)
    print(f"paired difference (first - second): {comparison.difference:+.3f} +- "
          f"{comparison.se:.3f} nats over {comparison.num_datapoints} test images")
    print(comparison.verdict)
    return 0


def cmd_sample(args):
    """``pyro-vae sample RUN -n 64 -o FILE.png``."""
    import torch

    from . import plots
    from .distributed import resolve_device
    from .infer import seeded
    from .nets import event_size
    from .runs import load_run

    if args.num_samples < 1:
        raise ConfigError(f"-n must be at least 1, got {args.num_samples}")
    device = resolve_device(args.device)
    vae, _, state = load_run(args.run, device)
    if args.layers and getattr(vae, "num_layers", 1) < 2:
        raise ConfigError(f"--layers needs a hierarchical VAE; {args.run} has one latent layer")
    if args.label is not None:
        if not vae.context_dim or vae.num_classes is None:
            raise ConfigError(f"--label needs a model of labels (model.conditional or "
                              f"model.semi_supervised); {args.run} has none")
        if not 0 <= args.label < vae.num_classes:
            raise ConfigError(f"--label must lie in [0, {vae.num_classes}), got {args.label}")
        if args.layers:
            raise ConfigError("--label and --layers exclude each other")
    kind = "layers" if args.layers else "samples"
    if args.label is not None:
        kind = f"samples-label{args.label}"
    out = Path(args.output) if args.output else \
        Path(args.run) / f"{kind}-{args.num_samples}-seed{args.seed}.png"
    if out.exists() and not args.overwrite:
        raise ConfigError(f"{out} exists; pass --overwrite to replace it or choose another -o")
    if not out.parent.is_dir():
        raise ConfigError(f"folder {out.parent} does not exist; create it or choose another -o")
    image_shape = tuple(state.get("image_shape") or (1, 1, event_size(vae.event_shape)))
    with torch.no_grad(), seeded(args.seed, device):
        if args.layers:
            ax = plots.plot_layer_samples(vae, image_shape,
                                          num_rows=max(1, args.num_samples // 8))[0]
        else:
            y = None if args.label is None else \
                torch.full((args.num_samples,), args.label, dtype=torch.long, device=device)
            images = vae.sample(args.num_samples, y=y)
            ax = plots.plot_images(images, image_shape,
                                   title=f"{args.num_samples} samples (pixel means)" +
                                   ("" if y is None else f", label {args.label}"))
    plots.save_figure(ax, out)
    print(out)
    return 0


def cmd_export(args):
    """``pyro-vae export RUN -o latents.nc``: ArviZ InferenceData of test-image latents."""
    from .batches import prepare_eval_splits
    from .datasets import load_dataset
    from .distributed import resolve_device
    from .export import to_inference_data
    from .files import atomic_write
    from .runs import load_run

    if args.num_samples > args.k:
        raise ConfigError(f"--num-samples ({args.num_samples}) draws are resampled from --k "
                          f"({args.k}) guide draws: give --num-samples at most --k")
    device = resolve_device(args.device)
    vae, config, _ = load_run(args.run, device)
    out = Path(args.output) if args.output else Path(args.run) / "latents.nc"
    if out.exists() and not args.overwrite:
        raise ConfigError(f"{out} exists; pass --overwrite to replace it or choose another -o")
    if not out.parent.is_dir():
        raise ConfigError(f"folder {out.parent} does not exist; create it or choose another -o")
    if getattr(vae, "conditional", False):
        raise ConfigError("export covers models of x alone; a conditional model's latents "
                          "depend on the label as well")
    data = load_dataset(config.data.name, config.data.data_dir, config.data.download)
    test = prepare_eval_splits(data, config.data.binarization)[1][:args.num_images]
    try:
        # the draws are independent; ArviZ's diagnostics want chains: two when they split
        proposal = vae.proposal()  # the guide, or a Gaussian around a point-mass guide
        idata = to_inference_data(vae.model, proposal, test, num_samples=args.num_samples,
                                  num_chains=2 if args.num_samples % 2 == 0 else 1,
                                  num_particles=args.k, seed=args.seed, device=device)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    described = getattr(proposal, "description", None)
    if described:
        idata.estimates.attrs["proposal"] = described
    atomic_write(out, idata.to_netcdf, binary=None)
    est = idata.estimates
    print(f"{out}: {test.shape[0]} test images, {args.num_samples} draws each "
          f"(resampled from k = {args.k}{'; proposal ' + described if described else ''}); "
          f"mean log p(x) bound {float(est.log_likelihood.mean()):.3f} nats, mean ESS "
          f"{float(est.ess.mean()):.1f}")
    return 0


def cmd_report(args):
    """``pyro-vae report RUN [RUN ...] -o OUT``."""
    from .distributed import resolve_device
    from .report import build_report

    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"-o {out} is a file; give a folder for the report")
    existing = [p for p in (out / "report.html", out / "report.md") if p.exists()]
    if (out / "figures").is_dir():
        existing += sorted((out / "figures").iterdir())
    if existing and not args.overwrite:
        names = ", ".join(str(p.relative_to(out)) for p in existing[:6])
        raise ConfigError(f"{out} already holds {names}{' ...' if len(existing) > 6 else ''}; "
                          "a report writes report.html, report.md and figures/ there: pass "
                          "--overwrite to replace its files, or choose another -o")
    html_path, md_path = build_report(args.runs, out, k=args.k, seed=args.seed,
                                      device=resolve_device(args.device))
    print(html_path)
    print(md_path)
    return 0


def cmd_score(args):
    """``pyro-vae score RUN [--data NAME] -o scores.csv``: per-image -log p(x)."""
    import csv

    from .batches import prepare_eval_splits
    from .datasets import load_dataset
    from .distributed import resolve_device
    from .files import atomic_write
    from .infer import log_likelihood
    from .runs import load_run

    out = Path(args.output)
    if out.exists() and not args.overwrite:
        raise ConfigError(f"{out} exists; pass --overwrite to replace it or choose another -o")
    if not out.parent.is_dir():
        raise ConfigError(f"folder {out.parent} does not exist; create it or choose another -o")
    device = resolve_device(args.device)
    vae, config, _ = load_run(args.run, device)
    name = args.data or config.data.name
    data = load_dataset(name, args.data_dir or config.data.data_dir, config.data.download)
    if tuple(data.event_shape) != tuple(vae.event_shape):
        raise ConfigError(f"{name} images have shape {data.event_shape}, the run's model takes "
                          f"{vae.event_shape}")
    test = prepare_eval_splits(data, config.data.binarization)[1]
    if getattr(vae, "conditional", False):  # scores are then -log p(x | y)
        if data.test_labels is None:
            raise ConfigError(f"{name} has no test labels, which the conditional model needs")
        test = (test, data.test_labels)
    proposal = vae.proposal()  # the guide, or a Gaussian around a point-mass guide
    result = log_likelihood(vae.model, proposal, test, num_particles=args.k,
                            batch_size=args.batch_size, particle_batch=args.particle_batch,
                            seed=args.seed, device=device, progress=not args.quiet)
    labels = data.test_labels.tolist() if data.test_labels is not None else \
        [""] * result.num_datapoints
    def write(f):
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["index", "label", "neg_log_likelihood", "neg_elbo", "khat"])
        for i in range(result.num_datapoints):
            writer.writerow([i, labels[i], f"{-float(result.log_likelihood[i]):.6f}",
                             f"{-float(result.elbo[i]):.6f}", f"{float(result.khat[i]):.4f}"])

    atomic_write(out, write, binary=False)
    described = getattr(proposal, "description", None)
    print(f"{out}: {result.num_datapoints} images of {name}; mean -log p(x) {-result.mean:.3f} nats "
          f"(k = {args.k}{'; proposal ' + described if described else ''})")
    return 0


def cmd_pack(args):
    """``pyro-vae pack RUN --out DEST``: a pretrained folder (see :mod:`pyro_vae.pack`)."""
    from .pack import pack_run

    sizes = pack_run(args.run, args.out)
    for name, size in sizes.items():
        print(f"{Path(args.out) / name}  {size / 1e6:.2f} MB")
    return 0


def cmd_recipes(args):
    """``pyro-vae recipes``: list recipe names."""
    for name in list_recipes():
        print(name)
    return 0
