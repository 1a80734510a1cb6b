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

With ``--pyramid`` (a CAIN run on LAP with one TCN layer and watch time as its side information): where the
drops go inside the model, per group, on the first ``--batches`` test batches: the mean centred log watch time of
the behaviour after each attended one, weighted by the coarse level's attention (over all L), by the mid level's
(over its top k1), and unweighted over the fine level's kept k2 (the behaviours the FSA reads); the attention
mass of the coarse level's top 20; the norms of the first TCN layer's side taps by offset (the tap just after the
centre writes the drop after a behaviour into it); and whether the drops reach the tower's input: a logistic
regression (5-fold, on the impressions with a far-back hit) telling faded interests from kept ones from CAIN's
output, once as trained and once with every watch time made the same (the drops removed).

With ``--headroom``: what each part of the ground truth would still be worth on top of a model's test scores, as
the best logloss shifts (a grid of 0.25) of its logits: one shift for every far-back hit (what the backbone could
still learn without any context), one for kept and one for faded hits (what reading the drops could add without
the profile: the + TCN row), and a further one for faded hits of less active users (what PEG or the profile
could add); test AUC, GAUC and logloss after each.

Usage: python tools/cain_context_probe.py RUN_DIR [RUN_DIR ...]   (each run's config.json and latest checkpoint)
       python tools/cain_context_probe.py --pyramid [--batches N] RUN_DIR
       python tools/cain_context_probe.py --headroom RUN_DIR [RUN_DIR ...]
"""
import json

import numpy as np
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F

from tinrec.analysis import _analysis_data, _eval_stream, _load_trained, _split_scores
from tinrec.config import load_config
from tinrec.data.schema import read_meta, split_files
from tinrec.data.generate import logit_parts
from tinrec.metrics import auc, gauc
from tinrec.model import build_model
from tinrec.modules.masking import masked_softmax, masked_topk


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


def headroom(*run_dirs: str) -> None:
    users, label, _, groups = truth(load_config(f"{run_dirs[0]}/config.json").data.path)
    kept = groups["kept, active"] | groups["kept, less active"]
    faded = groups["faded, active"] | groups["faded, less active"]
    faded_less = groups["faded, less active"].astype(np.float64)
    grid = np.arange(-3.0, 3.01, 0.25)

    def logloss(x):
        return float(np.mean(np.logaddexp(0.0, x) - label * x))

    for run_dir in run_dirs:
        s = scores(run_dir)
        rows = {"as trained": s}
        a = min(grid, key=lambda a: logloss(s + a * (kept | faded)))
        rows[f"+ {a} on every far-back hit"] = s + a * (kept | faded)
        a, b = min(((a, b) for a in grid for b in grid), key=lambda ab: logloss(s + ab[0] * kept + ab[1] * faded))
        split = s + a * kept + b * faded
        rows[f"+ {a} on kept, {b} on faded hits"] = split
        c = min(np.arange(-6.0, 0.01, 0.25), key=lambda c: logloss(split + c * faded_less))
        rows[f"and {c} on a less active user's faded hits"] = split + c * faded_less
        for name, x in rows.items():
            print(json.dumps({"model": run_dir, "scores": name, "auc": round(auc(x, label), 4),
                              "gauc": round(gauc(x, label, users), 4), "logloss": round(logloss(x), 4)}), flush=True)


def _gather(x, idx):
    return torch.gather(x, 1, idx if x.dim() == 2 else idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def pyramid(run_dir: str, batches: int = 20) -> None:
    cfg = load_config(f"{run_dir}/config.json")
    data = _analysis_data(cfg)
    model = build_model(cfg, data.rows, sparse_device=torch.device("cpu"))
    _load_trained(cfg, model, None)
    _, _, _, groups = truth(cfg.data.path)
    cain = model.interest_modules()["cain"]
    tcn, lap = cain.tcns[0], cain.backbone
    if cain.side_dim != 1 or not hasattr(lap, "coarse"):
        raise ValueError(f"--pyramid: {run_dir} is not CAIN on LAP with one side channel (watch time)")
    got = {k: [] for k in ("coarse", "mid", "fine", "coarse top-20 mass")}
    out, out_flat = [], []
    with torch.no_grad():
        for b, batch in enumerate(_eval_stream(cfg, data, "test")):  # test rows in order, as truth() reads them
            if b == batches:
                break
            inp = model.module_inputs(batch)["cain"]
            seq_BLD, mask_BL, query_BD = inp["seq_BLD"], inp["mask_BL"], inp["query_BD"]
            s_BL1 = cain.side_information(inp["side_BLF"].to(seq_BLD.dtype), mask_BL)  # as CAIN.forward reads it
            cr_BLD, m_BL = tcn(seq_BLD=torch.cat([seq_BLD, s_BL1], -1), mask_BL=mask_BL, profile_BP=inp.get("profile_BP"))
            q_BD = query_BD if cain.query_proj is None else cain.query_proj(query_BD)
            after_BL = torch.cat([s_BL1[:, 1:, 0], torch.zeros_like(s_BL1[:, :1, 0])], 1)  # the next behaviour's
            _, s1_BL = lap.coarse(cr_BLD, m_BL, q_BD)
            a1_BL = masked_softmax(s1_BL, m_BL)
            i1_BK, kept1_BK = masked_topk(s1_BL, m_BL, lap.coarse_k)
            _, s2_BK = lap.mid(_gather(cr_BLD, i1_BK), kept1_BK, q_BD)
            j_BK, kept2_BK = masked_topk(s2_BK, kept1_BK, lap.fine_k)
            fine_BK = _gather(after_BL, _gather(i1_BK, j_BK)) * kept2_BK
            got["coarse"].append((a1_BL * after_BL).sum(1))
            got["mid"].append((masked_softmax(s2_BK, kept1_BK) * _gather(after_BL, i1_BK)).sum(1))
            got["fine"].append(fine_BK.sum(1) / kept2_BK.sum(1).clamp_min(1))
            got["coarse top-20 mass"].append(a1_BL.topk(min(20, a1_BL.shape[1]), dim=1).values.sum(1))
            out.append(cain(**inp))
            out_flat.append(cain(**{**inp, "side_BLF": torch.full_like(inp["side_BLF"], 30.0)}))
    got = {k: torch.cat(v).numpy() for k, v in got.items()}
    n = len(next(iter(got.values())))
    groups = {**groups, "no far-back hit": ~np.any(list(groups.values()), axis=0)}
    for g, m in groups.items():
        m = m[:n]
        print(json.dumps({"group": g, "n": int(m.sum()), **{k: round(float(v[m].mean()), 3) for k, v in got.items()}}))
    w = tcn.weight.detach()  # [out, D + 1, 2 cl + 1]: the side channel is the last input
    print(json.dumps({"side tap norms, offsets -cl..cl": [round(float(w[:, -1, t].norm()), 3) for t in range(w.shape[2])]}))
    far = np.any([groups[g][:n] for g in ("kept, active", "kept, less active", "faded, active", "faded, less active")], 0)
    faded = (groups["faded, active"] | groups["faded, less active"])[:n][far]
    for name, x in (("as trained", out), ("watch times all alike", out_flat)):
        x = torch.cat(x).numpy()[far]
        print(json.dumps({"faded vs kept from CAIN's output, 5-fold AUC": name, "n": int(far.sum()),
                          "auc": round(auc(_cross_validated_logits(x, faded), faded), 3)}))


def _cross_validated_logits(x: np.ndarray, y: np.ndarray, folds: int = 5, l2: float = 1e-2) -> np.ndarray:
    """Out-of-fold logits of an L2-regularised logistic regression on standardised x (LBFGS)."""
    z = torch.tensor((x - x.mean(0)) / (x.std(0) + 1e-6), dtype=torch.float32)
    t = torch.tensor(y, dtype=torch.float32)
    order = np.random.default_rng(0).permutation(len(y))
    logits = np.zeros(len(y))
    for f in range(folds):
        test = order[f::folds]
        train = np.setdiff1d(order, test)
        w = torch.zeros(z.shape[1], requires_grad=True)
        b = torch.zeros(1, requires_grad=True)
        opt = torch.optim.LBFGS([w, b], max_iter=200)

        def loss():
            opt.zero_grad()
            value = F.binary_cross_entropy_with_logits(z[train] @ w + b, t[train]) + l2 * (w * w).sum()
            value.backward()
            return value

        opt.step(loss)
        logits[test] = (z[test] @ w + b).detach().numpy()
    return logits


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="What a trained model makes of the fading interests (see above).")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--pyramid", action="store_true", help="where the drops go inside CAIN on LAP (one run)")
    mode.add_argument("--headroom", action="store_true", help="what each part of the ground truth is still worth")
    parser.add_argument("--batches", type=int, default=20, help="--pyramid: test batches read")
    parser.add_argument("run_dirs", nargs="+")
    args = parser.parse_args()
    if args.pyramid:
        if len(args.run_dirs) != 1:
            parser.error("--pyramid reads one run")
        pyramid(args.run_dirs[0], args.batches)
    elif args.headroom:
        headroom(*args.run_dirs)
    else:
        main(*args.run_dirs)
