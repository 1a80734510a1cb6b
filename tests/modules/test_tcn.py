"""Tests for modules/tcn.py: CAIN's TCN layer (Eq. 5) against a hand-written sliding window (zero-padded ends,
strides), padding invariance, gradients, and PEG's per-user filters (Eq. 10-12)."""
# Shape legend: B batch, L sequence length (padded), D input width, O output width, P profile width.
import pytest
import torch

from tinrec.modules.tcn import TCN

D, O, P = 4, 3, 5


def _batch(lengths, L=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    seq = torch.randn(len(lengths), L, D, generator=g)
    mask = torch.arange(L)[None, :] < torch.tensor(lengths)[:, None]
    return seq, mask, torch.randn(len(lengths), P, generator=g)


def sliding_window(seq, lengths, weight, bias, cl, stride):
    """Eq. 5 written out: output j of row b is centred on behaviour j * stride, sums the filter's taps over
    behaviours j * stride - cl .. j * stride + cl of that row, a tap outside [0, length) reading zero."""
    B, L, _ = seq.shape
    M = -(-L // stride)
    out = torch.zeros(B, M, weight.shape[-3] if weight.dim() == 4 else weight.shape[0], dtype=torch.float64)
    for b in range(B):
        W = weight[b] if weight.dim() == 4 else weight
        for j in range(M):
            c = j * stride
            if c >= lengths[b]:
                continue  # a padded centre: no output
            acc = bias.double().clone()
            for k in range(-cl, cl + 1):
                if 0 <= c + k < lengths[b]:
                    acc += W[:, :, k + cl].double() @ seq[b, c + k].double()
            out[b, j] = acc
    return out


@pytest.mark.parametrize("cl,stride", [(0, 1), (1, 1), (2, 1), (2, 2), (1, 3), (3, 4)])
def test_global_filter_is_the_hand_written_sliding_window(cl, stride):
    torch.manual_seed(0)
    tcn = TCN(dim=D, out_dim=O, context_length=cl, stride=stride)
    lengths = [9, 5, 1, 0, 3]
    seq, mask, _ = _batch(lengths)
    out, out_mask = tcn(seq_BLD=seq, mask_BL=mask)
    want = sliding_window(seq, lengths, tcn.weight.detach(), tcn.bias.detach(), cl, stride)
    assert out.shape == want.shape == (5, -(-9 // stride), O) and out_mask.shape == out.shape[:2]
    assert out_mask.sum(1).tolist() == [-(-n // stride) for n in lengths]  # ceil(n / s) outputs per row
    torch.testing.assert_close(out.double(), want, rtol=1e-5, atol=1e-6)
    assert not out[3].any()  # an empty row gives zeros, never NaN


def test_the_row_end_is_zero_padding_whatever_lies_under_the_padding():
    torch.manual_seed(1)
    tcn = TCN(dim=D, context_length=3, stride=2)
    lengths = [6, 2, 4]
    seq, mask, _ = _batch(lengths, L=6)
    out, out_mask = tcn(seq_BLD=seq, mask_BL=mask)
    garbage = torch.cat([torch.where(mask[..., None], seq, torch.full_like(seq, 1e6)), torch.randn(3, 4, D)], 1)
    longer = torch.cat([mask, torch.zeros(3, 4, dtype=torch.bool)], 1)
    out2, out_mask2 = tcn(seq_BLD=garbage, mask_BL=longer)
    torch.testing.assert_close(out2[:, :out.shape[1]], out, rtol=0, atol=1e-4)
    assert not out2[:, out.shape[1]:].any() and torch.equal(out_mask2[:, :out.shape[1]], out_mask)


def test_gradients_reach_every_parameter_and_the_real_behaviours_only():
    torch.manual_seed(2)
    tcn = TCN(dim=D, out_dim=O, context_length=2, aggregation="sum", profile_dim=P)
    seq, mask, profile = _batch([9, 4, 0])
    seq.requires_grad_(True)
    profile.requires_grad_(True)
    out, _ = tcn(seq_BLD=seq, mask_BL=mask, profile_BP=profile)
    out.pow(2).sum().backward()
    for name, p in tcn.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert torch.equal(seq.grad[~mask], torch.zeros(int((~mask).sum()), D))
    assert seq.grad[mask].abs().sum(-1).gt(0).all() and profile.grad[:2].abs().sum() > 0


@pytest.mark.parametrize("cl,stride", [(1, 1), (2, 3), (2, 4)])
def test_peg_gives_different_users_different_filters_and_is_the_shared_one_when_constant(cl, stride):
    torch.manual_seed(3)
    tcn = TCN(dim=D, out_dim=O, context_length=cl, stride=stride, aggregation="replace", profile_dim=P)
    seq, mask, profile = _batch([9, 7, 3])
    filters = tcn.filters(profile)
    assert filters.shape == (3, O, D, 2 * cl + 1) and not torch.allclose(filters[0], filters[1])
    # each user's output is the sliding window with that user's own filter (Eq. 12), strides included
    out, _ = tcn(seq_BLD=seq, mask_BL=mask, profile_BP=profile)
    want = sliding_window(seq, [9, 7, 3], filters.detach(), tcn.bias.detach(), cl, stride)
    torch.testing.assert_close(out.double(), want, rtol=1e-5, atol=1e-6)
    # a generator that ignores the profile and emits one filter: PEG's output is the shared-filter TCN's
    assert tcn.weight is None  # replace: no global filter to train
    shared = TCN(dim=D, out_dim=O, context_length=cl, stride=stride)
    with torch.no_grad():
        tcn.peg[2].weight.zero_()
        tcn.peg[2].bias.copy_(shared.weight.reshape(-1))
        tcn.bias.copy_(shared.bias)
    torch.testing.assert_close(tcn(seq_BLD=seq, mask_BL=mask, profile_BP=profile)[0],
                               shared(seq_BLD=seq, mask_BL=mask)[0])


def test_sum_and_concat_combine_the_global_and_personalized_outputs():
    torch.manual_seed(4)
    seq, mask, profile = _batch([9, 5])
    outs = {}
    for agg in ("replace", "sum", "concat"):
        torch.manual_seed(5)
        outs[agg] = TCN(dim=D, out_dim=O, context_length=2, aggregation=agg, profile_dim=P)
    state = outs["sum"].state_dict()
    outs["concat"].load_state_dict(state)
    outs["replace"].load_state_dict({k: v for k, v in state.items() if k != "weight"})
    glob = TCN(dim=D, out_dim=O, context_length=2)
    glob.load_state_dict({"weight": state["weight"], "bias": state["bias"]})
    g, _ = glob(seq_BLD=seq, mask_BL=mask)
    r, _ = outs["replace"](seq_BLD=seq, mask_BL=mask, profile_BP=profile)
    s, _ = outs["sum"](seq_BLD=seq, mask_BL=mask, profile_BP=profile)
    c, _ = outs["concat"](seq_BLD=seq, mask_BL=mask, profile_BP=profile)
    bias = torch.where(mask[..., None], state["bias"], torch.zeros(O))
    torch.testing.assert_close(s, g + r - bias)  # the bias once
    torch.testing.assert_close(c, torch.cat([g, r], -1))
    assert outs["concat"].output_dim == 2 * O


@pytest.mark.parametrize("aggregation", ["global", "replace", "sum", "concat"])
@pytest.mark.parametrize("stride", [1, 3])
def test_identity_init_passes_each_centre_behaviour_through_and_still_learns_its_context(aggregation, stride):
    """``identity_init``: at the start cr_t is the centre behaviour's first O channels (each half of concat's
    output too; sum's personalized part starts at zero), so a backbone behind it starts as without it; the
    neighbours' taps and PEG's generator get gradients from the first step."""
    seq, mask, profile = _batch([9, 6, 0], seed=5)
    tcn = TCN(dim=D, out_dim=O, context_length=2, stride=stride, aggregation=aggregation, profile_dim=P,
              identity_init=True)
    out, out_mask = tcn(seq_BLD=seq, mask_BL=mask, profile_BP=profile)
    want = (seq[:, ::stride, :O] * out_mask[..., None]).repeat(1, 1, 2 if aggregation == "concat" else 1)
    torch.testing.assert_close(out, want)
    out.pow(2).sum().backward()
    if tcn.weight is not None:
        assert tcn.weight.grad[:, :, 0].abs().sum() > 0  # a neighbour's tap learns
    if tcn.peg is not None:
        assert tcn.peg[2].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("aggregation,centre,stride", [("global", 2, 1), ("sum", 2, 1), ("replace", 2, 2),
                                                       ("concat", 2, 3), ("global", D, 2), ("replace", D, 1)])
def test_centre_only_channels_reach_the_output_through_the_centre_tap_alone(aggregation, centre, stride):
    """``centre_only``: the first channels' neighbour taps are zero in every filter applied (the sliding window
    with those taps zeroed by hand, strides included; the layer applies them as a pointwise map and generates
    only the PEG entries that may be non-zero), and they get no gradient; the others keep all taps."""
    torch.manual_seed(0)
    tcn = TCN(dim=D, out_dim=O, context_length=2, stride=stride, centre_only=centre, aggregation=aggregation,
              profile_dim=P)
    with torch.no_grad():  # generated filters of the scale of the global one, so that both parts count
        if tcn.peg is not None:
            tcn.peg[2].weight.mul_(10.0)
    lengths = [9, 4, 0]
    seq, mask, profile = _batch(lengths)
    out, _ = tcn(seq_BLD=seq, mask_BL=mask, profile_BP=profile)
    side = [0, 1, 3, 4]
    bias = tcn.bias.detach()
    expected = []
    if tcn.weight is not None:
        w = tcn.weight.detach().clone()
        w[:, :centre, side] = 0.0
        expected.append(sliding_window(seq, lengths, w, bias, 2, stride))
    if tcn.peg is not None:
        personal = tcn.filters(profile).detach()
        assert torch.equal(personal[:, :, :centre, side], torch.zeros(3, O, centre, 4))
        if aggregation == "sum":
            expected[0] = expected[0] + sliding_window(seq, lengths, personal, torch.zeros(O), 2, stride)
        else:
            expected.append(sliding_window(seq, lengths, personal, bias, 2, stride))
    torch.testing.assert_close(out.double(), torch.cat(expected, dim=-1), rtol=1e-5, atol=1e-5)
    out.pow(2).sum().backward()
    if tcn.weight is not None:
        g = tcn.weight.grad
        assert not g[:, :centre, side].any() and g[:, :centre, 2].abs().sum() > 0
        assert centre == D or g[:, centre:].abs().sum() > 0
    if tcn.peg is not None:
        g = tcn.peg[2].weight.grad.view(O, D, 5, -1)
        assert not g[:, :centre, side].any() and g[:, :centre, 2].abs().sum() > 0
        assert centre == D or g[:, centre:].abs().sum() > 0
    with pytest.raises(ValueError, match="centre_only"):
        TCN(dim=D, centre_only=D + 1)


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError, match="profile_dim"):
        TCN(dim=D, aggregation="replace")
    with pytest.raises(ValueError, match="context_length"):
        TCN(dim=D, context_length=-1)
    tcn = TCN(dim=D, aggregation="sum", profile_dim=P)
    seq, mask, _ = _batch([3])
    with pytest.raises(ValueError, match="needs profile_BP"):
        tcn(seq_BLD=seq, mask_BL=mask)
    with pytest.raises(ValueError, match=r"seq_BLD must be \[B, L, 4\]"):
        tcn(seq_BLD=seq[..., :2], mask_BL=mask)
