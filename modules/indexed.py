"""A padded behaviour sequence held as the batch's distinct embedding rows and an index into them.

At L = 2000 a batch's 512k behaviours look up far fewer distinct rows (``tinrec/dedup.py``), and writing every
occurrence into a dense [B, L, D] tensor is most of a long-sequence step: the write, then in backward a zero
[B, L, D] gradient and its sum back into the rows. A module that reads only some behaviours with gradient (a
top-k search: ETA, TWIN) or reads all of them only through a fixed linear map (SimHash: ETA, SDIM) does not need
that tensor. It declares the sequence arguments it can take in this form::

    class ETA(nn.Module):
        INDEXED_INPUTS = ("seq_BLD",)

and the input stage (``tinrec/model.py``, setting ``model.indexed_sequences``) hands those arguments an
:class:`IndexedSequence` instead of the tensor; everything else (a module's tests, CAIN's TCN output fed to a
backbone) still passes plain tensors. Such a module reads its sequence only through the functions here, which
take either form and agree on both up to float summation order:

- :func:`dense`: the [B, L, D] tensor (for a search without gradient: TWIN's GSU);
- :func:`gather`: rows ``idx_BK`` of each sequence, [B, K, D], with gradient to the rows they came from;
- :func:`project`: ``seq @ W`` [B, L, M] without gradient (hash codes), each distinct row projected once.

The behaviour at (b, l) is the concatenation over the F fields of ``rows_UD[index_BLF[b, l, f]]`` (D = F * d).
Padding positions point at some valid row (index 0): their values are finite rows, not zeros, so a module
masks them as it masks any padding (``masking.py``).
"""
# Shape legend: B batch, L sequence length (padded), U distinct rows, d row width, F fields, D = F * d, K kept,
# M projected width.
from typing import Union

import torch
from torch import Tensor


class IndexedSequence:
    """A [B, L, F * d] sequence as distinct rows [U, d] and an index [B, L, F] (int64) into them.

    Attributes:
        rows_UD: the distinct rows (the lookups' output: gradients reach the tables through it).
        index_BLF: row of each field of each behaviour.
        shape: (B, L, F * d), as the dense tensor's; ``dtype`` and ``device`` are the rows'.
    """

    def __init__(self, rows_UD: Tensor, index_BLF: Tensor) -> None:
        if rows_UD.dim() != 2 or index_BLF.dim() != 3 or index_BLF.dtype != torch.int64:
            raise ValueError(f"IndexedSequence: need rows [U, d] and an int64 index [B, L, F], got "
                             f"{tuple(rows_UD.shape)} and {tuple(index_BLF.shape)} {index_BLF.dtype}")
        if rows_UD.shape[0] == 0:  # no behaviour in the batch: one zero row for the padding to point at
            rows_UD = rows_UD.new_zeros(1, rows_UD.shape[1])
        self.rows_UD, self.index_BLF = rows_UD, index_BLF
        B, L, F = index_BLF.shape
        self.shape = torch.Size((B, L, F * rows_UD.shape[1]))
        self.dtype, self.device = rows_UD.dtype, rows_UD.device

    def dim(self) -> int:
        return 3

    def dense(self) -> Tensor:
        """The [B, L, F * d] tensor (one row gather)."""
        B, L, D = self.shape
        return self.rows_UD.index_select(0, self.index_BLF.reshape(-1)).view(B, L, D)

    def gather(self, idx_BK: Tensor) -> Tensor:
        """Behaviours ``idx_BK`` (positions in L) of each row, [B, K, F * d]: a gather of B * K * F rows, whose
        backward adds into those rows only."""
        B, K = idx_BK.shape
        F = self.index_BLF.shape[2]
        kept_BKF = torch.gather(self.index_BLF, 1, idx_BK.unsqueeze(-1).expand(B, K, F))
        return self.rows_UD.index_select(0, kept_BKF.reshape(-1)).view(B, K, self.shape[2])

    def project(self, weight_DM: Tensor) -> Tensor:
        """``dense() @ weight_DM`` without gradient, [B, L, M]: each distinct row times its field's block of
        the weight ([U, d] x [d, M] per field), then one gather of the projected rows and a sum over fields."""
        B, L, F = self.index_BLF.shape
        d, M = self.rows_UD.shape[1], weight_DM.shape[1]
        with torch.no_grad():
            proj_FUM = torch.matmul(self.rows_UD.detach(), weight_DM.reshape(F, d, M))  # [F, U, M]
            U = proj_FUM.shape[1]
            flat_BLF = self.index_BLF + torch.arange(F, device=self.index_BLF.device) * U
            picked = proj_FUM.view(F * U, M).index_select(0, flat_BLF.reshape(-1)).view(B, L, F, M)
            return picked[:, :, 0] if F == 1 else picked.sum(2)


Sequence = Union[Tensor, IndexedSequence]


def dense(seq_BLD: Sequence) -> Tensor:
    """The sequence as a [B, L, D] tensor (a tensor is returned as it is)."""
    return seq_BLD.dense() if isinstance(seq_BLD, IndexedSequence) else seq_BLD


def gather(seq_BLD: Sequence, idx_BK: Tensor) -> Tensor:
    """Rows ``idx_BK`` [B, K] (positions in L) of each sequence: [B, K, D], with gradient."""
    if isinstance(seq_BLD, IndexedSequence):
        return seq_BLD.gather(idx_BK)
    return torch.gather(seq_BLD, 1, idx_BK.unsqueeze(-1).expand(-1, -1, seq_BLD.shape[-1]))


def project(seq_BLD: Sequence, weight_DM: Tensor) -> Tensor:
    """``seq @ weight_DM`` [B, L, M], without gradient (for hash codes)."""
    if isinstance(seq_BLD, IndexedSequence):
        return seq_BLD.project(weight_DM)
    with torch.no_grad():
        return torch.matmul(seq_BLD.detach(), weight_DM)


def example(B: int, L: int, fields: int, width: int) -> IndexedSequence:
    """A zero sequence of this form (a model builder's dry run): rows [1, width / fields], index 0."""
    return IndexedSequence(torch.zeros(1, width // fields), torch.zeros(B, L, fields, dtype=torch.int64))
