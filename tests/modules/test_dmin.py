"""DMIN (+TRA) (modules/dmin.py): the extractor's heads and their DIN units by hand, padding, empty rows,
gradients, the auxiliary loss only in training with negatives, the trigger's second pooling of every head."""
# Shape legend: B batch, L behaviours, D width, P position width, H heads.
import math

import pytest
import torch

from tests.modules import batches, checks
from tests.modules.batches import with_garbage_padding
from tinrec.modules.dmin import DMIN

D, P, H = 8, 4, 2


def _batch(lengths=(5, 2, 0, 3), seed=0):
    b = batches.make_batch(list(lengths), D=D, negatives=True, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    b["position_BLP"] = torch.randn(len(lengths), 5, P, generator=g)
    return b


def _plain(b):
    return {k: v for k, v in b.items() if k != "neg_seq_BLD"}


def _garbage(b):
    out = with_garbage_padding(b)
    B, L = out["mask_BL"].shape
    pos = torch.cat([b["position_BLP"], torch.zeros(B, L - b["position_BLP"].shape[1], P)], dim=1)
    out["position_BLP"] = torch.where(out["mask_BL"][..., None], pos, torch.full_like(pos, 1e4))
    return out


make = checks.seeded(DMIN, dim=D, heads=H, position_dim=P)


def test_each_interest_is_its_heads_din_pooling_by_hand():
    m, b = make().eval(), _batch()
    out = m(**_plain(b))
    assert out.shape == (4, H * D) and m.output_dim == H * D
    r, n = 0, 5
    z = m.refiner(x_BLD=b["seq_BLD"][r:r + 1, :n], mask_BL=b["mask_BL"][r:r + 1, :n])[0]  # [n, D]
    Wq, Wk, Wv = m.extractor.weight.chunk(3, dim=0)
    for h in range(H):
        q, k, v = (W[h * D:(h + 1) * D] @ z.t() for W in (Wq, Wk, Wv))  # [D, n]
        head = torch.softmax(q.t() @ k / math.sqrt(D), dim=-1) @ v.t()  # [n, D]
        e, s, qt = head, b["position_BLP"][r, :n], b["query_BD"][r].expand(n, D)
        score = m.units[h].unit(torch.cat([e, s, qt, e - qt, e * qt], dim=-1)).squeeze(-1) / math.sqrt(D)
        want = torch.softmax(score, 0) @ head
        torch.testing.assert_close(out[r, h * D:(h + 1) * D], want, rtol=1e-5, atol=1e-5)


def test_padding_empty_rows_and_gradients():
    m, b = make().train(), _batch()
    out, aux = m(**b)
    assert set(aux) == {"aux"} and aux["aux"].shape == () and torch.isfinite(aux["aux"])
    assert torch.equal(out[2], torch.zeros(H * D))
    m.eval()
    torch.testing.assert_close(m(**_garbage(_plain(b))), m(**_plain(b)), rtol=0, atol=1e-5)
    m.train()
    b["seq_BLD"].requires_grad_()
    out, aux = m(**b)
    (out.pow(2).sum() + aux["aux"]).backward()
    checks.assert_every_parameter_gets_gradient(m)
    checks.assert_gradient_only_at(b["seq_BLD"].grad, b["mask_BL"])


def test_aux_loss_only_in_training_with_negatives_and_weighted():
    b = _batch()
    m = make().train()
    assert isinstance(m(**_plain(b)), torch.Tensor) and isinstance(m.eval()(**b), torch.Tensor)
    _, a1 = make(aux_weight=1.0).train()(**b)
    _, a3 = make(aux_weight=3.0).train()(**b)
    torch.testing.assert_close(a3["aux"], 3 * a1["aux"])


def test_tra_pools_every_head_again_with_the_trigger():
    b = _plain(_batch())
    trig = torch.randn(4, D, generator=torch.Generator().manual_seed(9))
    plain, tra = make().eval(), make(trigger=True).eval()
    out = tra(**b, trigger_BD=trig)
    assert out.shape == (4, 2 * H * D) and tra.output_dim == 2 * H * D
    torch.testing.assert_close(out[:, :H * D], plain(**b))  # same seed: the same refiner, heads and units first
    heads = tra.heads_of(tra.refiner(x_BLD=b["seq_BLD"], mask_BL=b["mask_BL"]), b["mask_BL"])
    for h in range(H):
        want = tra.trigger_units[h](heads[:, h], b["mask_BL"], trig, b["position_BLP"])
        torch.testing.assert_close(out[:, (H + h) * D:(H + h + 1) * D], want)
    with pytest.raises(ValueError, match="trigger_BD exactly when"):
        tra(**b)
    with pytest.raises(ValueError, match="position_BLP exactly when"):
        plain(**{k: v for k, v in b.items() if k != "position_BLP"})
