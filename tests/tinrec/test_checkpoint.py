"""Checkpoints: round trip of weights, optimizer state and RNG; a crash while saving keeps the last one."""

import os

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torchrec.optim.keyed import KeyedOptimizerWrapper

from tinrec import checkpoint as ckpt
from tinrec.distributed import init_distributed


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


def test_saving_a_step_again_never_loses_it_and_resume_falls_back(tmp_path, monkeypatch, caplog):
    """The final checkpoint of a run whose last step was also a periodic one is written again (with the
    evaluation in its state): a kill at any point of that second save leaves a complete checkpoint of the
    step, and resume finds it."""
    init_distributed()
    root = str(tmp_path / "ckpt")
    model, opt = make()
    ckpt.save(root, 1, model, opt, {"n": 1})
    step(model, opt)
    ckpt.save(root, 2, model, opt, {"n": 2})
    saved_w = model.weight.detach().clone()
    real_replace = os.replace

    def killed_after_moving_aside(src, dst):
        if src.endswith(".tmp") and os.path.basename(dst) == "step-00000002":
            raise KeyboardInterrupt("killed between moving step-2 aside and renaming its replacement in")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", killed_after_moving_aside)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save(root, 2, model, opt, {"n": 2, "valid": "evaluated"})
    monkeypatch.undo()
    assert open(os.path.join(root, "latest")).read().strip() == "step-00000002"
    assert not os.path.exists(os.path.join(root, "step-00000002"))  # 'latest' names nothing
    with caplog.at_level("WARNING"):
        found = ckpt.latest(root)
    assert found == os.path.join(root, "step-00000002.replaced")
    assert "missing or incomplete" in caplog.text and "step-00000002.replaced" in caplog.text
    fresh, fresh_opt = make()
    assert ckpt.load(found, fresh, fresh_opt)["n"] == 2
    torch.testing.assert_close(fresh.weight, saved_w)
    # the next save removes the stale .tmp, keeps the moved-aside copy until rotation makes it the oldest
    ckpt.save(root, 3, fresh, fresh_opt, {"n": 3}, keep=2)
    assert sorted(os.listdir(root)) == ["latest", "step-00000002.replaced", "step-00000003"]
    ckpt.save(root, 4, fresh, fresh_opt, {"n": 4}, keep=2)
    assert sorted(os.listdir(root)) == ["latest", "step-00000003", "step-00000004"]


def test_saving_the_same_step_twice_replaces_it_completely(tmp_path):
    init_distributed()
    root = str(tmp_path / "ckpt")
    model, opt = make()
    step(model, opt)
    ckpt.save(root, 5, model, opt, {"valid": []})
    ckpt.save(root, 5, model, opt, {"valid": [{"auc": 0.7}]})
    assert sorted(os.listdir(root)) == ["latest", "step-00000005"]
    fresh, fresh_opt = make()
    assert ckpt.load(ckpt.latest(root), fresh, fresh_opt)["valid"] == [{"auc": 0.7}]


def test_a_checkpoint_of_another_model_is_refused_in_one_line(tmp_path):
    init_distributed()
    root = str(tmp_path / "ckpt")
    model, opt = make()
    path = ckpt.save(root, 1, model, opt, {})
    other = torch.nn.Sequential()
    other.add_module("tower", torch.nn.Linear(4, 3))
    with pytest.raises(ValueError, match=r"does not fit this config at model: tower\.weight is not in the checkpoint"):
        ckpt.load(path, other)
    wider = torch.nn.Linear(5, 2)
    with pytest.raises(ValueError, match=r"weight has shape \[2, 4\] in the checkpoint, \[2, 5\] in this config"):
        ckpt.load(path, wider)


def test_a_checkpoint_from_before_embedding_groups_is_refused_saying_so(tmp_path):
    """Parameter paths of tinrec 0.1 (tables grouped by width, ``sparse_arch.ecs.dim32``) cannot be mapped onto
    groups without the old config; the refusal says what the checkpoint is and what to do."""
    init_distributed()
    old = torch.nn.Module()
    old.sparse_arch = torch.nn.Module()
    old.sparse_arch.ecs = torch.nn.ModuleDict({"dim32": torch.nn.Linear(2, 2)})
    path = ckpt.save(str(tmp_path / "ckpt"), 1, old, torch.optim.SGD(old.parameters(), lr=0.1), {})
    new = torch.nn.Module()
    new.sparse_arch = torch.nn.Module()
    new.sparse_arch.ecs = torch.nn.ModuleDict({"main": torch.nn.Linear(2, 2)})
    with pytest.raises(ValueError, match=r"step-00000001: written before embedding groups and inputs by name \(it has "
                                         r"sparse_arch\.ecs\.dim32\.weight\); .*retrain, or use tinrec 0\.1 \(commit 8bbc339\)"):
        ckpt.load(path, new)
