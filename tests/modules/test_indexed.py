"""modules/indexed.py: a sequence as distinct rows + index. Its dense form, gather and projection against the
plain tensor ops; and every module that takes it (a class's INDEXED_INPUTS) gives the same output and the same
gradient to the rows as on the dense tensor, without building a [B, L, D] tensor with gradient."""
# Shape legend: B batch, L sequence length (padded), U distinct rows, d row width, F fields, K kept.
import pytest
import torch

from tinrec.modules import indexed
from tinrec.modules.eta import ETA
from tinrec.modules.lap import LAP
from tinrec.modules.sdim import SDIM
from tinrec.modules.sim import SIM
from tinrec.modules.twin import TWIN

U, d, F, B, L = 9, 3, 2, 4, 12


def _sequence(seed=0, lengths=(12, 7, 1, 0)):
    """Distinct rows, an index with repeated rows, and the mask of right-padded rows of ``lengths`` (padding
    points at row 0, as the input stage's does; the last row has no behaviour)."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.randn(U, d, generator=g, requires_grad=True)
    index = torch.randint(0, U, (B, L, F), generator=g)
    mask = torch.arange(L)[None, :] < torch.tensor(lengths)[:, None]
    index[~mask] = 0
    return rows, index, mask


def test_dense_gather_and_project_are_the_tensor_ops():
    rows, index, _ = _sequence()
    seq = indexed.IndexedSequence(rows, index)
    want = torch.cat([rows[index[..., f]] for f in range(F)], dim=-1)  # [B, L, F * d] by hand
    assert seq.shape == (B, L, F * d) and torch.equal(seq.dense(), want)
    idx = torch.randint(0, L, (B, 5))
    assert torch.equal(indexed.gather(seq, idx), indexed.gather(want, idx))
    assert torch.equal(indexed.gather(want, idx)[1, 2], want[1, idx[1, 2]])
    w = torch.randn(F * d, 7)
    torch.testing.assert_close(indexed.project(seq, w), want @ w)
    assert not indexed.project(seq, w).requires_grad
    # gradient of a gather: each row gets the sum over the kept occurrences that point at it, per field
    out = indexed.gather(seq, idx)
    out.backward(torch.ones_like(out))
    kept = torch.gather(index, 1, idx.unsqueeze(-1).expand(-1, -1, F))
    torch.testing.assert_close(rows.grad, torch.bincount(kept.reshape(-1), minlength=U).float()[:, None].expand(U, d))


def test_a_batch_without_behaviours_gets_one_zero_row():
    seq = indexed.IndexedSequence(torch.zeros(0, d), torch.zeros(B, L, F, dtype=torch.int64))
    assert torch.equal(seq.dense(), torch.zeros(B, L, F * d))


def _modules():
    torch.manual_seed(0)
    D = F * d
    return {
        "eta": ETA(dim=D, hashes=8, k=3, heads=2, head_dim=4),
        "twin": TWIN(dim=D, k=3, heads=2, head_dim=4),
        "sdim few collisions (sparse sums)": SDIM(dim=D, hashes=8, tau=8),
        "sdim many collisions (dense product)": SDIM(dim=D, hashes=4, tau=1),
        "sim hard": SIM(dim=D, search="hard", k=3, heads=2, head_dim=4),
        "sim soft (scores dense)": SIM(dim=D, search="soft", k=3, heads=2, head_dim=4, soft_dim=4, aux_hidden=(4,)),
        "sim loader": SIM(dim=D, search="loader", k=3, heads=2, head_dim=4),
        "lap (coarse level dense)": LAP(dim=D, coarse_k=5, fine_k=3, heads=2),
    }


@pytest.mark.parametrize("name", list(_modules()))
def test_a_module_gives_the_same_output_and_row_gradients_on_both_forms(name, monkeypatch):
    module = _modules()[name]
    assert "seq_BLD" in type(module).INDEXED_INPUTS
    rows, index, mask = _sequence()
    # targets near a behaviour of their row (every search and bucket has something to find)
    query = indexed.IndexedSequence(rows, index).dense()[:, 0].detach() + 0.1 * torch.randn(
        B, F * d, generator=torch.Generator().manual_seed(1))
    extra = {}
    if name == "sim hard":  # category ids: the behaviours' categories, the target's that of its behaviour 0
        cats = torch.randint(0, 3, (B, L), generator=torch.Generator().manual_seed(4))
        extra = {"seq_category_BL": cats, "query_category_B": cats[:, 0]}
    dense_out = module(seq_BLD=indexed.IndexedSequence(rows, index).dense(), mask_BL=mask, query_BD=query, **extra)
    dense_out.square().sum().backward()
    want_grad, rows.grad = rows.grad.clone(), None
    if "dense" not in name:  # no [B, L, D] tensor with gradient on this path
        real_dense = indexed.IndexedSequence.dense

        def no_grad_dense(self):
            assert not torch.is_grad_enabled(), f"{name} built the dense sequence with gradient"
            return real_dense(self)
        monkeypatch.setattr(indexed.IndexedSequence, "dense", no_grad_dense)
    out = module(seq_BLD=indexed.IndexedSequence(rows, index), mask_BL=mask, query_BD=query, **extra)
    torch.testing.assert_close(out, dense_out)
    assert torch.equal(out[3], torch.zeros_like(out[3]))  # the row without behaviour: zeros
    out.square().sum().backward()
    torch.testing.assert_close(rows.grad, want_grad)
    assert rows.grad.abs().sum() > 0


def test_sdim_switches_to_the_sparse_sums_only_below_one_collision_per_behaviour():
    """The two paths of SDIM.bucket_sums agree, and the sparse one adds only the colliding rows."""
    rows, index, mask = _sequence(seed=2)
    sdim = SDIM(dim=F * d, hashes=6, tau=2)
    seq = indexed.IndexedSequence(rows, index)
    c = torch.rand(B, L, sdim.groups, generator=torch.Generator().manual_seed(3)) < 0.2
    c &= mask.unsqueeze(-1)
    want = torch.bmm(c.transpose(1, 2).float(), seq.dense())
    assert int(c.sum()) <= B * L
    torch.testing.assert_close(sdim.bucket_sums(seq, c), want)
    (g,) = torch.autograd.grad(sdim.bucket_sums(seq, c).sum(), rows)
    touched = torch.zeros(U, dtype=torch.bool)
    b, l, _ = c.nonzero(as_tuple=True)
    touched[index[b, l].reshape(-1)] = True
    assert (g[~touched] == 0).all() and (g[touched] != 0).any()
