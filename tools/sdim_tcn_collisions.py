"""SDIM + TCN: how often the target collides with the behaviours as the SDIM backbone sees them (the TCN's output)
and as they were looked up (the same model's embeddings), per row, split by the rows' far-back ground truth; and
SDIM alone's collisions for comparison (docs/results/lifelong.md, "Three times the impressions").

    python tools/sdim_tcn_collisions.py SDIM_RUN SDIM_TCN_RUN [BATCHES]   (test rows in order, eval batches)
"""
import json
import sys

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


def main(sdim_run, tcn_run, batches=8):
    _, _, _, groups = truth(load_config(f"{sdim_run}/config.json").data.path)
    for run in (sdim_run, tcn_run):
        cfg, data, model = load(run)
        name = "cain" if "cain" in model.interest_modules() else "sdim"
        mod = model.interest_modules()[name]
        per = {"seen": [], "raw": [], "cos": []}
        with torch.no_grad():
            for b, batch in enumerate(_eval_stream(cfg, data, "test")):
                if b == batches:
                    break
                inp = model.module_inputs(batch)[name]
                seq, mask, q = inp["seq_BLD"], inp["mask_BL"], inp["query_BD"]
                if name == "cain":
                    s = mod.side_information(inp["side_BLF"].to(seq.dtype), mask)
                    cr, m = mod.tcns[0](seq_BLD=torch.cat([seq, s], -1), mask_BL=mask, profile_BP=inp.get("profile_BP"))
                    qq = q if mod.query_proj is None else mod.query_proj(q)
                    sd = mod.backbone
                    per["seen"].append(sd.collisions(cr, m, qq).sum((1, 2)).float())
                    per["raw"].append(sd.collisions(seq, mask, qq).sum((1, 2)).float())
                    cos = torch.nn.functional.cosine_similarity(cr, seq, dim=-1)
                    per["cos"].append((cos * mask).sum(1) / mask.sum(1).clamp_min(1))
                else:
                    per["seen"].append(mod.collisions(seq, mask, q).sum((1, 2)).float())
        n = sum(len(x) for x in per["seen"])
        res = {}
        for k, v in per.items():
            if not v:
                continue
            x = torch.cat(v).numpy()
            res[k] = {"all rows": round(float(x.mean()), 2),
                      **{g: round(float(x[m[:n]].mean()), 2) for g, m in groups.items()}}
        print(json.dumps({run: res}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], *(int(a) for a in sys.argv[3:]))
