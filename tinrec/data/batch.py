"""The training batch: a pipelineable container built entirely by the data loader."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List

import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor
from torchrec.streamable import Pipelineable


@dataclass
class Batch(Pipelineable):
    """One batch of impressions.

    Attributes:
        sparse: every id feature (``tinrec.features``), scalars with length 1, sequences with the number of
            kept behaviours; built by the loader, never inside ``forward`` (or the pipeline stops overlapping).
        labels: ``[B, T]`` float 0/1, one column per label (``data.labels``; T = 1 for one task).
        user_ids: ``[B]`` int64, the group key of GAUC.
        weights: ``[B]`` float, 1 for real samples and 0 for the padding batches that keep ranks in step.
        dense: dense values the inputs read (``tinrec/data/derived.py`` ``DENSE``): a sequence's flat ``[N]`` in
            the jagged order of its id features (same lengths), e.g. timestamps or session indices.
        lengths: ``[B]`` int64 kept behaviours per row, for each sequence (its mask and padding).
        source: where the rows came from (``"train/part-00000.parquet row group 3 (rows 12288-12543)"``),
            for error messages.
        truncated: rows of this batch whose history was longer than ``data.max_len`` (kept: the most recent).
    """

    sparse: KeyedJaggedTensor
    labels: torch.Tensor
    user_ids: torch.Tensor
    weights: torch.Tensor
    dense: Dict[str, torch.Tensor] = field(default_factory=dict)
    lengths: Dict[str, torch.Tensor] = field(default_factory=dict)
    source: str = ""
    truncated: int = 0

    def to(self, device: torch.device, non_blocking: bool = False) -> "Batch":
        return Batch(
            sparse=self.sparse.to(device=device, non_blocking=non_blocking),
            labels=self.labels.to(device=device, non_blocking=non_blocking),
            user_ids=self.user_ids.to(device=device, non_blocking=non_blocking),
            weights=self.weights.to(device=device, non_blocking=non_blocking),
            dense={k: v.to(device=device, non_blocking=non_blocking) for k, v in self.dense.items()},
            lengths={k: v.to(device=device, non_blocking=non_blocking) for k, v in self.lengths.items()},
            source=self.source, truncated=self.truncated,
        )

    def record_stream(self, stream: torch.Stream) -> None:
        self.sparse.record_stream(stream)
        self.labels.record_stream(stream)
        self.user_ids.record_stream(stream)
        self.weights.record_stream(stream)
        for v in list(self.dense.values()) + list(self.lengths.values()):
            v.record_stream(stream)

    def pin_memory(self) -> "Batch":
        return Batch(self.sparse.pin_memory(), self.labels.pin_memory(), self.user_ids.pin_memory(),
                     self.weights.pin_memory(), {k: v.pin_memory() for k, v in self.dense.items()},
                     {k: v.pin_memory() for k, v in self.lengths.items()}, self.source, self.truncated)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @staticmethod
    def dummy(keys: List[str], dense: List[str] = (), num_labels: int = 1) -> "Batch":
        """A one-sample batch of id 0 with empty sequences and weight 0 (keeps ranks' step counts equal)."""
        from tinrec.data.derived import integer_dense, sequences_of
        from tinrec.data.format import sequence_of

        def is_sequence(key: str) -> bool:
            return sequence_of(key) is not None

        lengths = torch.tensor([0 if is_sequence(k) else 1 for k in keys], dtype=torch.int32)
        values = torch.zeros(int(lengths.sum()), dtype=torch.int64)
        kjt = KeyedJaggedTensor.from_lengths_sync(keys=list(keys), values=values, lengths=lengths)
        values_of = {k: torch.zeros(0 if is_sequence(k) else 1, dtype=torch.int64 if integer_dense(k) else torch.float32)
                     for k in dense}
        return Batch(kjt, torch.zeros(1, num_labels), torch.zeros(1, dtype=torch.int64), torch.zeros(1), values_of,
                     {s: torch.zeros(1, dtype=torch.int64) for s in sequences_of(keys, dense)}, source="padding")

    def as_padding(self) -> "Batch":
        """This batch with every weight 0: computed, never counted."""
        return Batch(self.sparse, self.labels, self.user_ids, torch.zeros_like(self.weights), self.dense,
                     self.lengths, source="padding")
