"""Tests for modules/sdim.py: bucket signatures and the sampled interest against a hand computation, padding,
gradients (colliding behaviours only, never the hyperplanes), and tau as an inverse temperature."""
# Shape legend: B batch, L sequence length (padded), D width, G groups.
import math

import pytest
import torch

from tests.modules import batches, checks
from tinrec.modules.sdim import SDIM

D = 4


def test_signatures_pack_the_sign_bits_of_each_group():
    sdim = SDIM(dim=2, hashes=4, tau=2, product=False)
    sdim.planes_MD.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [1.0, 1.0]]))
    x = torch.tensor([[2.0, -1.0], [-1.0, 3.0]])
    # x0: bits (1, 0 | 0, 1) -> groups 1 + 0 = 1 and 0 + 2 = 2; x1: (0, 1 | 1, 1) -> 2 and 3
    assert sdim.signatures(x).tolist() == [[1, 2], [2, 3]]


def test_hand_example_bucket_sums_normalised_then_averaged():
    sdim = SDIM(dim=2, hashes=4, tau=2, product=False)
    sdim.planes_MD.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [1.0, 1.0]]))
    q = torch.tensor([[2.0, -1.0]])  # signatures (1, 2)
    seq = torch.tensor([[[3.0, -2.0], [-1.0, 1.0], [0.5, -0.1], [2.0, -1.0]]])  # sigs (1,2) (2,1) (1,2), padding
    mask = torch.tensor([[True, True, True, False]])
    s = torch.tensor([3.5, -2.1])  # both groups: behaviours 0 and 2 collide, 1 does not, 3 (same as q) is padding
    torch.testing.assert_close(sdim(seq_BLD=seq, mask_BL=mask, query_BD=q), (s / s.norm()).unsqueeze(0))


def test_shapes_padding_and_empty_rows():
    torch.manual_seed(0)
    sdim = SDIM(dim=D)
    batch = batches.make_batch([5, 2, 0, 1], D=D)
    out = checks.assert_padding_is_ignored(sdim, batch, zero_rows=[2], atol=1e-6)
    assert out.shape == (4, 2 * D)


def test_gradients_reach_colliding_behaviours_only_never_the_hyperplanes():
    torch.manual_seed(1)
    sdim = SDIM(dim=D, hashes=12, tau=3)
    batch = {k: (v.requires_grad_() if v.is_floating_point() else v) for k, v in batches.make_batch([5, 3], D=D).items()}
    sdim(**batch).pow(2).sum().backward()
    hit_BL = sdim.collisions(batch["seq_BLD"], batch["mask_BL"], batch["query_BD"]).any(-1)
    grad = batch["seq_BLD"].grad
    assert torch.equal(grad[~hit_BL], torch.zeros(int((~hit_BL).sum()), D))
    assert grad[hit_BL].abs().sum(-1).gt(0).all() and batch["query_BD"].grad.abs().sum() > 0
    assert not any(p.requires_grad for p in sdim.buffers()) and list(sdim.parameters()) == []


def test_tau_is_an_inverse_temperature():
    """Collision rate of a behaviour at angle a from the target: (1 - a / pi)^tau."""
    torch.manual_seed(2)
    q = torch.tensor([1.0, 0.0])
    for tau, angle in ((1, math.pi / 3), (3, math.pi / 3), (3, math.pi / 6)):
        sdim = SDIM(dim=2, hashes=3000 * tau, tau=tau, seed=tau)
        x = torch.tensor([math.cos(angle), math.sin(angle)])
        rate = (sdim.signatures(x) == sdim.signatures(q)).double().mean().item()
        assert rate == pytest.approx((1 - angle / math.pi) ** tau, abs=0.03)


def test_the_same_seed_gives_the_same_hyperplanes_and_bad_arguments_raise():
    assert torch.equal(SDIM(dim=D, seed=5).planes_MD, SDIM(dim=D, seed=5).planes_MD)
    assert not torch.equal(SDIM(dim=D, seed=5).planes_MD, SDIM(dim=D, seed=6).planes_MD)
    with pytest.raises(ValueError, match="multiple of tau"):
        SDIM(dim=D, hashes=10, tau=3)


def test_collisions_are_equal_signatures():
    """The XOR-of-sign-bits form of the collisions equals comparing the packed signatures."""
    torch.manual_seed(7)
    sdim = SDIM(dim=D, hashes=12, tau=3)
    batch = batches.make_batch([5, 2, 0, 4], D=D)
    want = (sdim.signatures(batch["seq_BLD"]) == sdim.signatures(batch["query_BD"]).unsqueeze(1)) & \
        batch["mask_BL"].unsqueeze(-1)
    got = sdim.collisions(batch["seq_BLD"], batch["mask_BL"], batch["query_BD"])
    assert torch.equal(got, want) and got.any() and not got.all()
