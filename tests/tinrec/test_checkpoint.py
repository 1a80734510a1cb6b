"""Checkpoints: round trip of weights, optimizer state and RNG; a crash while saving keeps the last one."""

import os

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torchrec.optim.keyed import KeyedOptimizerWrapper

from tinrec import checkpoint as ckpt
from tinrec.train import init_distributed


def make():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    opt = KeyedOptimizerWrapper(dict(model.named_parameters()), lambda p: torch.optim.Adam(p, lr=0.1))
    return model, opt


def step(model, opt):
    opt.zero_grad()
    model(torch.ones(3, 4)).pow(2).sum().backward()
    opt.step()


def test_round_trip_and_crash_while_saving(tmp_path, monkeypatch):
    init_distributed()
    root = str(tmp_path / "ckpt")
    model, opt = make()
    step(model, opt)
    first = ckpt.save(root, 1, model, opt, {"epoch": 0, "step_in_epoch": 1})
    saved_w = model.weight.detach().clone()
    rng_after_save = torch.rand(3)
    step(model, opt)

    def boom(*a, **k):
        raise RuntimeError("killed while writing")

    monkeypatch.setattr(dcp, "save", boom)
    with pytest.raises(RuntimeError):
        ckpt.save(root, 2, model, opt, {"epoch": 0, "step_in_epoch": 2})
    monkeypatch.undo()
    assert ckpt.latest(root) == first  # the half-written step-2 is not "latest"
    assert os.path.isdir(os.path.join(root, "step-00000002.tmp"))

    fresh, fresh_opt = make()
    state = ckpt.load(ckpt.latest(root), fresh, fresh_opt)
    assert state["step"] == 1 and state["step_in_epoch"] == 1
    torch.testing.assert_close(fresh.weight, saved_w)
    assert torch.equal(torch.rand(3), rng_after_save)  # RNG restored to its state at save time
    # the optimizer state came back too: one more identical step gives identical weights
    ref, ref_opt = make()
    step(ref, ref_opt)
    step(ref, ref_opt)
    step(fresh, fresh_opt)
    torch.testing.assert_close(fresh.weight, ref.weight)
    # the next save clears the stale tmp folder and keeps only `keep` checkpoints
    ckpt.save(root, 3, fresh, fresh_opt, {}, keep=1)
    assert sorted(os.listdir(root)) == ["latest", "step-00000003"]
