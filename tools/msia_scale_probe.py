"""Can MSIA's strided layers learn context beyond the first layer's reach? (docs/results/lifelong.md, "Context at a
second scale"). A model-side check, apart from the lifelong data's budget (one epoch of 80k impressions).

Synthetic rows, plain torch (no TorchRec): L behaviours of C categories, a target category, and ``hits`` behaviours
of the target's category at random positions. Half of the rows are "faded": each hit is followed, ``lag``
behaviours later (more recent), by a sharp watch-time drop (x 0.1) w.p. 0.8; every behaviour besides drops w.p.
0.05. The label is Bernoulli(sigmoid(+3)) for a kept row and Bernoulli(sigmoid(-3)) for a faded one, so the only
way above AUC 0.5 is to read the drops after the behaviours that match the target. The model is
``configs/lifelong/cain.yaml``'s CAIN (LAP backbone, first layer context length 7 reading its neighbours' watch
times, identity start, later layers kernel 5 stride 4) on learned embeddings, with a small MLP read-out; trained
with Adam, then scored on fresh rows. For each lag and layer count: held-out AUC. ``--random-init``: the paper's
TCN instead (random filters, the first layer mixing its neighbours' content too); ``--later-random``: the first
layer as configured, the later layers with random filters.

Usage: python tools/msia_scale_probe.py [--lags 1 8] [--layers 1 2 4] [--steps 600] [--seed 0]
       [--random-init | --later-random] [--content-context on|off]
"""
import argparse
import json
from typing import Optional

import numpy as np
import torch
from torch import nn

from tinrec.metrics import auc
from tinrec.modules.cain import CAIN


def rows(rng: np.random.Generator, n: int, *, L: int, C: int, hits: int, lag: int):
    cat = rng.integers(1, C + 1, (n, L))
    target = rng.integers(1, C + 1, n)
    pos = np.stack([rng.choice(L - lag, hits, replace=False) for _ in range(n)])  # hits, each with room for its lag
    cat[np.arange(n)[:, None], pos] = target[:, None]
    faded = rng.random(n) < 0.5
    watch = rng.lognormal(np.log(30.0), 0.5, (n, L))
    drop = rng.random((n, L)) < 0.05
    watch[drop] *= 0.1
    after = pos + lag
    keep_drop = faded[:, None] & (rng.random((n, hits)) < 0.8)
    r, c = np.nonzero(keep_drop)
    watch[r, after[r, c]] *= 0.1
    label = (rng.random(n) < 1.0 / (1.0 + np.exp(np.where(faded, 3.0, -3.0)))).astype(np.float32)
    return (torch.from_numpy(cat), torch.from_numpy(target), torch.from_numpy(watch).float(),
            torch.from_numpy(label), faded)


class Probe(nn.Module):
    def __init__(self, *, C: int, dim: int, layers: int, L: int, identity_init: bool = True,
                 later_random: bool = False, content_context: Optional[bool] = None):
        super().__init__()
        self.emb = nn.Embedding(C + 1, dim)
        nn.init.uniform_(self.emb.weight, -1.0, 1.0)  # the lifelong configs' init_max: 1.0
        args = dict(dim=dim, backbone="lap", backbone_args={"coarse_k": L // 4, "fine_k": L // 16, "heads": 2,
                                                             "tied_init": True},
                    layers=layers, context_length=7, later_context_length=2, stride=4, side_dim=1, side_relative=True,
                    content_context=not identity_init if content_context is None else content_context)
        self.cain = CAIN(**args, identity_init=identity_init)
        if later_random:  # the first layer as configured, the later ones as the paper's (TCN's random start)
            for tcn in self.cain.tcns[1:]:
                bound = 1.0 / (tcn.dim * tcn.kernel) ** 0.5
                nn.init.uniform_(tcn.weight, -bound, bound)
                nn.init.uniform_(tcn.bias, -bound, bound)
        self.out = nn.Sequential(nn.Linear(self.cain.output_dim + dim, 32), nn.ReLU(), nn.Linear(32, 1))

    def forward(self, cat, target, watch):
        q = self.emb(target)
        h = self.cain(seq_BLD=self.emb(cat), mask_BL=torch.ones_like(cat, dtype=torch.bool), query_BD=q,
                      side_BLF=watch)
        return self.out(torch.cat([h, q], -1)).squeeze(-1)


def run(*, lag: int, layers: int, steps: int, seed: int, L: int = 256, C: int = 32, hits: int = 4, dim: int = 16,
        batch: int = 256, identity_init: bool = True, later_random: bool = False,
        content_context: Optional[bool] = None) -> float:
    torch.manual_seed(seed)
    rng = np.random.default_rng([seed, lag])
    model = Probe(C=C, dim=dim, layers=layers, L=L, identity_init=identity_init, later_random=later_random,
                  content_context=content_context)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        cat, target, watch, label, _ = rows(rng, batch, L=L, C=C, hits=hits, lag=lag)
        loss = nn.functional.binary_cross_entropy_with_logits(model(cat, target, watch), label)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    test = rows(np.random.default_rng([seed, lag, 1]), 4096, L=L, C=C, hits=hits, lag=lag)
    with torch.no_grad():
        scores = model(*test[:3])
    return float(auc(scores.numpy(), test[3].numpy()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lags", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--layers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--random-init", action="store_true",
                    help="the paper's TCN: random filters, content context in the first layer (no identity start)")
    ap.add_argument("--content-context", choices=["on", "off"], default=None,
                    help="the first layer mixes its neighbours' content (on) or reads only their watch times (off); "
                         "default: off with the identity start, on with --random-init")
    ap.add_argument("--later-random", action="store_true",
                    help="the first layer starts as the identity, the later (MSIA) layers with random filters")
    args = ap.parse_args()
    for lag in args.lags:
        for layers in args.layers:
            test_auc = run(lag=lag, layers=layers, steps=args.steps, seed=args.seed,
                           identity_init=not args.random_init, later_random=args.later_random,
                           content_context=None if args.content_context is None else args.content_context == "on")
            init = "random" if args.random_init else "identity, later random" if args.later_random else "identity"
            context = args.content_context or ("on" if args.random_init else "off")
            print(json.dumps({"lag": lag, "layers": layers, "steps": args.steps, "seed": args.seed, "init": init,
                              "content_context": context, "test_auc": round(test_auc, 4)}), flush=True)


if __name__ == "__main__":
    main()
