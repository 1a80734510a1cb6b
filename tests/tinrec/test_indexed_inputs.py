"""model.indexed_sequences: the arguments a module lists in INDEXED_INPUTS receive the sequence as distinct rows +
index (modules/indexed.py), and training is the same as with the [B, L, D] tensor (up to float order)."""

import pytest
import torch

from tests.tinrec.training import tiny_training, train_then_eval
from tinrec.modules.indexed import IndexedSequence


def _train(tmp_path, config, *overrides, steps=5):
    """Logits of ``steps`` training steps (TorchRec pipeline, fused optimizer) then one eval step, and per call
    of the interest module whether its sequence came as rows + index."""
    batches, model, pipeline = tiny_training(tmp_path, *overrides, batches=steps, config=config)
    arch = next(m for n, m in model.named_modules() if n.endswith("interest_arch"))
    (module,) = [m for n, m in arch.interests.items() if n != "short"]
    forms = []
    module.register_forward_pre_hook(lambda _m, args, kwargs: forms.append(
        isinstance(kwargs["seq_BLD"], IndexedSequence)), with_kwargs=True)
    logits = train_then_eval(model, pipeline, batches)
    return forms, logits


@pytest.mark.parametrize("config,extra", [
    ("eta.yaml", ()),
    ("eta.yaml", ("train.index_dedup=false",)),  # the plain lookups' values are the rows
    ("twin.yaml", ()),
    ("sim_hard_after_lookup.yaml", ()),  # gathers its kept rows only
    ("sim_soft.yaml", ()),  # scores and pools the dense sequence, its ESU gathers from the rows
    ("lap.yaml", ()),
    ("sdim.yaml", ("model.interests.sdim.tau=6", "model.interests.sdim.hashes=12")),  # the sparse bucket sums
])
def test_training_on_rows_and_index_equals_training_on_the_tensor(tmp_path, config, extra):
    forms_on, on = _train(tmp_path / "on", config, *extra, "model.indexed_sequences=true")
    forms_off, off = _train(tmp_path / "off", config, *extra, "model.indexed_sequences=false")
    assert forms_on and all(forms_on) and not any(forms_off)  # the indexed path really ran, and only there
    assert not torch.allclose(on[0], on[-2])  # training moved the logits
    for a, b in zip(on, off):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
