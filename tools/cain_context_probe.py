"""What a trained model makes of the lifelong data's fading interests (docs/results/lifelong.md, "CAIN's Table 7
over 3 seeds"): on the test split, the impressions whose target is a persistent interest seen far back are split
by the ground truth into

- kept, active / kept, less active: the interest does not fade (the label's long-range term: +3), the user is
  active (activity bucket 3-5) or less active (bucket 1-2);
- faded, active: it fades, but the user is active: the term stays +3;
- faded, less active: it fades and the user is less active: the term is -1.5.

A model that reads the fading context (a watch-time drop after the far-back behaviours) and the user's activity
(PEG's profile) scores "faded, less active" below "kept, less active"; one that reads the activity alone (less
active users' far-back interests count less on average) scores both less active groups alike, below the active
ones. Printed: each group's mean logit minus that of "kept, active" (the label's own gaps: 0, 0, 0 and -4.5),
and the GAUC over the users with a far-back hit, where the ranking inside a user can turn on it.

Usage: python tools/cain_context_probe.py RUN_DIR [RUN_DIR ...]   (each run's config.json and latest checkpoint)
"""
import json
import sys

import numpy as np
import pyarrow.parquet as pq
import torch

from tinrec.analysis import _analysis_data, _load_trained, _split_scores
from tinrec.config import load_config
from tinrec.data.schema import read_meta, split_files
from tinrec.data.generate import logit_parts
from tinrec.metrics import gauc
from tinrec.model import build_model


def truth(path: str):
    meta = read_meta(path)
    cols = ["user_id", "target_category", "user_activity"]
    tables = [pq.read_table(f, columns=cols) for f in split_files(path, "test", meta)]
    users, cats, act = (np.concatenate([t.column(c).to_numpy() for t in tables]) for c in cols)
    gt = np.load(f"{path}/ground_truth.npz")
    hit_j = gt["persistent"][users] == cats[:, None]
    faded = (hit_j & gt["persistent_fading"][users]).any(1)
    parts = logit_parts(meta["generator"], "test")
    far = parts["long_range_without_context"] > 0
    groups = {"kept, active": far & ~faded & (act > 2), "kept, less active": far & ~faded & (act <= 2),
              "faded, active": far & faded & (act > 2), "faded, less active": far & faded & (act <= 2)}
    return users, parts["label"], parts["logit"], groups


def scores(run_dir: str) -> np.ndarray:
    cfg = load_config(f"{run_dir}/config.json")
    data = _analysis_data(cfg)
    model = build_model(cfg, data.rows, sparse_device=torch.device("cpu"))
    _load_trained(cfg, model, None)
    return _split_scores(cfg, data, model, "test")[0]


def main(*run_dirs: str) -> None:
    path = load_config(f"{run_dirs[0]}/config.json").data.path
    users, label, logit, groups = truth(path)
    with_hit = np.isin(users, users[np.any(list(groups.values()), axis=0)])
    for name in ["label's logit", *run_dirs]:  # each printed as soon as it is scored
        s = logit if name == "label's logit" else scores(name)
        base = s[groups["kept, active"]].mean()
        gaps = {g: round(float(s[m].mean() - base), 3) for g, m in groups.items()}
        print(json.dumps({"model": name, "gaps": gaps, "n": {g: int(m.sum()) for g, m in groups.items()},
                          "gauc_users_with_a_far_hit": round(gauc(s[with_hit], label[with_hit], users[with_hit]), 4),
                          "gauc": round(gauc(s, label, users), 4)}), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
