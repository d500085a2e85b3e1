"""Monitoring long runs in TensorBoard: scalars every epoch, sample grids every N epochs.

A :class:`Monitor` writes TensorBoard event files (``events.out.tfevents.*``) into the run
folder with PyTorch's :class:`torch.utils.tensorboard.SummaryWriter`, so
``tensorboard --logdir runs/`` shows every run side by side. Per epoch: the train and
validation ELBO, the validation reconstruction term and KL per latent site (nats per
image), the KL weight and the learning rate; every ``samples_every`` epochs, a grid of
prior samples. TensorBoard is an optional extra (``pip install pyro_vae[tensorboard]``);
without it the monitor prints one line saying so and records nothing.
"""

import sys

import torch

from .infer.chunks import seeded

#: The metrics-record keys written as scalars, and their TensorBoard tags.
SCALARS = {"train_elbo": "elbo/train", "validation_elbo": "elbo/validation",
           "validation_reconstruction": "validation/reconstruction", "kl_weight": "train/kl_weight",
           "lr": "train/lr", "images_per_second": "train/images_per_second"}


def tensorboard_writer(folder, purge_step=None):
    """A :class:`~torch.utils.tensorboard.SummaryWriter` on ``folder``, or ``None`` when the
    ``tensorboard`` package is not installed.

    :param int purge_step: on a resumed run, events at this step and later, written by the
        interrupted process after its last checkpoint, are dropped.
    """
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(folder), purge_step=purge_step)


class Monitor:
    """TensorBoard monitoring of one run (rank 0 only; the others pass ``enabled=False``).

    :param folder: the run folder (the event files go there).
    :param int samples_every: a grid of prior samples every this many epochs (0: never).
    :param image_shape: ``(C, H, W)`` of one image, for the sample grids.
    :param int purge_step: see :func:`tensorboard_writer` (the first epoch of this process).
    :param bool enabled: ``False``: record nothing, say nothing.
    :param stream: where the one-line note goes when TensorBoard is missing.
    """

    def __init__(self, folder, samples_every=10, image_shape=None, purge_step=None,
                 enabled=True, stream=None):
        self.samples_every = int(samples_every)
        self.image_shape = image_shape
        self.writer = tensorboard_writer(folder, purge_step) if enabled else None
        if enabled and self.writer is None:
            print("pyro-vae: note: TensorBoard is not installed, so this run writes no event "
                  "files (pip install 'pyro_vae[tensorboard]' to monitor runs)",
                  file=stream or sys.stderr)

    def log_epoch(self, record, vae=None):
        """Write one epoch's metrics record (see ``metrics.jsonl``) as scalars at step
        ``record["epoch"]``, and, every ``samples_every`` epochs, a grid of 64 prior samples
        of ``vae`` (drawn with a fixed seed; the caller's RNG is left as it was)."""
        if self.writer is None:
            return
        epoch = int(record["epoch"])
        for key, tag in SCALARS.items():
            if record.get(key) is not None:
                self.writer.add_scalar(tag, record[key], epoch)
        for key, value in record.items():
            if key.startswith("validation_kl/"):
                self.writer.add_scalar(f"kl/{key.split('/', 1)[1]}", value, epoch)
        if vae is not None and self.samples_every and epoch % self.samples_every == 0 \
                and self.image_shape is not None:
            device = next(vae.parameters()).device
            was_training = vae.training
            vae.eval()
            with torch.no_grad(), seeded(0, device):
                images = vae.sample(64).reshape(-1, *self.image_shape).clamp(0, 1).cpu()
            vae.train(was_training)
            from torchvision.utils import make_grid

            self.writer.add_image("samples", make_grid(images, nrow=8), epoch)
        self.writer.flush()

    def close(self):
        """Flush and close the event file."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None
