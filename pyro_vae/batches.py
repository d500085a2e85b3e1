"""The binarization protocol and the training batches.

Binarization (the protocol of the published tables): training batches are binarized
afresh each epoch by sampling each pixel from Bernoulli(intensity) (dynamic
binarization); the test set is binarized once with seed 777 and the validation set once
with seed 778, so every model is evaluated on the same binary images.
"""

import torch

from .errors import DataError

#: Seed of the one-off binarization of the test set (the published protocol).
TEST_BINARIZATION_SEED = 777


#: Seed of the one-off binarization of the validation set.
VALIDATION_BINARIZATION_SEED = 778


#: Binarization settings: how training, validation and test images are made binary.
BINARIZATIONS = ("dynamic", "static", "none")


def binarize(x, seed=None, generator=None):
    """Sample binary images: each pixel ~ Bernoulli(intensity).

    :param torch.Tensor x: intensities in [0, 1], any shape.
    :param int seed: seed of a fresh generator (ignored when ``generator`` is given).
    :param torch.Generator generator: a generator to draw from (its state advances).
    :returns: a float tensor of 0s and 1s, the shape of ``x``.

    Example (pixels at 0 and 1 stay as they are; one seed, one draw)::

        >>> x = torch.tensor([[0.0, 1.0, 0.5, 0.5]])
        >>> binarize(x, seed=0)[0, :2]
        tensor([0., 1.])
        >>> torch.equal(binarize(x, seed=3), binarize(x, seed=3))
        True
    """
    if generator is None:
        generator = torch.Generator(device=x.device)
        generator.manual_seed(int(seed if seed is not None else 0))
    return torch.bernoulli(x, generator=generator)


def prepare_eval_splits(data, binarization):
    """The validation and test sets as the model sees them under ``binarization``.

    ``"dynamic"`` and ``"static"``: binarized once with :data:`VALIDATION_BINARIZATION_SEED`
    and :data:`TEST_BINARIZATION_SEED`; ``"none"``: unchanged.

    :returns: ``(validation, test)`` tensors.
    :raises DataError: for an unknown binarization.
    """
    check_binarization(binarization)
    if binarization == "none":
        return data.validation, data.test
    return (binarize(data.validation, VALIDATION_BINARIZATION_SEED),
            binarize(data.test, TEST_BINARIZATION_SEED))


def check_binarization(binarization):
    """:raises DataError: unless ``binarization`` is one of :data:`BINARIZATIONS`."""
    if binarization not in BINARIZATIONS:
        raise DataError(f"unknown binarization {binarization!r}; choose one of {list(BINARIZATIONS)}")


class EpochBatches:
    """Minibatches of the training set, shuffled and (optionally) binarized each epoch.

    With ``"dynamic"`` binarization every epoch draws fresh binary images; with
    ``"static"`` the training set (then the labelled subset, if any) is binarized once, by
    the data generator right after it is seeded, and only shuffled; with ``"none"`` images
    are used as they are. All randomness comes from one :class:`torch.Generator` whose
    state is saved in checkpoints, so a resumed run sees the same batches.

    :param torch.Tensor train: ``(N, D)`` intensities in [0, 1] (on the training device).
    :param int batch_size: images per batch; the last batch of an epoch may be smaller.
    :param str binarization: one of :data:`BINARIZATIONS`.
    :param int seed: seed of the data generator.
    :param int rank: this process's rank in a data-parallel job (see
        :mod:`pyro_vae.distributed`).
    :param int world_size: the number of processes. Every rank draws the same global
        batches of ``batch_size`` images (same permutation, same binarization: the
        generators of all ranks stay equal, so one checkpointed state serves them all) and
        keeps the images ``rank, rank + world_size, ...`` of each: the ranks' shards are
        disjoint and together make the batch one process would train on. A last batch of
        fewer than ``world_size`` images is filled up by repeating its images, so that
        every rank has at least one.
    :param labels: ``(N,)`` labels of ``train``: each batch is then ``(x, y)`` (a conditional
        VAE).
    :param labelled: ``(x_l, y_l)``, a labelled subset (M2): each batch is then
        ``(x, x_l_batch, y_l_batch)``, the labelled batches of ``labelled_batch_size``
        drawn by cycling through shuffles of the subset (it is usually much smaller than
        the training set, so it is seen many times an epoch).
    :param int labelled_batch_size: default ``min(batch_size, len(x_l))``.
    :raises DataError: for ``batch_size < world_size`` or a bad binarization.

    Example (five images in batches of two; the last batch is smaller)::

        >>> b = EpochBatches(torch.full((5, 4), 0.5), batch_size=2, binarization="static", seed=0)
        >>> len(b), [tuple(batch.shape) for batch in b.epoch()]
        (3, [(2, 4), (2, 4), (1, 4)])
    """

    def __init__(self, train, batch_size, binarization, seed, rank=0, world_size=1, labels=None,
                 labelled=None, labelled_batch_size=None):
        check_binarization(binarization)
        if batch_size < 1:
            raise DataError(f"batch_size must be at least 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise DataError(f"rank {rank} is outside a world of {world_size} processes")
        if batch_size < world_size:
            raise DataError(f"train.batch_size ({batch_size}) is the global batch, split among "
                            f"{world_size} processes: it must be at least the number of "
                            "processes")
        self.rank, self.world_size = int(rank), int(world_size)
        self.labels = labels
        self.labelled = labelled
        if labelled is not None:
            n_l = labelled[0].shape[0]
            if n_l == 0:
                raise DataError("the labelled subset is empty")
            self.labelled_batch_size = min(int(labelled_batch_size or batch_size), n_l)
            if self.labelled_batch_size < world_size:
                raise DataError(f"the labelled batch ({self.labelled_batch_size}) must be at "
                                f"least the number of processes ({world_size})")
        self.train = train
        self.batch_size = int(batch_size)
        self.binarization = binarization
        self.generator = torch.Generator(device=train.device)
        self.generator.manual_seed(int(seed))
        if binarization == "static":
            # the training set first, then the labelled subset, from the one generator
            self.train = binarize(train, generator=self.generator)
            if labelled is not None:
                self.labelled = (binarize(labelled[0], generator=self.generator), labelled[1])

    def __len__(self):
        return -(-self.train.shape[0] // self.batch_size)

    def epoch(self, skip=0):
        """Yield the batches of one epoch, each ``(b, D)``: one permutation, one binarization
        (this rank's shard of each global batch when ``world_size > 1``).

        :param int skip: leave out the first ``skip`` batches (resuming inside an epoch:
            restore :meth:`get_state` as it was at the epoch's start, then skip the batches
            already trained on).
        """
        self.epoch_start_state = self.generator.get_state()
        n = self.train.shape[0]
        perm = torch.randperm(n, generator=self.generator, device=self.train.device)
        if self.labelled is not None:
            x_l, y_l = self.labelled
            b_l = self.labelled_batch_size
            cycles = -(-len(self) * b_l // x_l.shape[0])
            perm_l = torch.cat([torch.randperm(x_l.shape[0], generator=self.generator,
                                               device=x_l.device) for _ in range(cycles)])
        # batch by batch (gather, then binarize): a batch stays in cache, where binarizing
        # the whole permuted set at once streamed it through memory twice (about 0.08 s an
        # epoch on Fashion-MNIST); skipped batches still draw their noise, so the generator
        # ends where an uninterrupted epoch leaves it
        for i, start in enumerate(range(0, n, self.batch_size)):
            x = self.train[perm[start:start + self.batch_size]]
            if self.binarization == "dynamic":
                x = torch.bernoulli(x, generator=self.generator)
            batch = x
            if self.labels is not None:
                batch = (x, self.labels[perm[start:start + self.batch_size]])
            elif self.labelled is not None:
                pick = perm_l[i * b_l:(i + 1) * b_l]
                xl = x_l[pick]
                if self.binarization == "dynamic":
                    xl = torch.bernoulli(xl, generator=self.generator)
                batch = (x, xl, y_l[pick])
            if i >= skip:
                yield tuple(map(self._shard, batch)) if isinstance(batch, tuple) else \
                    self._shard(batch)

    def example(self, n=2):
        """A small batch in the form :meth:`epoch` yields (the first ``n`` images, not
        binarized; the generator is not touched), e.g. to trace the model once."""
        if self.labels is not None:
            return (self.train[:n], self.labels[:n])
        if self.labelled is not None:
            return (self.train[:n], self.labelled[0][:n], self.labelled[1][:n])
        return self.train[:n]

    def _shard(self, x):
        if self.world_size == 1:
            return x
        if x.shape[0] < self.world_size:
            x = x.repeat(-(-self.world_size // x.shape[0]), *([1] * (x.dim() - 1)))
        return x[self.rank::self.world_size]

    def get_state(self):
        """The generator state (a uint8 tensor), for checkpoints."""
        return self.generator.get_state()

    def set_state(self, state):
        """Restore a state from :meth:`get_state`."""
        self.generator.set_state(state)
