"""Cross-batch state declarations (tinrec/state.py): what a module declares is checked when the model is built."""

import pytest
import torch
from torch import nn

from tests.tinrec.stateful import EmaMemory
from tinrec import state


def test_declared_buffers_are_collected_with_their_reduction():
    (name, buf, how), = state.collect({"m": EmaMemory(dim=4)})
    assert (name, how, buf.shape) == ("m.memory_D", "mean", (4,))


@pytest.mark.parametrize("declared, message", [
    ({"memory": "mean"}, r"model\.interests\.m: Bad\.cross_batch_state\['memory'\]: no persistent buffer"),
    ({"scratch_D": "mean"}, r"model\.interests\.m: Bad\.cross_batch_state\['scratch_D'\]: no persistent buffer"),
    ({"memory_D": "median"}, r"reduction 'median', expected one of mean, sum, max, min"),
])
def test_a_bad_declaration_names_the_module(declared, message):
    class Bad(nn.Module):
        cross_batch_state = declared

        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("memory_D", torch.zeros(3))
            self.register_buffer("scratch_D", torch.zeros(3), persistent=False)  # not checkpointed: refused

    with pytest.raises(ValueError, match=message):
        state.collect({"m": Bad()})
