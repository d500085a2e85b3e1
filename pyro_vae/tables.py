"""Plain-text tables of evaluation results, shared by the command line and the reports.
"""



def fmt(value, digits=3):
    """``value`` with ``digits`` decimals, or ``-`` for ``None``.

    >>> fmt(-235.97434), fmt(0.43423, 4), fmt(None)
    ('-235.974', '0.4342', '-')
    """
    return "-" if value is None else f"{value:.{digits}f}"


def evaluation_rows(summary):
    """Rows ``(label, text)`` describing one evaluation summary (see ``eval.json``)."""
    rows = [(f"log p(x), IWAE k={summary['k']}",
             f"{fmt(summary['test_log_likelihood'])} +- {fmt(summary['test_log_likelihood_se'])}")]
    # "ladder"/"ladder_se": the k-sweep's keys in eval.json files written before its rename
    sweep = summary.get("k_sweep", summary.get("ladder", {}))
    sweep_se = summary.get("k_sweep_se", summary.get("ladder_se", {}))
    for k, value in sweep.items():
        if int(k) != summary["k"]:
            rows.append((f"  bound at k={k}", f"{fmt(value)} +- {fmt(sweep_se.get(k))}"))
    rows += [
        ("ELBO", f"{fmt(summary['test_elbo'])} +- {fmt(summary['test_elbo_se'])}"),
        ("bits/dim", fmt(summary["bits_per_dim"], 4)),
        ("k-hat > 0.7", _khat_text(summary)),
        ("ESS mean / min", f"{summary['ess_mean']:.1f} / {summary['ess_min']:.1f} of {summary['k']}"),
    ]
    if summary.get("proposal"):  # a point-mass guide, evaluated with a Gaussian around it
        rows.append(("proposal", summary["proposal"]))
    if (summary.get("khat_above_0.7") or 0) > 0.5:
        rows.append(("note", "a loose lower bound: k-hat > 0.7 on most images, log p(x) is "
                             "likely well above it (try --method ais)"))
    for site, n in summary.get("active_units", {}).items():
        rows.append((f"active units {site}", f"{n} of {summary['latent_dims'][site]}"))
    for site, kl in summary.get("kl", {}).items():
        rows.append((f"KL(q||p) {site}", f"{fmt(kl)}"))
    if "mig" in summary:  # data with known factors
        rows.append(("MIG", fmt(summary["mig"])))
        rows.append(("DCI disentanglement / completeness / informativeness",
                     " / ".join(fmt(summary["dci"][key]) for key in
                                ("disentanglement", "completeness", "informativeness"))))
    return rows


def _khat_text(summary):
    if summary.get("khat_above_0.7") is None:
        note = summary.get("khat_note") or "k < 25"
        return f"not fitted ({note.removeprefix('k-hat not fitted').strip(' :')})"
    return (f"{100 * summary['khat_above_0.7']:.1f}% of points (median k-hat "
            f"{fmt(summary.get('khat_median'), 2)})")


def print_table(header, columns):
    """Print rows ``label | col1 | col2 ...`` aligned; ``columns`` is a list of row lists.

    :param header: one title per column.
    :param columns: per column, its rows ``(label, text)``; the labels of the first column
        name the rows.

    >>> print_table(["run a", "run b"], [[("ELBO", "-239.192"), ("bits/dim", "0.4342")],
    ...                                  [("ELBO", "-238.596"), ("bits/dim", "0.4341")]])
                 run a     run b
    ELBO      -239.192  -238.596
    bits/dim    0.4342    0.4341
    """
    labels = [label for label, _ in columns[0]]
    cells = [[text for _, text in col] for col in columns]
    width0 = max(len(x) for x in labels + [""])
    widths = [max(len(x) for x in col + [h]) for col, h in zip(cells, header)]
    print("  ".join([" " * width0] + [h.rjust(w) for h, w in zip(header, widths)]))
    for i, label in enumerate(labels):
        print("  ".join([label.ljust(width0)] + [col[i].rjust(w) for col, w in zip(cells, widths)]))


def print_summary(summary):
    """Print the end-of-training summary of ``pyro-vae train`` (a dict as in ``eval.json``)."""
    print(f"run folder:      {summary['run']}")
    print(f"epochs:          {summary['epochs']} ({summary['steps']} steps)")
    reasons = {"early_stopping": "early stopping (no better validation ELBO for "
                                 "train.patience epochs)",
               "max_minutes": "the wall-time limit train.max_minutes"}
    if summary.get("stopped") in reasons:
        print(f"stopped by:      {reasons[summary['stopped']]}")
    if summary.get("evaluated_epoch") not in (None, summary["epochs"]):
        print(f"evaluated:       the best validation epoch, {summary['evaluated_epoch']} (best.pt)")
    if "validation_elbo" in summary:
        epoch = summary.get("evaluated_epoch") or summary["epochs"]
        print(f"validation ELBO: {summary['validation_elbo']:.3f} nats (epoch {epoch})")
    if "test_accuracy" in summary:
        print(f"classifier:      {100 * summary['test_accuracy']:.2f}% test accuracy of q(y|x) "
              f"({summary['num_labelled']} labelled training images)")
    print(f"test set:        {summary['num_test']} images; all values in nats per image")
    print_table(["test"], [evaluation_rows(summary)])
