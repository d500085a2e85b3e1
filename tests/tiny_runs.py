"""The tiny training run the CLI tests share: 2 epochs of a 16-unit, 4-latent VAE on the
embedded digits, on the CPU, in a few seconds."""

from pyro_vae import cli

# the settings without the number of epochs (tests that time or interrupt a run add their own)
TINY_SETTINGS = ["--quiet", "--batch-size", "200", "--latent-dim", "4",
                 "--set", "model.hidden=[16]", "--device", "cpu"]
TINY = [*TINY_SETTINGS, "--epochs", "2"]


def train_tiny(tmp_path_factory, *extra):
    """Train the tiny run into a fresh folder ``runs*/digits`` and return its path."""
    out = tmp_path_factory.mktemp("runs") / "digits"
    assert cli.main(["train", "--out", str(out), *TINY, *extra]) == 0
    return out
