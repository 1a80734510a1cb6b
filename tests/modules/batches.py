"""Random padded batches for the module tests (shared helpers)."""
# Shape legend: B batch, L history length (padded), D embedding width.
import torch

MIN = 60  # seconds


def make_batch(lengths, *, D, L=5, seed=0, time=False, query_time=True, negatives=False, timestamps=False):
    """Random seq/mask/query with the given history lengths (right-padded to ``L``), and optionally:

    - ``time``: the temporal encodings ``seq_time_BLD`` and, unless ``query_time=False`` (modules with no
      target position, such as SASRec and DSIN), ``query_time_BD``;
    - ``negatives``: ``neg_seq_BLD``, one sampled negative behaviour per position (DIEN);
    - ``timestamps``: ``timestamp_BL``, int64 seconds with gaps of 1 hour (probability 0.4) or 5 minutes.

    Draw order from the one generator: timestamps, seq, query, time encodings, negatives."""
    g = torch.Generator().manual_seed(seed)
    B = len(lengths)
    mask_BL = torch.arange(L).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    if timestamps:
        gaps_BL = torch.where(torch.rand(B, L, generator=g) < 0.4, 60 * MIN, 5 * MIN)
    batch = dict(
        seq_BLD=torch.randn(B, L, D, generator=g),
        mask_BL=mask_BL,
        query_BD=torch.randn(B, D, generator=g),
    )
    if time:
        batch["seq_time_BLD"] = torch.randn(B, L, D, generator=g)
        if query_time:
            batch["query_time_BD"] = torch.randn(B, D, generator=g)
    if negatives:
        batch["neg_seq_BLD"] = torch.randn(B, L, D, generator=g)
    if timestamps:
        batch["timestamp_BL"] = gaps_BL.cumsum(1)
    return batch


def with_garbage_padding(batch, *, extra=3, seed=1):
    """Same batch with large random values under padding and ``extra`` more padded positions.

    Every ``[B, L, ...]`` float tensor of the batch gets garbage under the new mask's padding, then every
    integer ``[B, L]`` tensor but the mask (ids, such as sessions) gets random ids in [-1, 3] there."""
    g = torch.Generator().manual_seed(seed)
    B, L = batch["mask_BL"].shape
    mask_BL = torch.cat([batch["mask_BL"], torch.zeros(B, extra, dtype=torch.bool)], dim=1)
    out = dict(batch, mask_BL=mask_BL)
    for key, value in batch.items():
        if key.endswith("_BLD") and value is not None:
            garbage = torch.randn(B, L + extra, value.shape[-1], generator=g) * 1e4
            padded = torch.cat([value, garbage[:, L:]], dim=1)
            out[key] = torch.where(mask_BL.unsqueeze(-1), padded, garbage)
    for key, value in batch.items():
        if key.endswith("_BL") and key != "mask_BL" and value is not None and not value.is_floating_point():
            garbage = torch.randint(-1, 4, (B, L + extra), generator=g)
            padded = torch.cat([value, garbage[:, L:]], dim=1)
            out[key] = torch.where(mask_BL, padded, garbage)
    return out
