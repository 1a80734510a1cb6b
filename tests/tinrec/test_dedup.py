"""Index dedup of sequence lookups: the CPU kernel's contract, and training equal with and without it."""

import itertools
import os

import pytest
import torch

from tests.tinrec.training import tiny_training, train_then_eval
from tinrec import dedup

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _kjt_inputs(seed, batch=5, tables=((30, 2), (7, 1), (1000, 1)), max_len=6):
    """A feature-major KJT's offsets / indices over ``tables`` ((rows, features sharing it), ...), and the
    hash-size buffers TorchRec builds for them (only a table's last feature carries its size; its first
    feature carries its feature count)."""
    g = torch.Generator().manual_seed(seed)
    sizes, counts, feature_rows = [], [], []
    for rows, nf in tables:
        sizes += [0] * (nf - 1) + [rows]
        counts += [nf] + [0] * (nf - 1)
        feature_rows += [rows] * nf
    lengths = torch.randint(0, max_len + 1, (len(feature_rows) * batch,), generator=g)
    lengths[1] = 0  # an empty bag
    values = torch.cat([torch.randint(0, feature_rows[i // batch], (int(n),), generator=g)
                        for i, n in enumerate(lengths)])
    cumsum = torch.tensor([0] + list(itertools.accumulate(sizes)), dtype=torch.int64)
    hso = torch.tensor([0] + list(itertools.accumulate(counts)), dtype=torch.int64)
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(lengths, 0)])
    return cumsum, hso, offsets, values, tables, batch


def _check_contract(out, cumsum, hso, offsets, values, tables, batch):
    lengths, out_offsets, unique, reverse = out
    assert torch.equal(unique[reverse], values)
    assert torch.equal(out_offsets, torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(lengths, 0)]))
    f = 0
    for rows, nf in tables:
        b0, b1 = f * batch, (f + nf) * batch
        ids = values[offsets[b0]:offsets[b1]]
        expect = sorted(set(ids.tolist()))
        got = unique[out_offsets[b0]:out_offsets[b1]]
        assert got.tolist() == expect  # the table's distinct ids, ascending, routed to the table's bags
        per_bag = lengths[b0:b1]
        assert per_bag.max() - per_bag.min() <= 1 and per_bag.tolist() == sorted(per_bag.tolist(), reverse=True)
        # the table's lookups point into the table's run of distinct ids
        r = reverse[offsets[b0]:offsets[b1]]
        assert (r >= out_offsets[b0]).all() and (r < out_offsets[b1]).all()
        f += nf
    assert unique.numel() == sum(len(set(values[offsets[f0 * batch]:offsets[(f0 + nf) * batch]].tolist()))
                                 for f0, (_, nf) in zip(itertools.accumulate([0] + [t[1] for t in tables]), tables))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kernel_meets_the_contract_on_both_paths(seed, monkeypatch):
    args = _kjt_inputs(seed)
    dense = dedup.jagged_unique_indices(*args[:4])
    _check_contract(dense, *args)
    monkeypatch.setattr(dedup, "DENSE_FACTOR", 0)  # force the sort path
    sort = dedup.jagged_unique_indices(*args[:4])
    for a, b in zip(dense, sort):
        assert torch.equal(a, b)


def test_features_of_one_table_share_their_distinct_ids():
    # two features of one table, the same id in both: one row looked up, not two
    cumsum = torch.tensor([0, 0, 10])
    hso = torch.tensor([0, 2, 2])
    offsets = torch.tensor([0, 2, 3, 4, 6])  # batch 2: feature 0 bags [3, 3], [5]; feature 1 bags [3], [5, 9]
    values = torch.tensor([3, 3, 5, 3, 5, 9])
    lengths, out_offsets, unique, reverse = dedup.jagged_unique_indices(cumsum, hso, offsets, values)
    assert unique.tolist() == [3, 5, 9]
    assert reverse.tolist() == [0, 0, 1, 0, 1, 2]
    assert lengths.tolist() == [1, 1, 1, 0]


def test_an_id_outside_its_table_is_named():
    cumsum, hso, offsets, values, tables, batch = _kjt_inputs(0)
    values = values.clone()
    i = int(offsets[2 * batch])  # first lookup of feature 2 (the 7-row table)
    values[i] = 7
    with pytest.raises(ValueError, match=r"feature 2 \(of 4\).*id 7 outside its table of 7 rows"):
        dedup.jagged_unique_indices(cumsum, hso, offsets, values)


def test_registered_as_the_fbgemm_op_on_cpu():
    assert dedup.register_cpu_kernel()
    args = _kjt_inputs(3)
    out = torch.ops.fbgemm.jagged_unique_indices(*args[:4])
    for a, b in zip(out, dedup.jagged_unique_indices(*args[:4])):
        assert torch.equal(a, b)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cpu_kernel_matches_fbgemms_cuda_kernel():
    import fbgemm_gpu  # noqa: F401

    if not torch._C._dispatch_has_kernel_for_dispatch_key(dedup.OP, "CUDA"):
        pytest.skip("fbgemm-gpu build without CUDA kernels")
    for seed in range(3):
        args = _kjt_inputs(seed)
        cpu = dedup.jagged_unique_indices(*args[:4])
        gpu = torch.ops.fbgemm.jagged_unique_indices(*(a.cuda() for a in args[:4]))
        for a, b in zip(cpu, gpu):
            assert torch.equal(a, b.cpu())


def _train(tmp_path, index_dedup, steps=6):
    """Logits of ``steps`` training steps (TorchRec pipeline, fused rowwise Adagrad) then one eval step."""
    batches, model, pipeline = tiny_training(tmp_path, f"train.index_dedup={index_dedup}", batches=steps)
    flags = [m._use_index_dedup for m in model.modules() if hasattr(m, "_use_index_dedup")]
    fused = []  # per step: whether the input stage received the distinct rows unexpanded (fused expansion)
    input_arch = next(m for n, m in model.named_modules() if n.endswith("input_arch"))
    input_arch.register_forward_pre_hook(
        lambda _m, args: fused.append(any(dedup.is_deduplicated(jt) for d in args[0].values() for jt in d.values())))
    logits = train_then_eval(model, pipeline, batches)
    return flags, logits, fused


def test_training_with_dedup_equals_training_without(tmp_path):
    flags_on, on, fused_on = _train(tmp_path, True)
    flags_off, off, fused_off = _train(tmp_path, False)
    assert flags_on and all(flags_on) and not any(flags_off)  # the dedup path really ran
    assert fused_on and all(fused_on) and not any(fused_off)  # and handed over the distinct rows unexpanded
    assert not torch.allclose(on[0], on[-1])  # the sparse updates moved the logits
    for a, b in zip(on, off):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_expanded_writes_every_occurrence_side_by_side():
    """dedup.expanded: deduplicated features (distinct rows + reverse indices), of one tensor or of two, or mixed
    with a plain feature, give exactly the concatenation of their expanded values; gradients reach the rows
    summed over their occurrences."""
    from torchrec.sparse.jagged_tensor import JaggedTensor

    g = torch.Generator().manual_seed(0)
    rows = torch.randn(6, 3, generator=g, requires_grad=True)  # one sharding's distinct rows
    other = torch.randn(4, 3, generator=g, requires_grad=True)  # another's
    lengths = torch.tensor([2, 3])
    r1, r2, r3 = (torch.randint(0, n, (5,), generator=g) for n in (6, 6, 4))
    a = JaggedTensor(values=rows, lengths=lengths, weights=r1)
    b = JaggedTensor(values=rows, lengths=lengths, weights=r2)
    c = JaggedTensor(values=other, lengths=lengths, weights=r3)
    plain = JaggedTensor(values=torch.randn(5, 3, generator=g), lengths=lengths)
    assert dedup.is_deduplicated(a) and not dedup.is_deduplicated(plain)
    for jts in ([a], [a, b], [a, c, b], [plain, a], [plain]):
        want = torch.cat([jt.values()[jt.weights()] if dedup.is_deduplicated(jt) else jt.values() for jt in jts], -1)
        assert torch.equal(dedup.expanded(jts), want)
    out = dedup.expanded([a, b])
    out.backward(torch.ones_like(out))
    count = torch.bincount(torch.cat([r1, r2]), minlength=6).float()
    torch.testing.assert_close(rows.grad, count.unsqueeze(1).expand(6, 3))
