"""SDIM + TCN: how often the target collides with the behaviours as the SDIM backbone sees them (the TCN's output
against the target as the backbone reads it: with ``query_as_behaviour`` the first layer's output for it) and as
they were looked up (the same model's embeddings on both sides), per row, split by the rows' far-back ground
truth; and SDIM alone's collisions for comparison (docs/results/lifelong.md, "The planted behaviours lose their
collisions").

Besides the collisions per row (``all``: every behaviour), on the rows whose target is a persistent interest seen
far back: the collision rate (collisions per behaviour and group) of the planted far-back behaviours (the user's
items of that interest, ground_truth.npz ``persistent_items``) and of every other behaviour, and the planted
behaviours' share of the row's collisions (how much of SDIM's bucket sums is the signal).

    python tools/sdim_tcn_collisions.py SDIM_RUN SDIM_TCN_RUN [BATCHES]   (test rows in order, eval batches)
"""
import json
import sys

import numpy as np
import torch

sys.path.insert(0, "tools")
from cain_context_probe import truth  # noqa: E402
from tinrec.analysis import _analysis_data, _eval_stream, _load_trained  # noqa: E402
from tinrec.config import load_config  # noqa: E402
from tinrec.model import build_model  # noqa: E402


def load(run_dir):
    cfg = load_config(f"{run_dir}/config.json")
    data = _analysis_data(cfg)
    model = build_model(cfg, data.rows, sparse_device=torch.device("cpu"))
    _load_trained(cfg, model, None)
    return cfg, data, model.eval()


def planted_mask(batch, gt, L):
    """[B, L] bool: the behaviour is one of the user's items of the persistent interest the target belongs to."""
    users = batch.sparse["user_id"].values().numpy()
    cat = batch.sparse["target_category"].values().numpy()
    kjt = batch.sparse["hist_item"]
    items = np.zeros((len(users), L), dtype=np.int64)
    for b, row in enumerate(torch.split(kjt.values(), kjt.lengths().tolist())):
        items[b, :len(row)] = row.numpy()
    own = gt["persistent_items"][users]                         # [B, interests, items]
    hit = gt["persistent"][users] == cat[:, None]               # [B, interests]
    wanted = np.where(hit[:, :, None], own, -1).reshape(len(users), -1)
    return torch.from_numpy((items[:, :, None] == wanted[:, None, :]).any(-1) & (items > 0))


def rates(c_BLG, mask_BL, planted_BL):
    """Per row: collisions in all; collision rate of the planted behaviours and of the others; planted share."""
    per_l = c_BLG.sum(-1).float()                               # [B, L] groups in which each behaviour collides
    G = c_BLG.shape[-1]
    other = mask_BL & ~planted_BL
    return {"all": per_l.sum(1),
            "planted rate": (per_l * planted_BL).sum(1) / (planted_BL.sum(1) * G).clamp_min(1),
            "other rate": (per_l * other).sum(1) / (other.sum(1) * G).clamp_min(1),
            "planted share": (per_l * planted_BL).sum(1) / per_l.sum(1).clamp_min(1)}


def main(sdim_run, tcn_run, batches=8):
    path = load_config(f"{sdim_run}/config.json").data.path
    _, _, _, groups = truth(path)
    far = np.any(list(groups.values()), axis=0)
    gt = np.load(f"{path}/ground_truth.npz")
    for run in (sdim_run, tcn_run):
        cfg, data, model = load(run)
        name = "cain" if "cain" in model.interest_modules() else "sdim"
        mod = model.interest_modules()[name]
        per = {}
        with torch.no_grad():
            for b, batch in enumerate(_eval_stream(cfg, data, "test")):
                if b == batches:
                    break
                inp = model.module_inputs(batch)[name]
                seq, mask, q = inp["seq_BLD"], inp["mask_BL"], inp["query_BD"]
                planted = planted_mask(batch, gt, mask.shape[1]) & mask
                views = {}
                if name == "cain":
                    s = mod.side_information(inp["side_BLF"].to(seq.dtype), mask)
                    cr, m = mod.tcns[0](seq_BLD=torch.cat([seq, s], -1), mask_BL=mask, profile_BP=inp.get("profile_BP"))
                    qq = mod.backbone_query(q, inp.get("profile_BP"))
                    views["seen (TCN output)"] = mod.backbone.collisions(cr, m, qq)
                    raw_q = q if mod.query_proj is None else mod.query_proj(q)  # the target as looked up too
                    views["looked up"] = mod.backbone.collisions(seq, mask, raw_q)
                    cos = torch.nn.functional.cosine_similarity(cr, seq, dim=-1)
                    per.setdefault("cos", []).append((cos * mask).sum(1) / mask.sum(1).clamp_min(1))
                else:
                    views["seen"] = mod.collisions(seq, mask, q)
                for view, c in views.items():
                    for k, v in rates(c, mask, planted).items():
                        per.setdefault((view, k), []).append(v)
        n = sum(len(x) for x in per[next(iter(per))])
        res = {}
        for key, v in per.items():
            x = torch.cat(v).numpy()
            if key == "cos" or key[1] == "all":
                res[" ".join(key) if key != "cos" else key] = {
                    "all rows": round(float(x.mean()), 3),
                    **{g: round(float(x[m[:n]].mean()), 3) for g, m in groups.items()}}
            else:  # planted rates: only rows with a far-back hit
                res[" ".join(key)] = round(float(x[far[:n]].mean()), 4)
        print(json.dumps({run: res}, indent=1), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], *(int(a) for a in sys.argv[3:]))
