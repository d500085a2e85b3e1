"""Does a conditional (or M2) model draw the class it is asked for?

Draws ``--per-class`` images for every label from a trained run (z ~ p(z|y), the
likelihood's pixel means), classifies them with a scikit-learn logistic regression fitted
on ``--train-images`` training images of the run's data (grey levels), and reports the
fraction recognised as the label asked for, per class and overall. Draws a grid with one
row per label.

Usage::

    python analysis/conditional_samples.py runs/cvae --figure analysis/figures/cvae.png
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

from pyro_vae import plots  # noqa: E402
from pyro_vae.datasets import load_dataset# noqa: E402
from pyro_vae.infer import seeded  # noqa: E402
from pyro_vae.runs import load_run  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run")
    p.add_argument("--per-class", type=int, default=100)
    p.add_argument("--train-images", type=int, default=10000)
    p.add_argument("--columns", type=int, default=12, help="images per row of the figure")
    p.add_argument("--figure", help="PNG (default RUN/samples-by-label.png)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    vae, config, state = load_run(args.run, device="cpu")
    if not vae.context_dim or vae.num_classes is None:
        raise SystemExit(f"{args.run} is not a model of labels")
    data = load_dataset(config.data.name, config.data.data_dir)
    n = min(args.train_images, data.train.shape[0])
    classifier = LogisticRegression(max_iter=1000).fit(data.train[:n].numpy(),
                                                       data.train_labels[:n].numpy())
    k = vae.num_classes
    with torch.no_grad(), seeded(args.seed):
        images = {c: vae.sample(args.per_class, y=torch.full((args.per_class,), c))
                  for c in range(k)}
    per_class = {c: float((classifier.predict(images[c].numpy()) == c).mean()) for c in range(k)}
    overall = sum(per_class.values()) / k
    image_shape = tuple(state["image_shape"])
    grid = torch.cat([images[c][:args.columns] for c in range(k)])
    ax = plots.plot_images(grid, image_shape, nrow=args.columns,
                           title=f"{Path(args.run).name}: one row per label 0-{k - 1}; "
                                 f"{100 * overall:.1f}% recognised")
    figure = Path(args.figure) if args.figure else Path(args.run) / "samples-by-label.png"
    plots.save_figure(ax, figure)
    result = {"per_class": per_class, "overall": overall, "per_class_samples": args.per_class,
              "classifier_train_images": n,
              "classifier_test_accuracy": float(classifier.score(data.test.numpy(),
                                                                 data.test_labels.numpy()))}
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
