"""Shared by the module tests: a seeded module factory and checks of padding, gradients, seeding, dropout."""
# Shape legend: B batch, L history length (padded), D embedding width, O output width.
import torch

from tests.modules.batches import with_garbage_padding


def seeded(cls, **fixed):
    """A factory ``make(seed=0, **kwargs)`` that seeds torch, then builds ``cls(**fixed, **kwargs)``."""

    def make(seed=0, **kwargs):
        torch.manual_seed(seed)
        return cls(**fixed, **kwargs)

    return make


def assert_padding_is_ignored(module, batch, *, zero_rows=(), atol=1e-5):
    """The output is [B, module.output_dim], finite, exactly zero on ``zero_rows`` (empty histories) and the
    same (to ``atol``) with garbage under the padding and more padded positions. Returns the output."""
    out_BO = module(**batch)
    assert out_BO.shape == (batch["mask_BL"].shape[0], module.output_dim)
    assert torch.isfinite(out_BO).all()
    for b in zero_rows:
        assert torch.equal(out_BO[b], torch.zeros(module.output_dim)), b
    torch.testing.assert_close(module(**with_garbage_padding(batch)), out_BO, rtol=0, atol=atol)
    return out_BO


def assert_every_parameter_gets_gradient(module, *, except_for=()):
    """Every parameter has a finite gradient, nonzero somewhere (only finite for those in ``except_for``)."""
    for name, param in module.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        if not any(param is p for p in except_for):
            assert param.grad.abs().sum() > 0, name


def assert_gradient_only_at(grad_BLD, kept_BL):
    """Exactly zero gradient at every position outside ``kept_BL``, a nonzero one at every position inside."""
    assert torch.equal(grad_BLD[~kept_BL], torch.zeros(int((~kept_BL).sum()), grad_BLD.shape[-1]))
    assert (grad_BLD[kept_BL].abs().sum(-1) > 0).all()


def assert_gradient_flow(module, batch, *, query=False):
    """Backward of sum(out ** 2): every parameter gets a gradient, every valid behaviour one, no padded one
    (the checks of the tests ``test_gradients_reach_every_parameter_and_only_valid_inputs``); with ``query``,
    every row's query gets one too."""
    batch["seq_BLD"].requires_grad_()
    if query:
        batch["query_BD"].requires_grad_()
    module(**batch).pow(2).sum().backward()
    assert_every_parameter_gets_gradient(module)
    assert_gradient_only_at(batch["seq_BLD"].grad, batch["mask_BL"])
    if query:
        assert (batch["query_BD"].grad.abs().sum(-1) > 0).all()


def assert_seed_determines_the_module(make, batch):
    """``make(seed=...)`` builds the same module for the same seed and a different one for another."""
    assert torch.equal(make(seed=3)(**batch), make(seed=3)(**batch))
    assert not torch.equal(make(seed=3)(**batch), make(seed=4)(**batch))


def assert_dropout_only_in_training(make, batch, *, seed=3):
    """With ``dropout=0.5`` the module equals the dropout-free one in eval mode and differs in training."""
    dropped = make(seed=seed, dropout=0.5)
    torch.testing.assert_close(dropped.eval()(**batch), make(seed=seed).eval()(**batch))
    torch.manual_seed(0)
    assert not torch.equal(dropped.train()(**batch), dropped.eval()(**batch))


def kept_by_search(module, **batch):
    """What a search-based module (SIM, ETA) hands its exact search unit ``module.esu``: (z [B, K, Z], mask
    [B, K]). The ESU is replaced by a recorder for the call (its output: zeros)."""
    seen = {}

    def record(*, z_BKZ, mask_BK, query_BD):
        seen["z"], seen["m"] = z_BKZ, mask_BK
        return torch.zeros(z_BKZ.shape[0], module.output_dim)

    module.esu.forward = record
    module(**batch)
    del module.esu.forward  # back to the class's forward
    return seen["z"], seen["m"]
