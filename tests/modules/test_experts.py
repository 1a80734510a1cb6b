"""Tests for the heterogeneous backbone's experts (modules/gwpfm.py, pnn.py, dcnv2.py, flatdnn.py): each
equation against a hand computation or a brute force over field pairs, shapes, gradients, bad settings."""
# Shape legend: B batch, F fields, D field width, G groups.
import itertools

import pytest
import torch

from tests.modules import checks
from tinrec.modules.dcnv2 import DCNv2, CrossLayer
from tinrec.modules.flatdnn import FlatDNN
from tinrec.modules.gwpfm import GwPFM
from tinrec.modules.pnn import PNN


def test_gwpfm_interaction_against_the_sum_over_field_pairs():
    """h = sum_{i<j} r_{g(i),g(j)} v_{i,g(j)} (.) v_{j,g(i)}, fields of three groups in any order."""
    torch.manual_seed(0)
    groups, G, d = [0, 1, 0, 2, 1, 2, 2], 3, 4
    m = GwPFM(dim=G * d, fields=len(groups), groups=groups, hidden=[])
    with torch.no_grad():
        m.r_P.copy_(torch.randn(m.r_P.shape))
    r = m.pair_weights()
    x = torch.randn(2, len(groups), G * d)
    v = x.view(2, len(groups), G, d)
    want = sum(r[min(groups[i], groups[j]), max(groups[i], groups[j])] * v[:, i, groups[j]] * v[:, j, groups[i]]
               for i, j in itertools.combinations(range(len(groups)), 2))
    torch.testing.assert_close(m.interaction(x), want)
    assert m(fields_BFE=x).shape == (2, d) and m.output_dim == d


def test_gwpfm_one_group_with_unit_weight_is_the_fm_bi_interaction():
    """G = 1, r = 1: FM's 0.5 ((sum_i v_i)^2 - sum_i v_i^2), by hand on two fields: v_1 (.) v_2."""
    m = GwPFM(dim=2, fields=2, groups=[0, 0], hidden=[])
    x = torch.tensor([[[1.0, 2.0], [3.0, -1.0]]])
    torch.testing.assert_close(m.interaction(x), torch.tensor([[3.0, -2.0]]))


def test_gwpfm_gradients_and_bad_groups():
    torch.manual_seed(0)
    m = GwPFM(dim=6, fields=4, groups=[0, 1, 1, 0], hidden=[8])
    m(fields_BFE=torch.randn(3, 4, 6)).pow(2).sum().backward()
    assert m.r_P.shape == (3,) and (m.r_P.grad != 0).all()  # r_00, r_01, r_11
    checks.assert_every_parameter_gets_gradient(m)
    with pytest.raises(ValueError, match="every id 0..G-1"):
        GwPFM(dim=6, fields=2, groups=[0, 2])
    with pytest.raises(ValueError, match="each of the 3 fields"):
        GwPFM(dim=6, fields=3, groups=[0, 1])
    with pytest.raises(ValueError, match="not G = 2 sub-embeddings"):
        GwPFM(dim=5, fields=2, groups=[0, 1])
    with pytest.raises(ValueError, match="add up to the 4 fields"):
        GwPFM(dim=6, fields=4, group_sizes=[2, 1])
    with pytest.raises(ValueError, match="not both or neither"):
        GwPFM(dim=6, fields=4)
    torch.manual_seed(0)
    runs = GwPFM(dim=6, fields=4, group_sizes=[1, 3], hidden=[])
    torch.manual_seed(0)
    ids = GwPFM(dim=6, fields=4, groups=[0, 1, 1, 1], hidden=[])
    x = torch.randn(2, 4, 6)
    torch.testing.assert_close(runs(fields_BFE=x), ids(fields_BFE=x))


def test_ipnn_products_are_every_pair_inner_product_and_opnn_the_outer_of_the_sum():
    f = torch.tensor([[[1.0, 2.0], [3.0, -1.0], [0.5, 0.0]]])
    ipnn = PNN(dim=2, fields=3, product="inner", hidden=[4])
    torch.testing.assert_close(ipnn.products(f), torch.tensor([[1.0, 0.5, 1.5]]))  # (1,2) (1,3) (2,3)
    opnn = PNN(dim=2, fields=3, product="outer", hidden=[4])
    s = torch.tensor([4.5, 1.0])
    torch.testing.assert_close(opnn.products(f), torch.outer(s, s).flatten().unsqueeze(0))
    # the first layer reads [flatten(f), p]
    first = ipnn.mlp.layers[0]
    want = torch.relu(first(torch.tensor([[1.0, 2.0, 3.0, -1.0, 0.5, 0.0, 1.0, 0.5, 1.5]])))
    torch.testing.assert_close(ipnn(fields_BFD=f), want)


def test_pnn_gradients_and_errors():
    torch.manual_seed(0)
    m = PNN(dim=4, fields=5, hidden=[8, 3])
    f = torch.randn(2, 5, 4, requires_grad=True)
    m(fields_BFD=f).pow(2).sum().backward()
    checks.assert_every_parameter_gets_gradient(m)
    assert (f.grad.abs().sum(-1) > 0).all() and m.output_dim == 3
    with pytest.raises(ValueError, match="at least 2 fields"):
        PNN(dim=4, fields=1)
    with pytest.raises(ValueError, match="want \\[B, 5, 4\\]"):
        m(fields_BFD=torch.randn(2, 4, 4))


def _cross(kind, **kw):
    layer = CrossLayer(2, kind, rank=kw.pop("rank", 1), experts=kw.pop("experts", 1))
    with torch.no_grad():
        layer.bias_N.copy_(torch.tensor([0.5, -1.0]))
    return layer


def test_cross_layer_full_rank_by_hand():
    """x_{l+1} = x0 (.) (W x_l + b) + x_l: x0 = x_l = (1, 2), W = [[1, 0], [1, 1]], b = (0.5, -1)
    -> W x = (1, 3), + b = (1.5, 2), x0 (.) = (1.5, 4), + x = (2.5, 6)."""
    layer = _cross("full")
    with torch.no_grad():
        layer.w.weight.copy_(torch.tensor([[1.0, 0.0], [1.0, 1.0]]))
    x = torch.tensor([[1.0, 2.0]])
    torch.testing.assert_close(layer(x, x), torch.tensor([[2.5, 6.0]]))
    # x0 and x_l apart: x0 = (1, 2), x_l = (0, 1): W x = (0, 1), + b = (0.5, 0), (.) x0 = (0.5, 0), + x = (0.5, 1)
    torch.testing.assert_close(layer(x, torch.tensor([[0.0, 1.0]])), torch.tensor([[0.5, 1.0]]))


def test_cross_layer_low_rank_is_the_full_layer_with_w_equal_u_v_transposed():
    """U = (1, 1)^T, V = (1, 0)^T: U V^T = [[1, 0], [1, 0]]; x = (1, 2) -> (1, 1) + b = (1.5, 0) -> (1.5, 0) + x."""
    layer = _cross("low_rank", rank=1)
    with torch.no_grad():
        layer.v.weight.copy_(torch.tensor([[1.0, 0.0]]))
        layer.u.weight.copy_(torch.tensor([[1.0], [1.0]]))
    x = torch.tensor([[1.0, 2.0]])
    torch.testing.assert_close(layer(x, x), torch.tensor([[2.5, 2.0]]))


def test_cross_layer_mixture_by_hand():
    """Two experts of rank 1, g = tanh: E_e = x0 (.) (U_e tanh(C_e tanh(V_e^T x)) + b); gate softmax(G x).
    Expert 0: V = (1, 0), C = 1, U = (1, 1): tanh(tanh(1)) = t; E_0 = x0 (.) (t + .5, t - 1).
    Expert 1: all zero: E_1 = x0 (.) b = (0.5, -2). Gate scores (0, 0): 1/2 each."""
    layer = _cross("mixture", rank=1, experts=2)
    with torch.no_grad():
        for p in (layer.v_ENR, layer.c_ERR, layer.u_ERN, layer.gate.weight):
            p.zero_()
        layer.v_ENR[0, 0, 0] = 1.0
        layer.c_ERR[0, 0, 0] = 1.0
        layer.u_ERN[0, 0] = torch.tensor([1.0, 1.0])
    x = torch.tensor([[1.0, 2.0]])
    t = torch.tanh(torch.tanh(torch.tensor(1.0)))
    e0 = torch.tensor([1.0, 2.0]) * torch.stack([t + 0.5, t - 1.0])
    e1 = torch.tensor([0.5, -2.0])
    torch.testing.assert_close(layer(x, x), (0.5 * e0 + 0.5 * e1 + x[0]).unsqueeze(0))


@pytest.mark.parametrize("kind", ["full", "low_rank", "mixture"])
@pytest.mark.parametrize("structure", ["stacked", "parallel"])
def test_dcnv2_structures_shapes_and_gradients(kind, structure):
    torch.manual_seed(0)
    m = DCNv2(dim=4, fields=3, layers=2, kind=kind, rank=4, experts=2, structure=structure, hidden=[8, 5])
    f = torch.randn(6, 3, 4, requires_grad=True)
    out = m(fields_BFD=f)
    assert out.shape == (6, 5) and m.output_dim == 5
    out.pow(2).sum().backward()
    checks.assert_every_parameter_gets_gradient(m)
    assert (f.grad.abs().sum(-1) > 0).all()


def test_dcnv2_stacked_feeds_the_cross_output_to_the_mlp():
    torch.manual_seed(0)
    m = DCNv2(dim=2, fields=2, layers=1, hidden=[3])
    f = torch.randn(4, 2, 2)
    torch.testing.assert_close(m(fields_BFD=f), m.deep(m.cross[0](f.flatten(1), f.flatten(1))))


def test_dcnv2_rank_defaults():
    assert DCNv2(dim=16, fields=32).kind == "full"  # n = 512: full rank
    wide = DCNv2(dim=16, fields=40, layers=1)  # n = 640 > 512: low rank n / 4
    assert (wide.kind, wide.rank) == ("low_rank", 160)
    assert DCNv2(dim=16, fields=4, kind="mixture").rank == 32 and DCNv2(dim=4, fields=2, kind="mixture").rank == 8
    with pytest.raises(ValueError, match="rank must be in 1..8"):
        DCNv2(dim=4, fields=2, kind="low_rank", rank=9)


def test_flatdnn_is_an_mlp_over_the_flattened_fields():
    torch.manual_seed(0)
    m = FlatDNN(dim=3, fields=2, hidden=[4, 2])
    f = torch.randn(5, 2, 3)
    torch.testing.assert_close(m(fields_BFD=f), m.mlp(f.reshape(5, 6)))
    assert m.output_dim == 2
