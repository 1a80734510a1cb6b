"""Tests for modules/bst.py: one post-LN Transformer block over behaviours + target, pooled."""
# Shape legend: B batch, L history length (padded), D embedding width.
import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F

from tests.modules import batches, checks
from tests.modules.batches import with_garbage_padding
from tinrec.modules.bst import BST

D = 8
make_batch = partial(batches.make_batch, D=D, time=True)  # BST reads both encodings
make_bst = checks.seeded(BST, dim=D)


@pytest.mark.parametrize("pool", ["mean", "target"])
@pytest.mark.parametrize("time", [True, False])
def test_shape_padding_invariance_and_empty_rows(pool, time):
    model = make_bst(pool=pool).eval()  # 8 heads of width 1
    assert model.output_dim == D
    # the empty row still has its target token: finite, not zero
    checks.assert_padding_is_ignored(model, make_batch([5, 2, 0, 1], time=time))


@pytest.mark.parametrize("pool", ["mean", "target"])
def test_gradients_reach_every_parameter_and_only_valid_inputs(pool):
    checks.assert_gradient_flow(make_bst(pool=pool), make_batch([5, 3, 0]), query=True)


def test_determinism_and_dropout_only_in_training():
    batch = make_batch([4, 2])
    checks.assert_seed_determines_the_module(make_bst, batch)
    checks.assert_dropout_only_in_training(make_bst, batch)


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
