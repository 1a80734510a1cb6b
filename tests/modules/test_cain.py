"""Tests for modules/cain.py: the TCN framework is the backbone on the TCN's output; MSIA's auxiliary attention by
hand on a strided layer, masks carried through strides; PEG; padding and gradients."""
# Shape legend: B batch, L sequence length (padded), D width, P profile width.
import math

import pytest
import torch

from tests.modules import batches, checks
from tinrec.modules.cain import CAIN

D, P = 8, 5


def test_one_layer_is_the_backbone_reading_the_tcn_output():
    torch.manual_seed(0)
    for backbone, args in (("lap", {"coarse_k": 4, "fine_k": 2, "heads": 2}), ("sdim", {"hashes": 12}),
                           ("eta", {"k": 3, "heads": 2, "head_dim": 4}), ("sim", {"k": 3, "heads": 2}),
                           ("twin", {"k": 3, "heads": 2, "head_dim": 4})):
        cain = CAIN(dim=D, backbone=backbone, backbone_args=args, layers=1, context_length=2).eval()
        b = batches.make_batch([6, 3, 0], D=D, L=6)
        cr, m = cain.tcns[0](seq_BLD=b["seq_BLD"], mask_BL=b["mask_BL"])
        torch.testing.assert_close(cain(**b), cain.backbone(seq_BLD=cr, mask_BL=m, query_BD=b["query_BD"]))
        assert cain.output_dim == cain.backbone.output_dim


def test_identity_init_starts_as_the_backbone_alone_whatever_the_side_information_and_the_profile():
    """``identity_init``: with watch times beside the behaviours and PEG's per-user filters, CAIN's major
    attention starts as its backbone reading the behaviours themselves."""
    torch.manual_seed(3)
    cain = CAIN(dim=D, backbone="lap", backbone_args={"coarse_k": 4, "fine_k": 2, "heads": 2, "tied_init": True},
                layers=1, context_length=2, peg="replace", profile_dim=P, side_dim=1, identity_init=True).eval()
    b = batches.make_batch([6, 3, 0], D=D, L=6)
    watch = torch.rand(3, 6) * 100
    got = cain(**b, profile_BP=torch.randn(3, P), side_BLF=watch)
    torch.testing.assert_close(got, cain.backbone(**b))


def test_msia_adds_an_auxiliary_attention_per_later_layer_with_strided_masks():
    torch.manual_seed(1)
    cain = CAIN(dim=D, backbone="sdim", backbone_args={"hashes": 12}, layers=3, context_length=2,
                later_context_length=1, stride=2, aux_dim=4)
    lengths = [9, 4, 1]
    b = batches.make_batch(lengths, D=D, L=9)
    out = cain(**b)
    assert out.shape == (3, cain.backbone.output_dim + 2 * D)
    # by hand: layer 2 reads ReLU(layer 1), stride 2 -> ceil(n / 2) outputs; layer 3 again
    x1, m1 = cain.tcns[0](seq_BLD=b["seq_BLD"], mask_BL=b["mask_BL"])
    x2, m2 = cain.tcns[1](seq_BLD=torch.relu(x1), mask_BL=m1)
    x3, m3 = cain.tcns[2](seq_BLD=torch.relu(x2), mask_BL=m2)
    assert m2.sum(1).tolist() == [5, 2, 1] and m3.sum(1).tolist() == [3, 1, 1]
    aux = cain.aux[0]
    for r, n in enumerate(m2.sum(1).tolist()):
        sa = (x2[r, :n] @ aux.k.weight.T) @ (aux.q.weight @ b["query_BD"][r]) / math.sqrt(4)
        want = torch.softmax(sa, 0) @ (x2[r, :n] @ aux.v.weight.T)
        width = cain.backbone.output_dim
        torch.testing.assert_close(out[r, width:width + D], want, rtol=1e-5, atol=1e-6)


def test_peg_personalizes_every_layer_and_needs_the_profile():
    torch.manual_seed(2)
    cain = CAIN(dim=D, backbone="lap", backbone_args={"coarse_k": 4, "fine_k": 2, "heads": 2}, layers=2,
                context_length=1, stride=2, peg="replace", profile_dim=P)
    b = batches.make_batch([6, 6], D=D, L=6)
    b["seq_BLD"][1] = b["seq_BLD"][0]  # the same behaviours and target for two users of different profiles
    b["query_BD"][1] = b["query_BD"][0]
    profile = torch.randn(2, P)
    out = cain(**b, profile_BP=profile)
    assert not torch.allclose(out[0], out[1])
    same = cain(**b, profile_BP=profile[[0, 0]])
    torch.testing.assert_close(same[0], same[1])
    with pytest.raises(ValueError, match="needs profile_BP"):
        cain(**b)
    concat = CAIN(dim=D, backbone="sdim", layers=2, peg="concat", profile_dim=P, context_length=1)
    assert concat(**b, profile_BP=profile).shape == (2, concat.output_dim)


def test_padding_empty_rows_and_gradients():
    torch.manual_seed(3)
    cain = CAIN(dim=D, backbone="lap", backbone_args={"coarse_k": 4, "fine_k": 2, "heads": 2}, layers=2,
                context_length=1, stride=2).eval()
    checks.assert_padding_is_ignored(cain, batches.make_batch([5, 2, 0, 1], D=D), zero_rows=[2], atol=1e-5)
    cain.train()
    b = {k: (v.requires_grad_() if v.is_floating_point() else v) for k, v in batches.make_batch([5, 3], D=D).items()}
    cain(**b).pow(2).sum().backward()
    checks.assert_every_parameter_gets_gradient(cain)
    assert not b["seq_BLD"].grad[~b["mask_BL"]].any() and b["seq_BLD"].grad[b["mask_BL"]].abs().sum(-1).gt(0).all()


@pytest.mark.parametrize("extractor", ["rnn", "attention"])
def test_table_1_extractors_replace_the_first_layer(extractor):
    """CAIN's Table 1: the first layer is a bidirectional GRU or a self-attention block; the backbone reads its
    output; padding never enters (garbage under it changes nothing, empty rows give zeros); PEG is refused."""
    torch.manual_seed(6)
    cain = CAIN(dim=D, backbone="sdim", backbone_args={"hashes": 8, "tau": 2}, layers=1, extractor=extractor,
                extractor_heads=2).eval()
    batch = batches.make_batch([6, 3, 0, 1], D=D, L=6)
    out = checks.assert_padding_is_ignored(cain, batch, zero_rows=[2], atol=1e-5)
    first = cain.tcns[0]
    ctx, m = first(seq_BLD=batch["seq_BLD"], mask_BL=batch["mask_BL"])
    torch.testing.assert_close(out, cain.backbone(seq_BLD=ctx, mask_BL=m, query_BD=batch["query_BD"]))
    seq = batch["seq_BLD"]
    if extractor == "rnn":  # the GRU by hand over row 1's 3 behaviours, each direction
        gru = first.gru
        fwd = torch.nn.GRU(D, D // 2, batch_first=True)
        fwd.load_state_dict({k: v for k, v in gru.state_dict().items() if "reverse" not in k})
        bwd = torch.nn.GRU(D, D // 2, batch_first=True)
        bwd.load_state_dict({k.replace("_reverse", ""): v for k, v in gru.state_dict().items() if "reverse" in k})
        f = fwd(seq[1:2, :3])[0][0]
        b = bwd(seq[1:2, :3].flip(1))[0][0].flip(0)
        torch.testing.assert_close(ctx[1, :3], torch.cat([f, b], -1), rtol=1e-5, atol=1e-6)
    else:
        torch.testing.assert_close(ctx, first.block(x_BLD=seq, mask_BL=batch["mask_BL"]))
    # a behaviour's representation reads its neighbours on both sides
    moved = seq.clone()
    moved[0, 0] += 1.0
    ctx2, _ = first(seq_BLD=moved, mask_BL=batch["mask_BL"])
    assert (ctx2[0, 5] - ctx[0, 5]).abs().sum() > 0
    moved = seq.clone()
    moved[0, 5] += 1.0
    ctx3, _ = first(seq_BLD=moved, mask_BL=batch["mask_BL"])
    assert (ctx3[0, 0] - ctx[0, 0]).abs().sum() > 0
    with pytest.raises(ValueError, match="set peg: none"):
        CAIN(dim=D, backbone="sdim", extractor=extractor, peg="replace", profile_dim=3)
    with pytest.raises(ValueError, match="extractor must be"):
        CAIN(dim=D, extractor="lstm")


@pytest.mark.parametrize("extractor", ["tcn", "rnn", "attention"])
def test_side_information_enters_the_first_layer_as_log1p_beside_the_behaviour(extractor):
    """side_dim = 1 (watch time): the first layer reads [S_t, log(1 + w_t)]; the backbone and the later layers
    keep the target's width; padded side values are ignored; a missing or misshapen side input is an error."""
    torch.manual_seed(4)
    cain = CAIN(dim=D, backbone="sdim", backbone_args={"hashes": 12}, layers=2, context_length=1,
                later_context_length=1, stride=2, aux_dim=4, extractor=extractor, side_dim=1).eval()
    b = batches.make_batch([6, 3, 0], D=D, L=6)
    w_BL = torch.rand(3, 6) * 100
    out = cain(**b, side_BLF=w_BL)
    assert out.shape == (3, cain.backbone.output_dim + D)
    x1, m1 = cain.tcns[0](seq_BLD=torch.cat([b["seq_BLD"], torch.log1p(w_BL).unsqueeze(-1)], dim=-1),
                          mask_BL=b["mask_BL"])
    torch.testing.assert_close(out[:, :cain.backbone.output_dim],
                               cain.backbone(seq_BLD=x1, mask_BL=m1, query_BD=b["query_BD"]))
    other = w_BL.clone()
    other[1, 3:] = 1e6  # padding of row 1
    torch.testing.assert_close(cain(**b, side_BLF=other), out)
    other[1, 0] = 0.0  # a real behaviour's watch time moves that row only
    moved = (cain(**b, side_BLF=other) - out).abs().sum(1) > 0
    assert moved.tolist() == [False, True, False]
    with pytest.raises(ValueError, match="side_BLF"):
        cain(**b)
    with pytest.raises(ValueError, match="side_BLF"):
        cain(**b, side_BLF=torch.rand(3, 6, 2))


def test_side_relative_centres_each_rows_log_watch_time_on_its_own_behaviours():
    """side_relative: the first layer reads log(1 + w_t) minus the row's mean over its real behaviours; padding
    stays out of the mean."""
    torch.manual_seed(6)
    cain = CAIN(dim=D, backbone="sdim", backbone_args={"hashes": 12}, layers=1, context_length=1, side_dim=1,
                side_relative=True).eval()
    b = batches.make_batch([6, 3, 0], D=D, L=6)
    w_BL = torch.rand(3, 6) * 100 + 1
    log_BL = torch.log1p(w_BL) * b["mask_BL"]
    mean_B1 = log_BL.sum(1, keepdim=True) / b["mask_BL"].sum(1, keepdim=True).clamp_min(1)
    want_side = ((log_BL - mean_B1) * b["mask_BL"]).unsqueeze(-1)
    x1, m1 = cain.tcns[0](seq_BLD=torch.cat([b["seq_BLD"], want_side], dim=-1), mask_BL=b["mask_BL"])
    out = cain(**b, side_BLF=w_BL)
    torch.testing.assert_close(out, cain.backbone(seq_BLD=x1, mask_BL=m1, query_BD=b["query_BD"]))
    padded = w_BL.clone()
    padded[1, 3:] = 1e6
    torch.testing.assert_close(cain(**b, side_BLF=padded), out)


def test_without_content_context_a_behaviour_reads_only_its_neighbours_side_information():
    """``content_context=False``: the first layer's content channels pass through the centre tap only (the
    behaviour itself), the side channel keeps every tap; changing a neighbour's embedding leaves a behaviour's
    representation unchanged, changing the neighbour's watch time does not."""
    torch.manual_seed(7)
    cain = CAIN(dim=D, backbone="sdim", backbone_args={"hashes": 12}, layers=1, context_length=1, side_dim=1,
                content_context=False).eval()
    assert cain.tcns[0].centre_only == D
    b = batches.make_batch([6], D=D, L=6)
    w = torch.rand(1, 6) * 100 + 1
    x = torch.cat([b["seq_BLD"], torch.log1p(w).unsqueeze(-1)], dim=-1)
    base, _ = cain.tcns[0](seq_BLD=x, mask_BL=b["mask_BL"])
    x2 = x.clone()
    x2[0, 3, :D] += 5.0  # behaviour 3's embedding
    moved, _ = cain.tcns[0](seq_BLD=x2, mask_BL=b["mask_BL"])
    assert torch.equal(moved[0, [0, 1, 4, 5]], base[0, [0, 1, 4, 5]]) and not torch.equal(moved[0, 3], base[0, 3])
    x3 = x.clone()
    x3[0, 3, D] += 1.0  # behaviour 3's watch time
    moved, _ = cain.tcns[0](seq_BLD=x3, mask_BL=b["mask_BL"])
    assert not torch.equal(moved[0, 2], base[0, 2]) and not torch.equal(moved[0, 4], base[0, 4])


def test_side_scale_is_the_side_taps_scaled_and_nothing_else():
    """side_scale s: the same model as s = 1 with the first layer's side taps multiplied by s (the embedding
    taps and everything after them unchanged); not finite or <= 0 is refused."""
    torch.manual_seed(8)
    kw = dict(dim=D, backbone="sdim", backbone_args={"hashes": 12}, layers=2, context_length=1, side_dim=1,
              side_relative=True, content_context=False)
    one, scaled = CAIN(**kw).eval(), CAIN(**kw, side_scale=10.0).eval()
    scaled.load_state_dict(one.state_dict())
    b = batches.make_batch([6, 3, 0], D=D, L=6)
    w_BL = torch.rand(3, 6) * 100 + 1
    with torch.no_grad():
        one.tcns[0].weight[:, D:] *= 10.0  # the side channel's taps
    torch.testing.assert_close(scaled(**b, side_BLF=w_BL), one(**b, side_BLF=w_BL))
    with torch.no_grad():
        one.tcns[0].weight[:, D:] /= 10.0
    assert not torch.allclose(scaled(**b, side_BLF=w_BL), one(**b, side_BLF=w_BL))
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="side_scale"):
            CAIN(**kw, side_scale=bad)


@pytest.mark.parametrize("peg", ["none", "replace"])
def test_query_as_behaviour_maps_the_target_through_the_first_layer_alone(peg):
    """``query_as_behaviour``: the backbone's target is the first layer's centre tap (and with PEG the user's
    generated centre tap) applied to the target with zero side information, plus the bias; it starts as the
    target itself under ``identity_init``, and the target's path trains the centre tap."""
    torch.manual_seed(9)
    kw = dict(dim=D, backbone="sdim", backbone_args={"hashes": 12, "tau": 3}, layers=2, context_length=1,
              side_dim=1, side_relative=True, content_context=False, peg=peg, profile_dim=P if peg != "none" else 0)
    cain = CAIN(**kw, query_as_behaviour=True).eval()
    b = batches.make_batch([6, 3, 0], D=D, L=6)
    prof = torch.randn(3, P) if peg != "none" else None
    tcn = cain.tcns[0]
    if peg == "none":
        want = b["query_BD"] @ tcn.weight[:, :D, 1].T + tcn.bias
    else:
        want = torch.einsum("bod,bd->bo", tcn.filters(prof)[:, :, :D, 1], b["query_BD"]) + tcn.bias
    torch.testing.assert_close(cain.backbone_query(b["query_BD"], prof), want)
    w_BL = torch.rand(3, 6) * 100 + 1
    cr, m = tcn(seq_BLD=torch.cat([b["seq_BLD"], cain.side_information(w_BL, b["mask_BL"])], -1),
                mask_BL=b["mask_BL"], profile_BP=prof)
    got = cain(**b, side_BLF=w_BL, profile_BP=prof)
    torch.testing.assert_close(got[:, :cain.backbone.output_dim], cain.backbone(seq_BLD=cr, mask_BL=m, query_BD=want))
    plain = CAIN(**kw).eval()
    plain.load_state_dict(cain.state_dict())
    assert not torch.allclose(plain(**b, side_BLF=w_BL, profile_BP=prof), got)
    # identity_init: the target starts as itself, so the two variants start alike
    same = [CAIN(**kw, identity_init=True, query_as_behaviour=q).eval() for q in (True, False)]
    same[1].load_state_dict(same[0].state_dict())
    torch.testing.assert_close(same[0].backbone_query(b["query_BD"], prof), b["query_BD"])
    torch.testing.assert_close(same[0](**b, side_BLF=w_BL, profile_BP=prof),
                               same[1](**b, side_BLF=w_BL, profile_BP=prof))
    # the centre tap learns from the target's side as well
    cain.train()
    cain.backbone_query(b["query_BD"], prof).sum().backward()
    assert sum(float(p.grad.abs().sum()) for p in tcn.parameters() if p.grad is not None) > 0


def test_sim_soft_backbone_keeps_its_gsu_loss_which_trains_the_search_and_the_tcn():
    """SIM's soft search inside CAIN: its auxiliary CTR loss on the TCN's output is returned as ``gsu``, equals
    SIM's own loss on what the first layer hands it, and is the only gradient W_a and W_b get (the top-k passes
    none); training without the label is refused rather than leaving the search untrained."""
    torch.manual_seed(4)
    cain = CAIN(dim=D, backbone="sim", backbone_args={"k": 3, "heads": 2, "soft_dim": 4, "aux_hidden": [5]},
                layers=2, context_length=1, stride=2).train()
    b = batches.make_batch([6, 4, 0], D=D, L=6)
    label = torch.tensor([1.0, 0.0, 1.0])
    out, losses = cain(**b, label_B=label)
    assert out.shape == (3, cain.output_dim) and set(losses) == {"gsu"}
    cr, m = cain.tcns[0](seq_BLD=b["seq_BLD"], mask_BL=b["mask_BL"])
    r = cain.backbone.relevance(seq_BLD=cr, mask_BL=m, query_BD=b["query_BD"])
    torch.testing.assert_close(losses["gsu"], cain.backbone.aux_loss(r, m, cr, b["query_BD"], label))
    out.sum().backward(retain_graph=True)  # the output alone: no gradient reaches the search's projections
    assert cain.backbone.soft_a.weight.grad is None and cain.backbone.soft_b.weight.grad is None
    cain.zero_grad(set_to_none=True)
    losses["gsu"].backward()
    for p in (cain.backbone.soft_a.weight, cain.backbone.soft_b.weight, cain.tcns[0].weight):
        assert p.grad is not None and p.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="bind label_B"):
        cain(**b)
    assert not isinstance(cain.eval()(**b), tuple)  # evaluation: no label, no loss


def test_inputs_other_than_item_representations_reach_the_backbone_unchanged():
    """SIM's time-gap embeddings and TWIN's cross features are no item representations: CAIN hands them to its
    backbone as they are (one layer: exactly the backbone on the TCN's output with them); a backbone without such
    an input refuses it."""
    torch.manual_seed(5)
    b = batches.make_batch([6, 3, 0], D=D, L=6)
    sim = CAIN(dim=D, backbone="sim", backbone_args={"k": 3, "heads": 2, "time_dim": 4}, layers=1,
               context_length=1).eval()
    time = torch.randn(3, 6, 4)
    cr, m = sim.tcns[0](seq_BLD=b["seq_BLD"], mask_BL=b["mask_BL"])
    got = sim(**b, seq_time_BLD=time)
    torch.testing.assert_close(got, sim.backbone(seq_BLD=cr, mask_BL=m, query_BD=b["query_BD"], seq_time_BLD=time))
    assert not torch.allclose(got[:2], sim(**b, seq_time_BLD=torch.randn(3, 6, 4))[:2])
    twin = CAIN(dim=D, backbone="twin", backbone_args={"k": 3, "heads": 2, "head_dim": 4, "cross_features": 2,
                                                       "cross_width": 3}, layers=1, context_length=1).eval()
    cross = torch.randn(3, 6, 6)
    cr, m = twin.tcns[0](seq_BLD=b["seq_BLD"], mask_BL=b["mask_BL"])
    torch.testing.assert_close(twin(**b, cross_BLX=cross),
                               twin.backbone(seq_BLD=cr, mask_BL=m, query_BD=b["query_BD"], cross_BLX=cross))
    with pytest.raises(ValueError, match="takes no such input"):
        CAIN(dim=D, backbone="sdim", layers=1)(**b, cross_BLX=cross)
