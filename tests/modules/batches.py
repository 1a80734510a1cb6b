"""Random padded batches for the module tests (shared helpers)."""
# Shape legend: B batch, L history length (padded), D embedding width.
import torch


def make_batch(lengths, *, D, L=5, seed=0, time=False):
    """Random seq/mask/query (and temporal encodings if ``time``) with the given history lengths."""
    g = torch.Generator().manual_seed(seed)
    B = len(lengths)
    batch = dict(
        seq_BLD=torch.randn(B, L, D, generator=g),
        mask_BL=torch.arange(L).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1),
        query_BD=torch.randn(B, D, generator=g),
    )
    if time:
        batch.update(seq_time_BLD=torch.randn(B, L, D, generator=g), query_time_BD=torch.randn(B, D, generator=g))
    return batch


def with_garbage_padding(batch, *, extra=3, seed=1):
    """Same batch with large random values under padding and ``extra`` more padded positions.

    Every ``[B, L, ...]`` float tensor of the batch gets garbage under the new mask's padding."""
    g = torch.Generator().manual_seed(seed)
    B, L = batch["mask_BL"].shape
    mask_BL = torch.cat([batch["mask_BL"], torch.zeros(B, extra, dtype=torch.bool)], dim=1)
    out = dict(batch, mask_BL=mask_BL)
    for key, value in batch.items():
        if key.endswith("_BLD") and value is not None:
            garbage = torch.randn(B, L + extra, value.shape[-1], generator=g) * 1e4
            padded = torch.cat([value, garbage[:, L:]], dim=1)
            out[key] = torch.where(mask_BL.unsqueeze(-1), padded, garbage)
    return out
