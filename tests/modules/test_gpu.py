"""The interest modules on a GPU: same values as on the CPU, L=2000 fits at batch 256, torch.compile works.

Marked ``gpu``; skipped without CUDA (never touches CUDA at import time).
"""
# Shape legend: B batch, L history length (padded), D embedding width.
import inspect

import pytest
import torch

from tinrec.modules.din import DIN
from tinrec.modules.pooling import AvgPooling
from tinrec.modules.tin import TIN

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
D = 64


def inputs(B, L, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, L + 1, (B,), generator=g)
    out = dict(seq_BLD=torch.randn(B, L, D, generator=g), mask_BL=torch.arange(L)[None] < lengths[:, None],
               query_BD=torch.randn(B, D, generator=g), seq_time_BLD=torch.randn(B, L, D, generator=g),
               query_time_BD=torch.randn(B, D, generator=g))
    return {k: v.to(device) for k, v in out.items()}


def args_of(module, x):
    """The inputs ``module.forward`` takes (AvgPooling takes no temporal encodings)."""
    accepted = inspect.signature(module.forward).parameters
    return {k: v for k, v in x.items() if k in accepted}


def modules():
    torch.manual_seed(0)
    return {"tin": TIN(dim=D), "tin_wo_ta": TIN(dim=D, attention=False), "din": DIN(dim=D),
            "din_prime": DIN(dim=D, softmax=False), "avg": AvgPooling(dim=D, product=True)}


@pytest.mark.parametrize("name", list(modules()))
def test_gpu_matches_cpu(name):
    m = modules()[name].eval()
    x = inputs(8, 50, "cpu")
    expect = m(**args_of(m, x))
    got = m.to("cuda")(**args_of(m, inputs(8, 50, "cuda")))
    torch.testing.assert_close(got.cpu(), expect, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["tin", "din", "avg"])
def test_long_sequences_fit_and_backprop(name):
    m = modules()[name].to("cuda").train()
    x = args_of(m, inputs(256, 2000, "cuda"))
    x["seq_BLD"].requires_grad_(True)
    out = m(**x)
    out.sum().backward()
    assert torch.isfinite(x["seq_BLD"].grad).all()


@pytest.mark.parametrize("name", ["tin", "din"])
def test_torch_compile_matches_eager(name):
    m = modules()[name].to("cuda").eval()
    x = inputs(16, 100, "cuda")
    torch.testing.assert_close(torch.compile(m)(**x), m(**x), rtol=1e-4, atol=1e-4)
