"""The tinrec side of the benchmark: one real (tiny) measurement, and the table's ratios from a report."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from benchmarks.run import table

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.integration
def test_one_point_through_torchrec_and_module_alone():
    cmd = [sys.executable, "-m", "benchmarks.tinrec_bench", "--model", "din", "--seq-len", "12", "--batch", "8",
           "--steps", "2", "--warmup", "1", "--threads", "1", "--num-items", "500", "--num-categories", "20"]
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert r["model"] == "din" and r["seq_len"] == 12 and r["batch"] == 8 and r["threads"] == 1
    assert "model.embeddings.main.item.dim=64" in r["overrides"]
    # item 64 + category 64 per behaviour; training moves 5 x 4 bytes per value, inference 2 x 4
    assert r["lookup_bytes"] == {"per_behaviour_width": 128, "train": 5 * 4 * 128 * 12, "infer": 2 * 4 * 128 * 12,
                                 "train_sequence_tensor": 2 * 4 * 128 * 12}
    for key in ("torchrec_train", "torchrec_infer", "module_train", "module_infer"):
        assert r[key]["steps"] == 2 and r[key]["samples_per_s"] == pytest.approx(8 / r[key]["step_s_median"])
    assert r["peak_rss_mib"] > 100
    # the path that ran: CPU (CUDA hidden even on a GPU machine), fbgemm's fused CPU kernels
    assert r["path"]["device"] == "cpu" and r["path"]["fused_kernels_on_device"] == "yes"
    assert "fbgemm-gpu" in r["path"]["fbgemm"]


@pytest.mark.integration
def test_the_expert_backbone_point_runs_the_production_layout_on_200_id_families():
    """``hetero``: configs/production/hetero_experts.yaml's model with every table sized by the synthetic data,
    which carries the 200 id families its field stacks read."""
    from benchmarks.synthetic import extra_ids

    cmd = [sys.executable, "-m", "benchmarks.tinrec_bench", "--model", "hetero", "--seq-len", "12", "--batch", "8",
           "--steps", "1", "--warmup", "1", "--threads", "1", "--num-items", "500", "--num-categories", "20",
           "--no-module"]
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert r["extra_fields"] == 200 and r["torchrec_train"]["samples_per_s"] > 0 and r["overrides"] == []
    ids = extra_ids(8, {"user": 100, "ctx": 40}, 1000)
    assert len(ids) == 140 and all(1 <= v.min() and v.max() <= 999 for v in ids.values())
    assert not np.array_equal(ids["user_f000"], ids["user_f001"])  # one stream per column
    assert np.array_equal(ids["ctx_f007"], extra_ids(8, {"user": 100, "ctx": 40}, 1000)["ctx_f007"])


@pytest.mark.integration
def test_cain_lifelong_reads_the_synthetic_watch_times_as_side_information():
    """``cain_lifelong``: configs/lifelong/cain.yaml's first layer (watch times beside the behaviours, content
    through the centre tap only) on the benchmark's data, whose watch times are a function of the batch."""
    from benchmarks.models import MODELS

    assert "model.inputs.watch={dense: hist_watch_time}" in MODELS["cain_lifelong"].resolved(64)
    cmd = [sys.executable, "-m", "benchmarks.tinrec_bench", "--model", "cain_lifelong", "--seq-len", "12",
           "--batch", "8", "--steps", "1", "--warmup", "1", "--threads", "1", "--num-items", "500",
           "--num-categories", "20"]
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert r["torchrec_train"]["samples_per_s"] > 0 and "model.interests.cain.side_dim=1" in r["overrides"]


@pytest.mark.integration
@pytest.mark.parametrize("model", ["dei2n", "dmin_tra"])
def test_the_trigger_models_run_a_point_with_the_latest_behaviour_as_trigger(model):
    """``dei2n`` and ``dmin_tra`` (issue 16): the synthetic data carries a trigger (the latest behaviour) and a
    page; both paths run, DEI2N's trigger-category sub-sequence holds at least that behaviour."""
    cmd = [sys.executable, "-m", "benchmarks.tinrec_bench", "--model", model, "--seq-len", "12", "--batch", "8",
           "--steps", "1", "--warmup", "1", "--threads", "1", "--num-items", "500", "--num-categories", "20"]
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert r["torchrec_train"]["samples_per_s"] > 0 and r["module_train"]["samples_per_s"] > 0
    if model == "dei2n":
        assert r["searched_per_sample"]["hard"] >= 1


def test_steps_are_timed_between_two_device_syncs():
    from benchmarks.tinrec_bench import _median_rate

    events = []
    r = _median_rate(lambda: events.append("step"), 8, warmup=1, steps=2, sync=lambda: events.append("sync"))
    assert events == ["step", "sync", "step", "sync", "sync", "step", "sync"] and r["steps"] == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_a_gpu_says_so():
    cmd = [sys.executable, "-m", "benchmarks.tinrec_bench", "--model", "din", "--seq-len", "12", "--device", "cuda"]
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert p.returncode != 0 and "--device cuda: torch sees no CUDA device" in p.stderr


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_one_point_on_the_gpu():
    from benchmarks.tinrec_bench import has_fused_kernels

    if not has_fused_kernels("cuda"):
        pytest.skip("fbgemm-gpu without CUDA kernels (the CPU build): TorchRec's fused path cannot run on the GPU")
    cmd = [sys.executable, "-m", "benchmarks.tinrec_bench", "--model", "din", "--seq-len", "12", "--batch", "8",
           "--steps", "2", "--warmup", "1", "--num-items", "500", "--num-categories", "20", "--device", "cuda"]
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert r["path"]["device"].startswith("cuda") and r["path"]["fused_kernels_on_device"] == "yes"
    assert r["peak_cuda_mib"] > 0 and r["module_train"]["samples_per_s"] > 0


def _point(model, L, sps, peers=None):
    rate = {"samples_per_s": sps, "step_s_median": 256 / sps, "step_s_min": 256 / sps, "steps": 3}
    return {"model": model, "seq_len": L, "torchrec_train": rate, "torchrec_infer": rate, "module_train": rate,
            "peak_rss_mib": 1000.0, "lookup_bytes": {"train": 10**6, "infer": 4 * 10**5, "train_sequence_tensor": 4 * 10**5},
            "peers": peers or {}}


def test_table_ratios_floor_and_flags():
    report = {"bandwidth_bytes_per_s": 10**10, "results": [
        _point("din", 2000, 120.0, {"deepctr": {"train_samples_per_s": 20.0}, "rechub": {"train_samples_per_s": 30.0},
                                    "deepctr+cached": {"train_samples_per_s": 40.0}}),
        _point("bst", 50, 50.0, {"rechub": {"error": "exit 1"}}),
        {"model": "dien", "seq_len": 2000, "error": "exit -9: killed"},
        dict(_point("sdim", 2000, 480.0), peak_rss_mib=1500.0)]}
    rows = table(report).splitlines()[2:]
    din = rows[0].split(" | ")
    assert din[6] == "1.00x / 1.00x"  # DIN is the reference
    assert din[7] == "30 (rechub)" and din[8] == "4.00x"  # best peer as shipped, and tinrec / best peer
    assert din[9] == "40 (deepctr+cached)" and din[10] == "3.00x"  # best peer with tinrec's host-memory setting
    # floor: 1e6 bytes / 1e10 B/s = 0.1 ms per sample; achieved 1/120 s -> 83.3x the floor
    assert din[11] == "83.3x"
    assert din[12].startswith("208.3x")  # the sequence-tensor floor: 4e5 bytes -> 0.04 ms per sample
    # no DIN at L = 50: no ratio to it; a failed peer: no ratio to the peer
    assert "(quadratic in L)" in rows[1] and "| - | failed (rechub) | - | - | - | - | - |" in rows[1]
    assert "failed: exit -9: killed" in rows[2]
    assert rows[3].split(" | ")[6] == "4.00x / 1.50x"  # 480 / 120 samples/s, 1500 / 1000 MiB against DIN


def test_growth_exponent_linear_and_quadratic():
    from benchmarks.run import growth, growth_table

    def rate(sps):
        return {"samples_per_s": sps}

    results = [{"model": "din", "seq_len": L, "torchrec_train": rate(1e5 / L), "module_train": rate(2e5 / L)}
               for L in (50, 200, 1000, 2000)]
    results += [{"model": "bst", "seq_len": L, "torchrec_train": rate(1e9 / L**2)} for L in (200, 1000, 2000)]
    results += [{"model": "dien", "seq_len": 2000, "error": "exit 1"}]
    k = growth({"results": results})
    assert k["din"]["torchrec_train"] == pytest.approx(1.0) and k["din"]["module_train"] == pytest.approx(1.0)
    assert k["bst"] == {"torchrec_train": pytest.approx(2.0)} and "dien" not in k
    assert "| bst | 2.00 | - | quadratic (self-attention) |" in growth_table({"results": results})


def test_hotpath_before_and_after_compute_the_same_values(tmp_path):
    """The "before" formulations kept in benchmarks/hotpaths.py are the same functions as today's code."""
    from benchmarks.hotpaths import cases, main

    for name, case in cases(B=3, L=12, Lq=9, D=8).items():
        before, after = case["before"](), case["after"]()
        torch.testing.assert_close(before, after, rtol=1e-4, atol=1e-4, msg=name)
    report = main(["--batch", "2", "--seq-len", "8", "--quadratic-len", "6", "--repeats", "1", "--threads", "1",
                   "--out", str(tmp_path / "hp")])
    assert [r["case"] for r in report["rows"]] == list(cases(B=2, L=8, Lq=6, D=8))
    assert (tmp_path / "hp.md").read_text().count("x |") == len(report["rows"])


def test_resume_keeps_finished_points_and_remeasures_failed_ones(tmp_path, monkeypatch):
    import benchmarks.run as run

    out = tmp_path / "cpu"
    previous = {"results": [_point("din", 50, 100.0), {"model": "din", "seq_len": 200, "error": "exit -9"}]}
    (tmp_path / "cpu.json").write_text(json.dumps(previous))
    measured = []

    def fake_point(model, L, args):  # stands in for the subprocess measurement, recording what was asked
        measured.append((model, L))
        return _point(model, L, 50.0)

    monkeypatch.setattr(run, "run_tinrec", fake_point)
    monkeypatch.setattr(run, "measure_bandwidth", lambda threads, device: 10**10)
    monkeypatch.setattr(run, "plot", lambda report, path: None)
    report = run.main(["--models", "din", "--lengths", "50", "200", "--no-peers", "--resume", "--out", str(out)])
    assert measured == [("din", 200)]  # the finished point is kept, the failed one measured again
    assert report["device"] == "cpu"
    assert [r["torchrec_train"]["samples_per_s"] for r in report["results"]] == [100.0, 50.0]
    assert json.loads((tmp_path / "cpu.json").read_text())["results"][0]["torchrec_train"]["samples_per_s"] == 100.0


def test_profile_reports_each_stage_forward_and_the_top_operators():
    from benchmarks.run import profile_table
    from benchmarks.tinrec_bench import profile_steps

    class Toy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.sparse_arch = torch.nn.Linear(64, 64)
            self.interest_arch = torch.nn.Linear(64, 1)

        def forward(self, x):
            return self.interest_arch(torch.relu(self.sparse_arch(x)))

    toy, x = Toy(), torch.randn(512, 64)
    prof = profile_steps(lambda: toy(x).sum().backward(), 2, toy, top=5)
    assert set(prof["forward_ms"]) == {"sparse_arch", "interest_arch"} and prof["steps"] == 2
    assert prof["step_ms"] >= max(prof["forward_ms"].values()) > 0
    assert len(prof["top_ops"]) == 5 and 0 < sum(o["share"] for o in prof["top_ops"]) <= 1 + 1e-9
    assert any("addmm" in o["op"] or "mm" in o["op"] for o in prof["top_ops"])
    md = profile_table({"results": [{"model": "toy", "seq_len": 9, "profile_train": prof}]})
    assert md.startswith("- **toy L=9**: step ") and "sparse_arch" in md
    # hooks are removed afterwards
    assert not toy.sparse_arch._forward_hooks and not toy.sparse_arch._forward_pre_hooks


def test_ratios_are_taken_within_each_round_and_summarised_by_the_median():
    from benchmarks.ratios import summarise, table

    rounds = [{"din": {"samples_per_s": 100.0, "peak_rss_mib": 1000.0}, "sdim": {"samples_per_s": 300.0, "peak_rss_mib": 500.0}},
              {"din": {"samples_per_s": 80.0, "peak_rss_mib": 1000.0}, "sdim": {"samples_per_s": 280.0, "peak_rss_mib": 600.0}},
              {"din": {"samples_per_s": 120.0, "peak_rss_mib": 1000.0}, "sdim": {"error": "exit 1"}}]
    s = summarise(rounds, "din")
    assert s["sdim"]["speed_ratios"] == [3.0, 3.5] and s["sdim"]["speed_ratio_median"] == 3.25
    assert s["sdim"]["memory_ratio_median"] == pytest.approx(0.55) and s["din"]["speed_ratio_median"] == 1.0
    md = table(s, "din")
    assert "| sdim | 300, 280, failed | **3.25x** (3.00, 3.50) | 0.55x |" in md
