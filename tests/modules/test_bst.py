"""Tests for modules/bst.py: one post-LN Transformer block over behaviours + target, pooled."""
# Shape legend: B batch, L history length (padded), D embedding width.
import math

import pytest
import torch
import torch.nn.functional as F

from tinrec.modules.bst import BST

D = 8


def make_batch(lengths, L=5, seed=0, time=True):
    """Random inputs with the given history lengths (right-padded to L)."""
    g = torch.Generator().manual_seed(seed)
    B = len(lengths)
    batch = dict(
        seq_BLD=torch.randn(B, L, D, generator=g),
        mask_BL=torch.arange(L).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1),
        query_BD=torch.randn(B, D, generator=g),
    )
    if time:
        batch["seq_time_BLD"] = torch.randn(B, L, D, generator=g)
        batch["query_time_BD"] = torch.randn(B, D, generator=g)
    return batch


def with_garbage_padding(batch, extra=3, seed=1):
    """Same batch with large random values under padding and `extra` more padded positions."""
    g = torch.Generator().manual_seed(seed)
    out = dict(batch)
    B, L = batch["mask_BL"].shape
    out["mask_BL"] = torch.cat([batch["mask_BL"], torch.zeros(B, extra, dtype=torch.bool)], dim=1)
    for key in ("seq_BLD", "seq_time_BLD"):
        if key in batch:
            garbage_BLD = torch.randn(B, L + extra, D, generator=g) * 1e4
            padded_BLD = torch.cat([batch[key], garbage_BLD[:, L:]], dim=1)
            out[key] = torch.where(out["mask_BL"].unsqueeze(-1), padded_BLD, garbage_BLD)
    return out


def make_bst(seed=0, **kwargs):
    torch.manual_seed(seed)
    return BST(dim=D, **kwargs)


@pytest.mark.parametrize("pool", ["mean", "target"])
@pytest.mark.parametrize("time", [True, False])
def test_shape_padding_invariance_and_empty_rows(pool, time):
    model = make_bst(pool=pool).eval()  # 8 heads of width 1
    assert model.output_dim == D
    batch = make_batch([5, 2, 0, 1], time=time)
    out_BD = model(**batch)
    assert out_BD.shape == (4, D)
    assert torch.isfinite(out_BD).all()  # the empty row still has its target token
    torch.testing.assert_close(model(**with_garbage_padding(batch)), out_BD, rtol=0, atol=1e-5)


@pytest.mark.parametrize("pool", ["mean", "target"])
def test_gradients_reach_every_parameter_and_only_valid_inputs(pool):
    model = make_bst(pool=pool)
    batch = make_batch([5, 3, 0])
    batch["seq_BLD"].requires_grad_()
    batch["query_BD"].requires_grad_()
    model(**batch).pow(2).sum().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name
    mask_BL, grad_BLD = batch["mask_BL"], batch["seq_BLD"].grad
    assert torch.equal(grad_BLD[~mask_BL], torch.zeros(int((~mask_BL).sum()), D))
    assert (grad_BLD[mask_BL].abs().sum(-1) > 0).all()
    assert (batch["query_BD"].grad.abs().sum(-1) > 0).all()


def test_determinism_and_dropout_only_in_training():
    batch = make_batch([4, 2])
    assert torch.equal(make_bst(seed=3)(**batch), make_bst(seed=3)(**batch))
    assert not torch.equal(make_bst(seed=3)(**batch), make_bst(seed=4)(**batch))
    dropped = make_bst(seed=3, dropout=0.5)
    torch.testing.assert_close(dropped.eval()(**batch), make_bst(seed=3).eval()(**batch))
    torch.manual_seed(0)
    assert not torch.equal(dropped.train()(**batch), dropped.eval()(**batch))


def _layer_norm(x, norm):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias


def test_hand_computed_single_head_attention_of_behaviour_and_target():
    """One valid behaviour: the block sees exactly [e_1 + p_1, v + p_t] (BST's Transformer layer)."""
    target = make_bst(num_heads=1, pool="target").eval()
    mean = make_bst(num_heads=1, pool="mean").eval()
    batch = with_garbage_padding(make_batch([1], L=1))  # 1 real behaviour + 3 garbage slots
    blk = target.block
    e_D = batch["seq_BLD"][0, 0] + batch["seq_time_BLD"][0, 0]
    x_2D = torch.stack([e_D, batch["query_BD"][0] + batch["query_time_BD"][0]])
    w_q, w_k, w_v = blk.in_proj.weight.chunk(3)
    b_q, b_k, b_v = blk.in_proj.bias.chunk(3)
    q_2D, k_2D, v_2D = x_2D @ w_q.T + b_q, x_2D @ w_k.T + b_k, x_2D @ w_v.T + b_v
    att_22 = torch.softmax(q_2D @ k_2D.T / math.sqrt(D), dim=-1)
    mh_2D = (att_22 @ v_2D) @ blk.out_proj.weight.T + blk.out_proj.bias
    s_2D = _layer_norm(x_2D + mh_2D, blk.norm_attn)  # S' = LN(S + MH(S))
    lin1, lin2 = blk.ffn[0], blk.ffn[3]
    ffn_2D = F.leaky_relu(s_2D @ lin1.weight.T + lin1.bias, 0.01) @ lin2.weight.T + lin2.bias
    out_2D = _layer_norm(s_2D + ffn_2D, blk.norm_ffn)  # F = LN(S' + FFN(S'))
    torch.testing.assert_close(target(**batch)[0], out_2D[1], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(mean(**batch)[0], out_2D.mean(0), rtol=1e-5, atol=1e-6)


def test_time_inputs_are_added():
    model, batch = make_bst().eval(), make_batch([3, 1])
    summed = dict(
        seq_BLD=batch["seq_BLD"] + batch["seq_time_BLD"],
        mask_BL=batch["mask_BL"],
        query_BD=batch["query_BD"] + batch["query_time_BD"],
    )
    torch.testing.assert_close(model(**batch), model(**summed))


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError, match="num_heads"):
        BST(dim=6)  # 8 heads do not divide 6
    with pytest.raises(ValueError, match="pool"):
        BST(dim=D, pool="max")
    with pytest.raises(ValueError, match="mask_BL"):
        make_bst()(**dict(make_batch([2, 1]), mask_BL=torch.ones(2, 5)))
