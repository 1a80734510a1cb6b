"""What a trained DUMN's memories give each sample: the read weights' entropy (as a share of log m; 1 =
uniform), the spread of the read vectors r across a batch (std over samples / mean |r|; 0 = every sample reads
the same vector), and test AUC with the reads as they are, replaced by their batch mean (no per-sample
information), and zeroed. docs/results/dumn.md, "The memories".

Usage: python tools/dumn_memory_probe.py CONFIG RUN_DIR [key=value ...]   (the run's config and overrides)
"""
import math
import sys

import numpy as np
import torch

from tinrec.analysis import _analysis_data, _load_trained, _split_scores
from tinrec.config import load_config
from tinrec.metrics import auc
from tinrec.model import build_model
from tinrec.modules import dumn


def main(config: str, run_dir: str, *overrides: str) -> None:
    cfg = load_config(config, [f"run_dir={run_dir}", *overrides])
    data = _analysis_data(cfg)
    model = build_model(cfg, data.rows, sparse_device=torch.device("cpu"))
    _load_trained(cfg, model, None)
    mode, entropy, spread = ["as is"], [], []
    plain_read = dumn.DUMN.read

    def read(self, key_BZ, memory_MZ, beta_B=None):
        w_BM, r_BZ = plain_read(self, key_BZ, memory_MZ, beta_B)
        entropy.append(float((-(w_BM * (w_BM + 1e-12).log()).sum(-1) / math.log(w_BM.shape[-1])).mean()))
        spread.append(float(r_BZ.std(0).mean() / (r_BZ.abs().mean() + 1e-12)))
        if mode[0] == "batch mean":
            r_BZ = r_BZ.mean(0, keepdim=True).expand_as(r_BZ)
        elif mode[0] == "zero":
            r_BZ = torch.zeros_like(r_BZ)
        return w_BM, r_BZ

    dumn.DUMN.read = read
    for m in ("as is", "batch mean", "zero"):
        mode[0] = m
        entropy.clear()
        spread.clear()
        scores, labels = _split_scores(cfg, data, model, "test")
        print(f"reads {m}: test AUC {auc(scores, labels):.4f}, read entropy / "
              f"log m {np.mean(entropy):.3f}, read spread {np.mean(spread):.3f}")


if __name__ == "__main__":
    main(*sys.argv[1:])
