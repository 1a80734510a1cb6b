"""Before / after of the hot-path rewrites, side by side in one process (forward + backward, CPU).

    python -m benchmarks.hotpaths [--batch 64] [--seq-len 1000] [--threads 2] [--out benchmarks/results/hotpaths]

Each case runs the formulation tinrec used before (kept here as the reference the tests also check
against) and the current module code on the same random inputs, and reports the median time of a forward +
backward over ``--repeats`` runs after one warm-up:

- ``din_first_layer``: DIN's activation-unit first Linear on the concatenation [v, e, v - e, v ⊙ e]
  (a [B, L, 4D] tensor) vs the per-sample factorised matmul (``DIN.first_layer``).
- ``tin_pooling``: TIN's sum_i a_i (e_i ⊙ v) with the [B, L, D] product vs (sum_i a_i e_i) ⊙ v by bmm.
- ``gru_packed``: ``nn.GRU`` over a ``PackedSequence`` (CPU backward quadratic in L) vs the right-padded
  batch (``run_gru``).
- ``augru_indexing``: DIEN's AUGRU stepping with ``x[:, t]`` (quadratic backward) vs one ``unbind``.
- ``jagged_to_padded``: ``masked_scatter`` of jagged values into [B, L, D] vs the row ``index_copy``.
- ``causal_mask``: causal self-attention with an explicit [B, 1, L, L] mask vs SDPA's ``is_causal``.
- ``seq_scores``, ``seq_weighted_sum``, ``attention_pool``: a sequence's inner products with one vector per row
  (``bmm(S, r)``), its weighted sum (``bmm(w, S)``) and the softmax attention made of both, under autograd,
  vs ``modules/seqdot.py`` (the fast bmm orientation, outer-product gradients) and ``target_attention.attention_pool``
  (one fused backward).
- ``peg_strided``: PEG's per-user filters on an MSIA layer (K = 5, stride 4) as one grouped convolution vs one
  bmm of each output's window with its user's filter (``TCN._personal``).

``--host-memory cached`` caches host memory as training does (``train.host_memory``, ``tinrec/hostmem.py``): a
case's fresh large tensors are then not page-faulted in on every repeat, which is most of some "before" columns
under the default ``system`` (the recorded table's setting).

Writes ``<out>.json`` and ``<out>.md``. The quadratic "before" cases are measured at a shorter length
(``--quadratic-len``, default 500) so the run stays short; the table says which length each case ran at.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from typing import Callable, Dict, List

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _time(fn: Callable[[], torch.Tensor], repeats: int) -> float:
    fn().backward()
    times: List[float] = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn().backward()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def cases(B: int, L: int, Lq: int, D: int = 128) -> Dict[str, dict]:
    from tinrec.model import _padded, _slots
    from tinrec.modules import seqdot
    from tinrec.modules.dien import AUGRU
    from tinrec.modules.din import DIN
    from tinrec.modules.gru4rec import run_gru
    from tinrec.modules.masking import masked_softmax
    from tinrec.modules.target_attention import attention_pool
    from tinrec.modules.tcn import TCN
    from tinrec.modules.tin import TIN
    from tinrec.modules.transformer import TransformerBlock

    g = torch.Generator().manual_seed(0)
    seq = torch.randn(B, L, D, generator=g, requires_grad=True)
    q = torch.randn(B, D, generator=g, requires_grad=True)
    mask = torch.ones(B, L, dtype=torch.bool)
    out: Dict[str, dict] = {}

    din = DIN(dim=D)
    first = din.activation_unit.layers[0]

    def din_before():
        v = q.unsqueeze(1).expand_as(seq)
        return F.linear(torch.cat([v, seq, v - seq, v * seq], -1), first.weight, first.bias).sum()

    out["din_first_layer"] = {"L": L, "before": din_before, "after": lambda: din.first_layer(seq, q).sum()}

    tin = TIN(dim=D)

    def tin_before():
        w = torch.softmax((seq * q.unsqueeze(1)).sum(-1) / math.sqrt(D), dim=1)
        return (w.unsqueeze(-1) * (seq * q.unsqueeze(1))).sum(1).sum()

    out["tin_pooling"] = {"L": L, "before": tin_before,
                          "after": lambda: tin(seq_BLD=seq, mask_BL=mask, query_BD=q).sum()}

    H = 64
    xq = torch.randn(B, Lq, H, generator=g, requires_grad=True)
    lengths = torch.full((B,), Lq)
    gru = torch.nn.GRU(H, H, batch_first=True)
    mq = torch.ones(B, Lq, dtype=torch.bool)

    def gru_before():
        packed = pack_padded_sequence(xq, lengths, batch_first=True, enforce_sorted=False)
        o, h = gru(packed)
        return pad_packed_sequence(o, batch_first=True)[0].sum() + h.sum()

    def gru_after():
        o, h = run_gru(gru, xq, mq)
        return o.sum() + h.sum()

    out["gru_packed"] = {"L": Lq, "before": gru_before, "after": gru_after}

    augru = AUGRU(input_dim=H, hidden=H)
    att = torch.rand(B, Lq, generator=g, requires_grad=True)

    def augru_before():
        xp = augru.input_proj(xq)
        h = xq.new_zeros(B, H)
        for t in range(Lq):
            xr, xu, xn = xp[:, t].split(H, -1)
            hr, hu, hn = augru.hidden_proj(h).split(H, -1)
            r = torch.sigmoid(xr + hr)
            u = att[:, t:t + 1] * torch.sigmoid(xu + hu)
            h = torch.where(mq[:, t:t + 1], (1 - u) * h + u * torch.tanh(xn + r * hn), h)
        return h.sum()

    out["augru_indexing"] = {"L": Lq, "before": augru_before, "after": lambda: augru(xq, att, mq).sum()}

    lens = torch.randint(L // 2, L + 1, (B,), generator=g)
    vals = torch.randn(int(lens.sum()), D, generator=g, requires_grad=True)
    pmask = torch.arange(L)[None, :] < lens[:, None]
    slots = _slots(lens, L, vals.shape[0])
    out["jagged_to_padded"] = {
        "L": L, "before": lambda: vals.new_zeros(B, L, D).masked_scatter(pmask.unsqueeze(-1).expand(B, L, D),
                                                                         vals).sum(),
        "after": lambda: _padded(vals, slots, B, L).sum()}

    block = TransformerBlock(dim=64, num_heads=2, ffn_dim=64)
    xs = torch.randn(B, Lq, 64, generator=g, requires_grad=True)
    lens_q = torch.randint(Lq // 2, Lq + 1, (B,), generator=g)
    cmask = torch.arange(Lq)[None, :] < lens_q[:, None]

    def causal_before():
        import tinrec.modules.transformer as tr

        keep = tr.is_right_padded
        tr.is_right_padded = lambda m: False  # force the explicit [B, 1, L, L] mask
        try:
            return block(x_BLD=xs, mask_BL=cmask, causal=True).sum()
        finally:
            tr.is_right_padded = keep

    out["causal_mask"] = {"L": Lq, "before": causal_before,
                          "after": lambda: block(x_BLD=xs, mask_BL=cmask, causal=True).sum()}

    w = torch.randn(B, L, generator=g, requires_grad=True)
    out["seq_scores"] = {"L": L, "before": lambda: torch.bmm(seq, q.unsqueeze(-1)).square().sum(),
                         "after": lambda: seqdot.scores(seq, q).square().sum()}
    out["seq_weighted_sum"] = {"L": L, "before": lambda: torch.bmm(w.unsqueeze(1), seq).square().sum(),
                               "after": lambda: seqdot.weighted_sum(w, seq).square().sum()}

    def pool_before():
        s = torch.bmm(seq, q.unsqueeze(-1)).squeeze(-1)
        return torch.bmm(masked_softmax(s, mask).unsqueeze(1), seq).square().sum()

    out["attention_pool"] = {"L": L, "before": pool_before,
                             "after": lambda: attention_pool(seq, q, mask)[0].square().sum()}

    tcn = TCN(dim=D, context_length=2, stride=4, aggregation="replace", profile_dim=16)
    profile = torch.randn(B, 16, generator=g)

    def peg_before():
        w = tcn.filters(profile).reshape(B * D, D, tcn.kernel)
        return F.conv1d(seq.transpose(1, 2).reshape(1, B * D, L), w, stride=4, padding=2,
                        groups=B).view(B, D, -1).transpose(1, 2).square().sum()

    out["peg_strided"] = {"L": L, "before": peg_before,
                          "after": lambda: tcn._personal(seq, profile).square().sum()}
    return out


def main(argv=None) -> dict:
    from tinrec import hostmem

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seq-len", type=int, default=1000)
    ap.add_argument("--quadratic-len", type=int, default=500)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--host-memory", choices=hostmem.CHOICES, default="system")
    ap.add_argument("--cases", nargs="+", default=None, metavar="CASE", help="only these cases (default: all)")
    ap.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results", "hotpaths"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    hostmem.configure(args.host_memory)
    rows, load_before = [], os.getloadavg()[0]
    for name, c in cases(args.batch, args.seq_len, args.quadratic_len).items():
        if args.cases is not None and name not in args.cases:
            continue
        before, after = _time(c["before"], args.repeats), _time(c["after"], args.repeats)
        rows.append({"case": name, "L": c["L"], "before_s": before, "after_s": after, "speedup": before / after})
        print(f"[hotpaths] {name} L={c['L']}: {before:.3f} s -> {after:.3f} s ({before / after:.1f}x)",
              file=sys.stderr, flush=True)
    report = {"command": "python -m benchmarks.hotpaths " + " ".join(argv or sys.argv[1:]),
              "batch": args.batch, "threads": args.threads, "host_memory": args.host_memory, "torch": torch.__version__, "rows": rows,
              "load_average": [load_before, os.getloadavg()[0]], "cores": os.cpu_count()}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    from tinrec.results import write_json

    write_json(args.out + ".json", report)
    lines = ["| hot path | L | before (s) | after (s) | speed-up |", "|---|---|---|---|---|"]
    lines += [f"| {r['case']} | {r['L']} | {r['before_s']:.3f} | {r['after_s']:.3f} | {r['speedup']:.1f}x |"
              for r in rows]
    with open(args.out + ".md", "w") as f:
        f.write(f"`{report['command']}`: batch {args.batch}, {args.threads} threads, host memory {args.host_memory}, "
                f"forward + backward, median of "
                f"{args.repeats}; 1-minute load average {load_before:.1f} -> {os.getloadavg()[0]:.1f} on "
                f"{os.cpu_count()} cores (other jobs running make both columns slower alike).\n\n"
                + "\n".join(lines) + "\n")
    print("\n".join(lines))
    return report


if __name__ == "__main__":
    main()
