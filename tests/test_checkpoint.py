import os

import pytest
import torch

from pyro_vae.checkpoint import load_checkpoint, save_checkpoint
from pyro_vae.errors import CheckpointError


def minimal_state(**extra):
    return {"config": {"name": "x"}, "event_shape": [4], "model": {"w": torch.ones(2)},
            "epoch": 1, "step": 10, **extra}


def test_roundtrip(tmp_path):
    p = tmp_path / "checkpoint.pt"
    save_checkpoint(minimal_state(rng={"python": [3, [1, 2], None]}), p)
    state = load_checkpoint(tmp_path)  # a run folder works too
    assert torch.equal(state["model"]["w"], torch.ones(2)) and state["step"] == 10
    assert state["rng"]["python"] == [3, [1, 2], None]
    assert [f for f in os.listdir(tmp_path)] == ["checkpoint.pt"]  # no temporary files left


def test_failed_write_keeps_previous(tmp_path, monkeypatch):
    p = tmp_path / "checkpoint.pt"
    save_checkpoint(minimal_state(), p)
    before = p.read_bytes()

    def broken_save(obj, f):
        f.write(b"partial garbage")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(CheckpointError, match="previous file.*unchanged"):
        save_checkpoint(minimal_state(epoch=2), p)
    assert p.read_bytes() == before
    assert os.listdir(tmp_path) == ["checkpoint.pt"]


def test_unwritable_folder(tmp_path):
    with pytest.raises(CheckpointError, match="could not write"):
        save_checkpoint(minimal_state(), tmp_path / "absent" / "checkpoint.pt")


def test_truncated(tmp_path):
    p = tmp_path / "checkpoint.pt"
    save_checkpoint(minimal_state(), p)
    p.write_bytes(p.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(p)


@pytest.mark.parametrize("seed", range(20))
def test_garbage(tmp_path, seed):
    """Random bytes, and a real checkpoint with random bytes flipped, are refused cleanly."""
    g = torch.Generator().manual_seed(seed)
    p = tmp_path / "checkpoint.pt"
    p.write_bytes(bytes(torch.randint(0, 256, (500,), generator=g, dtype=torch.uint8).tolist()))
    with pytest.raises(CheckpointError):
        load_checkpoint(p)
    save_checkpoint(minimal_state(), p)
    raw = bytearray(p.read_bytes())
    for i in torch.randint(0, len(raw), (20,), generator=g).tolist():
        raw[i] ^= 0xFF
    p.write_bytes(bytes(raw))
    try:
        state = load_checkpoint(p)
    except CheckpointError:
        return
    assert state["format"] == "pyro_vae.checkpoint"  # flips that spared the structure


def test_foreign_checkpoint(tmp_path):
    p = tmp_path / "other.pt"
    torch.save({"state_dict": {"w": torch.ones(1)}}, p)
    with pytest.raises(CheckpointError, match="not a pyro_vae checkpoint"):
        load_checkpoint(p)


def test_incomplete_checkpoint(tmp_path):
    p = tmp_path / "c.pt"
    torch.save({"format": "pyro_vae.checkpoint", "version": 1, "model": {}}, p)
    with pytest.raises(CheckpointError, match="lacks"):
        load_checkpoint(p)


def test_missing(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path)


class Exploit:
    """Unpickling this would create a file: the loader must refuse it without running it."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_code_running_pickle_is_refused_not_executed(tmp_path):
    p = tmp_path / "checkpoint.pt"
    marker = tmp_path / "pwned"
    torch.save({"format": "pyro_vae.checkpoint", "payload": Exploit(str(marker))}, p)
    with pytest.raises(CheckpointError, match="refused to load"):
        load_checkpoint(p)
    assert not marker.exists()
