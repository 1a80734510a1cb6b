"""End to end through the real CLI: train, injected crash, resume, eval; resume equality; two ranks (gloo)."""

import json
import math
import os
import re
import subprocess
import sys

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, "configs", "default.yaml")
pytestmark = pytest.mark.integration

TINY = ["data.generate.num_users=150", "data.generate.num_items=400", "data.generate.num_categories=8",
        "data.generate.train_rows=2400", "data.generate.valid_rows=400", "data.generate.test_rows=400",
        "data.generate.seq_len_mean=8.0", "data.generate.seq_len_max=24", "data.generate.row_group_size=200",
        "data.generate.show_progress=false", "data.max_len=16", "train.batch_size=64", "train.epochs=2",
        "train.checkpoint_every=10", "train.log_every=5", "model.tower.hidden=[32,16]", "data.num_workers=1"]


def run(args, env=None, check=True, torchrun=None):
    e = dict(os.environ, PYTHONUNBUFFERED="1")
    e.pop(("TINREC_FAIL_AT_STEP"), None)
    e.update(env or {})
    if torchrun:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={torchrun}",
               "-m", "tinrec.cli"] + args
    else:
        cmd = [sys.executable, "-m", "tinrec.cli"] + args
    p = subprocess.run(cmd, cwd=REPO, env=e, capture_output=True, text=True, timeout=600)
    if check and p.returncode != 0:
        raise AssertionError(f"{cmd} exited {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-6000:]}")
    return p


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("data") / "tiny")


def train_args(data_dir, run_dir, *extra):
    return ["train", CONFIG, f"run_dir={run_dir}", f"data.path={data_dir}", *TINY, *extra]


def final_weights(run_dir):
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    root = os.path.join(run_dir, "checkpoints")
    name = open(os.path.join(root, "latest")).read().strip()
    out = os.path.join(run_dir, "final.pt")
    dcp_to_torch_save(os.path.join(root, name), out)
    state = torch.load(out, weights_only=False)
    return name, state["model"]


def test_train_crash_resume_eval(data_dir, tmp_path):
    run_dir = str(tmp_path / "run")
    p = run(train_args(data_dir, run_dir), env={"TINREC_FAIL_AT_STEP": "47"}, check=False)
    assert p.returncode == 13, p.stderr[-3000:]
    assert not os.path.exists(os.path.join(run_dir, "metrics.json"))
    # without --resume an existing run is refused, and its checkpoints are left alone
    p = run(train_args(data_dir, run_dir), check=False)
    assert p.returncode == 2 and "--resume" in p.stderr
    ckpts = sorted(os.listdir(os.path.join(run_dir, "checkpoints")))
    assert "latest" in ckpts and any(c.startswith("step-") for c in ckpts)
    p = run(train_args(data_dir, run_dir, "--resume"))
    assert "GAUC" in p.stdout and "test" in p.stdout
    m = json.load(open(os.path.join(run_dir, "metrics.json")))
    assert set(m["test"]) >= {"auc", "gauc", "logloss"} and set(m["valid"]) >= {"auc", "gauc", "logloss"}
    assert m["test"]["samples"] == 400 and 0.0 < m["test"]["logloss"] < 1.0
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(os.path.join(run_dir, "tb")))
    # eval of the final checkpoint reproduces the training run's test metrics
    name = open(os.path.join(run_dir, "checkpoints", "latest")).read().strip()
    p = run(["eval", CONFIG, f"run_dir={run_dir}", f"data.path={data_dir}", *TINY,
             f"checkpoint={os.path.join(run_dir, 'checkpoints', name)}"])
    e = json.load(open(os.path.join(run_dir, "eval_metrics.json")))
    assert e["test"]["auc"] == pytest.approx(m["test"]["auc"], abs=1e-9)
    assert e["test"]["logloss"] == pytest.approx(m["test"]["logloss"], abs=1e-9)
    # what training adjusted silently is counted: histories cut to max_len (16 of at most 24), rows left out
    assert m["data"]["histories_truncated_to_max_len"] > 0 and m["data"]["max_len"] == 16
    assert m["data"]["train_rows"] == 2400 and m["data"]["train_rows_left_out_per_epoch"] == 2400 % 64
    assert 0 < m["test"]["histories_truncated_to_max_len"] < 400
    # a config whose tables differ from the checkpoint's: one line naming the key, no traceback
    p = run(["eval", CONFIG, f"run_dir={run_dir}", f"data.path={data_dir}", *TINY, "model.embeddings.main.item.dim=16",
             "model.embeddings.main.category.dim=16", "model.embeddings.temporal.position.dim=32"], check=False)
    assert p.returncode == 2, p.stderr[-2000:]
    assert re.search(r"does not fit this config at model\.embeddings\.main\.(item|category): sparse_arch\.ecs\.main\.",
                     p.stderr) and "Traceback" not in p.stderr  # the table, not the tower it feeds
    p = run(["eval", CONFIG, f"run_dir={run_dir}", f"data.path={data_dir}", *TINY, "model.tower.hidden=[32,8]"],
            check=False)
    assert p.returncode == 2 and "does not fit this config at model.tower" in p.stderr and "Traceback" not in p.stderr


def test_resume_gives_the_same_weights(data_dir, tmp_path):
    a, b = str(tmp_path / "straight"), str(tmp_path / "crashed")
    run(train_args(data_dir, a))
    assert run(train_args(data_dir, b), env={"TINREC_FAIL_AT_STEP": "33"}, check=False).returncode == 13
    run(train_args(data_dir, b, "--resume"))
    name_a, wa = final_weights(a)
    name_b, wb = final_weights(b)
    assert name_a == name_b and set(wa) == set(wb)
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=0, msg=k)
    ma, mb = (json.load(open(os.path.join(d, "metrics.json"))) for d in (a, b))
    assert ma["test"] == mb["test"]


def test_two_process_gloo_training(data_dir, tmp_path):
    run_dir = str(tmp_path / "two")
    run(train_args(data_dir, run_dir, "train.epochs=1"), torchrun=2)
    m = json.load(open(os.path.join(run_dir, "metrics.json")))
    assert m["world_size"] == 2
    assert m["test"]["samples"] == 400 and m["valid"]["samples"] == 400  # every sample once, none twice
    assert set(m["test"]) >= {"auc", "gauc", "logloss"}


def test_two_ranks_row_wise_with_and_without_index_dedup_agree(data_dir, tmp_path):
    """Index dedup across ranks: row-wise (ids bucketed to their rank after dedup) and column-wise tables."""
    shard = ["train.epochs=1", "model.embeddings.main.item.sharding_types=[row_wise]",
             "model.embeddings.main.category.sharding_types=[column_wise]"]
    metrics = {}
    for dedup in ("true", "false"):
        run_dir = str(tmp_path / dedup)
        run(train_args(data_dir, run_dir, *shard, f"train.index_dedup={dedup}"), torchrun=2)
        metrics[dedup] = json.load(open(os.path.join(run_dir, "metrics.json")))
    for split in ("valid", "test"):
        for key in ("auc", "gauc", "logloss"):
            assert metrics["true"][split][key] == pytest.approx(metrics["false"][split][key], abs=1e-4), (split, key)


def test_bad_input_stops_with_file_row_and_field(tmp_path):
    from tests.tinrec.datasets import random_rows, write_dataset

    rows = random_rows(200, seed=9)
    rows[137]["target_item"] = 10_000  # beyond the item table (50 rows)
    data = write_dataset(str(tmp_path / "bad"), {"train": rows, "valid": rows[:50], "test": rows[:50]},
                         row_group_size=40)
    run_dir = tmp_path / "run"
    p = run(["train", CONFIG, f"run_dir={run_dir}", f"data.path={data}", "data.generate=null",
             "train.batch_size=16"], check=False)
    assert p.returncode == 2
    assert "train/part-00000.parquet: row 137: column 'target_item' has id 10000, outside [0, 50)" in p.stderr
    assert not (run_dir / "checkpoints").exists()
    p = run(["train", CONFIG, f"run_dir={run_dir}", "train.epoch=3"], check=False)
    assert p.returncode == 2 and "default.yaml: train.epoch: unknown key (did you mean 'epochs'?)" in p.stderr


def test_training_on_a_reviewed_plan(data_dir, tmp_path):
    run(train_args(data_dir, str(tmp_path / "warm"), "train.max_steps=2"))  # makes sure the data exists
    common = [CONFIG, f"data.path={data_dir}", *TINY]
    p = run(["plan", *common, "--nodes", "1", "--gpus-per-node", "1", "--device", "cpu", "--out", str(tmp_path / "one.plan")])
    assert "item" in p.stdout and ("row_wise" in p.stdout or "table_wise" in p.stdout)
    run(train_args(data_dir, str(tmp_path / "planned"), f"plan={tmp_path / 'one.plan'}", "train.max_steps=5"))
    m = json.load(open(tmp_path / "planned" / "metrics.json"))
    assert m["valid"]["samples"] == 400 and m["test"]["samples"] == 400  # a max_steps stop queues no batch into eval
    run(["plan", *common, "--nodes", "1", "--gpus-per-node", "2", "--device", "cpu", "--out", str(tmp_path / "two.plan")])
    p = run(train_args(data_dir, str(tmp_path / "refused"), f"plan={tmp_path / 'two.plan'}"), check=False)
    assert p.returncode == 2 and "was made for world size 2, this job has world size 1" in p.stderr


HUGE_LR = ["train.dense_optimizer.lr=1e30", "train.sparse_optimizer.lr=1.0e+30"]  # 1e30: YAML reads a string


def _strict_json(path):
    def refuse(constant):
        raise AssertionError(f"{path} is not strict JSON: {constant}")

    return json.loads(open(path).read(), parse_constant=refuse)


def _states(root):
    return {n: open(os.path.join(root, n, "train_state.json")).read() for n in os.listdir(root) if n.startswith("step-")}


def test_a_non_finite_loss_stops_and_keeps_the_good_checkpoints(data_dir, tmp_path):
    import re

    run_dir = str(tmp_path / "nan")
    root = os.path.join(run_dir, "checkpoints")
    run(train_args(data_dir, run_dir, "train.max_steps=20"))
    good = _states(root)
    assert sorted(good) == ["step-00000010", "step-00000020"]  # step 20: one save, after evaluation
    os.remove(os.path.join(run_dir, "metrics.json"))
    p = run(train_args(data_dir, run_dir, "train.max_steps=40", *HUGE_LR, "--resume"), check=False)
    assert p.returncode == 3, p.stderr[-3000:]
    assert re.search(r"error: train step 2\d \(epoch 1, step 2\d of \d+\): non-finite (loss|gradient): .*"
                     r"train/part-\d+\.parquet row group \d+ \(rows \d+-\d+\)", p.stderr), p.stderr[-2000:]
    assert "step-00000020, is kept" in p.stderr and "train.on_nonfinite=skip" in p.stderr
    assert _states(root) == good  # nothing written, nothing rotated away
    assert open(os.path.join(root, "latest")).read().strip() == "step-00000020"
    assert not os.path.exists(os.path.join(run_dir, "metrics.json"))
    # skip: the run ends, counts what it skipped, and its results file is strict JSON
    p = run(train_args(data_dir, run_dir, "train.max_steps=40", *HUGE_LR, "train.on_nonfinite=skip", "--resume"))
    m = _strict_json(os.path.join(run_dir, "metrics.json"))
    assert m["train"]["nonfinite_skipped"] > 0 and m["train"]["nonfinite_skipped_steps"][0] > 20
    assert f"skipped {m['train']['nonfinite_skipped']} training step(s)" in p.stdout
    for split in ("valid", "test"):
        assert all(m[split][k] is None or math.isfinite(m[split][k]) for k in ("auc", "gauc", "logloss"))


def test_a_non_finite_loss_stops_every_rank(data_dir, tmp_path):
    run_dir = str(tmp_path / "nan2")
    p = run(train_args(data_dir, run_dir, "train.epochs=1", *HUGE_LR), torchrun=2, check=False)
    assert p.returncode != 0
    assert "non-finite" in p.stderr and "no checkpoint had been written" in p.stderr
    assert not os.path.exists(os.path.join(run_dir, "checkpoints", "latest"))


def _digest(root):
    import hashlib

    return {os.path.relpath(os.path.join(d, f), root): hashlib.sha256(open(os.path.join(d, f), "rb").read()).hexdigest()
            for d, _, files in os.walk(root) for f in files}


def test_a_users_parquet_folder_is_never_generated_into(tmp_path):
    """Every shipped config carries data.generate: a folder of the user's own Parquet files without meta.json
    is refused, untouched, and `tinrec make-meta` makes it trainable."""
    from tests.tinrec.datasets import random_rows, write_dataset

    rows = random_rows(300, seed=11)
    data = write_dataset(str(tmp_path / "mine"), {"train": rows[:200], "valid": rows[200:250], "test": rows[250:]})
    os.remove(os.path.join(data, "meta.json"))
    before = _digest(data)
    small = ["train.batch_size=16", "train.max_steps=4", "model.tower.hidden=[8]", "data.max_len=12"]
    p = run(["train", CONFIG, f"run_dir={tmp_path / 'run'}", f"data.path={data}", *small], check=False)
    assert p.returncode == 2
    assert f"data.path: {data} holds Parquet files" in p.stderr and f"tinrec make-meta {data}" in p.stderr
    assert _digest(data) == before and not os.path.exists(os.path.join(data, ".tinrec"))
    assert run(["gen-data", data], check=False).returncode == 2 and _digest(data) == before
    run(["make-meta", data])
    assert run(["make-meta", data], check=False).returncode == 2  # never replaced
    p = run(["check-data", data])
    assert "no problems" in p.stdout
    run(["train", CONFIG, f"run_dir={tmp_path / 'run'}", f"data.path={data}", *small])
    assert set(_digest(data)) == set(before) | {"meta.json", ".tinrec/check.json"}  # tinrec's own files only
    assert all(_digest(data)[f] == h for f, h in before.items())


def test_bad_data_is_refused_before_the_first_step_by_check_data(tmp_path):
    from tests.tinrec.datasets import random_rows, write_dataset

    rows = random_rows(300, seed=12)
    tests = rows[250:]
    tests[31]["hist_timestamp"] = [tests[31]["target_timestamp"] + 5] * len(tests[31]["hist_timestamp"])
    tests[31]["hist_item"] = tests[31]["hist_item"] or [1]
    for c in ("hist_category", "hist_brand", "hist_author"):
        tests[31][c] = [1] * len(tests[31]["hist_item"])
    tests[31]["hist_timestamp"] = [tests[31]["target_timestamp"] + 5] * len(tests[31]["hist_item"])
    data = write_dataset(str(tmp_path / "d"), {"train": rows[:200], "valid": rows[200:250], "test": tests})
    run_dir = tmp_path / "run"
    small = ["data.generate=null", "train.batch_size=16", "model.tower.hidden=[8]", "data.max_len=12"]
    p = run(["train", CONFIG, f"run_dir={run_dir}", f"data.path={data}", *small], check=False)
    assert p.returncode == 2
    assert "test/part-00000.parquet: row 31: column 'hist_timestamp' has a behaviour at" in p.stderr
    assert "tinrec check-data" in p.stderr and "epoch 1" not in p.stderr  # before the first step
    p = run(["check-data", data], check=False)
    assert p.returncode == 1 and "problem behaviour_after_target: 1 rows" in p.stdout
    # skipping the scan does not let the row through: the reader stops at it (in the test split)
    p = run(["train", CONFIG, f"run_dir={tmp_path / 'run2'}", f"data.path={data}", *small, "data.check=false",
             "train.index_dedup=false"], check=False)
    assert p.returncode == 2 and "test/part-00000.parquet: row 31: column 'hist_timestamp'" in p.stderr


def test_library_logging_is_quiet_unless_verbose(data_dir, tmp_path):
    quiet = run(train_args(data_dir, str(tmp_path / "q"), "train.max_steps=2"))
    loud = run(train_args(data_dir, str(tmp_path / "v"), "train.max_steps=2", "--verbose"))
    for noise in ("Successfully loaded", "SplitTableBatchedEmbeddingBagsCodegen", "FutureWarning"):
        assert noise not in quiet.stderr
    assert "Successfully loaded" in loud.stderr or "SplitTableBatchedEmbeddingBagsCodegen" in loud.stderr
    assert "INFO tinrec.train: sharding:" in quiet.stderr


def test_named_losses_are_logged_by_name(data_dir, tmp_path):
    """DIEN's auxiliary loss is a named loss: in the progress bar, TensorBoard and metrics.json, beside bce."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = str(tmp_path / "dien")
    p = run(["train", os.path.join(REPO, "configs", "dien.yaml"), f"run_dir={run_dir}", f"data.path={data_dir}",
             *TINY, "train.max_steps=10", "train.log_every=5", "train.log_grad_norms=true"])
    assert "dien.aux=" in p.stderr and "bce=" in p.stderr
    m = _strict_json(os.path.join(run_dir, "metrics.json"))
    (epoch,) = m["train"]["losses"]
    assert epoch["steps"] == 10 and epoch["dien.aux"] > 0 and epoch["bce"] > 0
    assert epoch["loss"] == pytest.approx(epoch["bce"] + epoch["dien.aux"])
    tb = EventAccumulator(os.path.join(run_dir, "tb"))
    tb.Reload()
    assert {"train/loss", "train/loss/bce", "train/loss/dien.aux"} <= set(tb.Tags()["scalars"])
    # train.log_grad_norms: each dense module's gradient norm at the logged steps, beside the window's losses
    with open(os.path.join(run_dir, "grad_norms.jsonl")) as f:
        lines = [json.loads(line) for line in f]
    assert [r["step"] for r in lines] == [5, 10]
    for r in lines:
        norms = r["grad_norm"]
        assert set(r["loss"]) == {"loss", "bce", "dien.aux"}
        assert any(k.startswith("dien.") for k in norms) and any(k.startswith("over_arch.tower") for k in norms)
        assert norms["(all)"] == pytest.approx(math.sqrt(sum(v ** 2 for k, v in norms.items() if k != "(all)")),
                                               rel=1e-5)
    assert "grad_norm/(all)" in tb.Tags()["scalars"]


STATEFUL = ["model.interests={m: {_component_: tests.tinrec.stateful.EmaMemory, "
            "inputs: {seq_BLD: behaviours, mask_BL: mask, query_BD: target}}}"]


def _memory(run_dir):
    return final_weights(run_dir)[1]["dense_arch.interest_arch.interests.m.memory_D"]


def test_cross_batch_state_is_identical_on_two_ranks_and_resumes_exactly(data_dir, tmp_path):
    """A module's cross-batch buffer (an EMA of the target embeddings, updated in forward on each rank's own
    batch) is combined across ranks after every step, checkpointed, and restored by --resume."""
    straight, crashed = str(tmp_path / "straight"), str(tmp_path / "crashed")
    run(train_args(data_dir, straight, *STATEFUL, "train.epochs=1"), torchrun=2)
    memory = _memory(straight)
    assert not torch.allclose(memory, torch.ones_like(memory))  # it was updated
    p = run(train_args(data_dir, crashed, *STATEFUL, "train.epochs=1"), torchrun=2,
            env={"TINREC_FAIL_AT_STEP": "12"}, check=False)
    assert p.returncode != 0
    run(train_args(data_dir, crashed, *STATEFUL, "train.epochs=1", "--resume"), torchrun=2)
    torch.testing.assert_close(_memory(crashed), memory, rtol=0, atol=0)


DUMN_TINY = [f"data.generate.{k}" for k in ("num_users=150", "num_items=400", "num_categories=8", "train_rows=2400",
                                             "valid_rows=400", "test_rows=400", "seq_len_mean=12.0", "seq_len_max=24",
                                             "row_group_size=200", "show_progress=false")] + [
    "data.max_len=24", "data.sequences.click.max_len=8", "data.sequences.unclick.max_len=8",
    "data.sequences.like.max_len=8", "data.sequences.dislike.max_len=8", "model.interests.dumn.seq_len=8",
    "model.interests.dumn.slots=16", "model.interests.dumn.slot_dim=8", "model.interests.dumn.controller_hidden=16",
    "model.tower.hidden=[16]", "train.batch_size=64", "train.epochs=1", "train.checkpoint_every=10",
    "train.log_every=5", "data.num_workers=1"]


def test_dumn_memories_are_identical_on_two_ranks_checkpointed_and_resumed_exactly(tmp_path):
    """DUMN's four memories (cross-batch state written in training forwards, modules/dumn.py) on two ranks:
    written (they leave their initial values); the same on both ranks (every checkpoint, every 10 steps here,
    compares the ranks' copies and fails the run if they differ: tinrec/state.py check_identical); saved and
    restored (a crash at step 12 and --resume end with exactly the memories of the uninterrupted run); the
    triplet loss logged by name."""
    data = str(tmp_path / "feedback")
    args = lambda run_dir, *extra: ["train", os.path.join(REPO, "configs", "feedback", "dumn.yaml"),  # noqa: E731
                                    f"run_dir={run_dir}", f"data.path={data}", *DUMN_TINY, *extra]
    straight, crashed = str(tmp_path / "straight"), str(tmp_path / "crashed")
    p = run(args(straight), torchrun=2)
    assert "dumn.triplet=" in p.stderr
    key = "dense_arch.interest_arch.interests.dumn.memory_SMZ"
    memory = final_weights(straight)[1][key]
    assert memory.shape == (4, 16, 8) and memory.abs().max() > 0.1 + 1e-3  # started in +-0.1, then written
    p = run(args(crashed), torchrun=2, env={"TINREC_FAIL_AT_STEP": "12"}, check=False)
    assert p.returncode != 0
    run(args(crashed, "--resume"), torchrun=2)
    # bitwise, the whole model: the resumed run re-plans the sharding and must get the same plan (it once did
    # not, test_plan.py's same-plan test, and ended 3e-8 away)
    resumed = final_weights(crashed)[1]
    for name, value in final_weights(straight)[1].items():
        if torch.is_tensor(value):
            assert torch.equal(resumed[name], value), name


def test_two_labels_train_two_heads_and_report_metrics_per_label(tmp_path):
    """A dataset with a second label column (label_like) and data.labels=[label, label_like]: one tower output
    and one named BCE term per label, and AUC / GAUC / logloss per label in metrics.json and the table."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tests.tinrec.datasets import random_rows, write_dataset

    rows = random_rows(400, seed=13)
    for r in rows:  # the second task: like = 1 exactly when the target's category is 1 or 2 (learnable)
        r["label_like"] = int(r["target_category"] in (1, 2))
    data = write_dataset(str(tmp_path / "d"), {"train": rows[:300], "valid": rows[300:350], "test": rows[350:]})
    for split in ("train", "valid", "test"):  # write_dataset's schema has one label: add the second column
        path = os.path.join(data, split, "part-00000.parquet")
        t = pq.read_table(path)
        part = {"train": rows[:300], "valid": rows[300:350], "test": rows[350:]}[split]
        pq.write_table(t.append_column("label_like", pa.array([r["label_like"] for r in part], pa.int8())), path,
                       row_group_size=16)
    run_dir = str(tmp_path / "run")
    p = run(["train", CONFIG, f"run_dir={run_dir}", f"data.path={data}", "data.generate=null", "train.batch_size=16",
             "model.tower.hidden=[16]", "data.max_len=12", "data.labels=[label,label_like]", "train.log_every=2",
             "train.dense_optimizer.lr=0.01"])
    m = _strict_json(os.path.join(run_dir, "metrics.json"))
    assert set(m["test"]["labels"]) == {"label", "label_like"}
    like = m["test"]["labels"]["label_like"]
    assert like["samples"] == 50 and like["auc"] > 0.8  # the planted second task is learned
    assert m["test"]["auc"] == m["test"]["labels"]["label"]["auc"]  # the first label's metrics stay at the top
    (epoch,) = m["train"]["losses"]
    assert {"bce.label", "bce.label_like"} <= set(epoch)
    assert "test label_like" in p.stdout and "bce.label_like=" in p.stderr


def test_a_setup_error_on_rank_0_stops_every_rank(tmp_path):
    """Rank 0 prepares the data first; when that fails (here: a user's folder without meta.json), the other
    ranks raise the same error at once instead of waiting for rank 0 (the setup wait is 24 h)."""
    import time

    from tests.tinrec.datasets import random_rows, write_dataset

    data = write_dataset(str(tmp_path / "mine"), {"train": random_rows(50, seed=15)})
    os.remove(os.path.join(data, "meta.json"))
    t0 = time.monotonic()
    p = run(["train", CONFIG, f"run_dir={tmp_path / 'run'}", f"data.path={data}"], torchrun=2, check=False)
    assert p.returncode != 0 and time.monotonic() - t0 < 120
    both = [line for line in p.stderr.splitlines() if f"data.path: {data} holds Parquet files" in line]
    assert len(both) == 2, p.stderr[-3000:]  # rank 0's own error, and rank 1's copy of it


def test_an_error_line_reaches_stderr_in_one_write(monkeypatch):
    """Every rank of a torchrun job writes to the same pipe: the line must go out in one write (print's text
    and newline as two writes let rank 1's line join rank 0's, and the test above lost a line that way)."""
    from tinrec import cli

    class Recorder:
        def __init__(self):
            self.writes = []

        def write(self, text):
            self.writes.append(text)

        def flush(self):
            pass

    rec = Recorder()
    monkeypatch.setattr(cli.sys, "stderr", rec)
    assert cli._main(["train", "/no/such/config.yaml"]) == 2
    assert len(rec.writes) == 1 and rec.writes[0].startswith("error: ") and rec.writes[0].endswith("\n")
    assert rec.writes[0].count("\n") == 1


def test_dien_with_in_batch_negatives_is_deterministic(data_dir, tmp_path):
    """The in-batch negatives are gathered with index_select, whose CPU backward sums duplicate picks in a
    fixed order (advanced indexing's did not: two DIEN runs differed in the 9th digit, and diverged)."""
    dien = os.path.join(REPO, "configs", "dien.yaml")
    weights = []
    for k in range(2):
        run_dir = str(tmp_path / f"run{k}")
        run(["train", dien, f"run_dir={run_dir}", f"data.path={data_dir}", *TINY, "train.epochs=1",
             "train.max_steps=12"])
        weights.append(final_weights(run_dir)[1])
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key


def test_dense_optimizer_groups_train_and_resume_exactly(data_dir, tmp_path):
    """``train.dense_optimizer.groups``: the tower at 10x the learning rate trains, resumes bitwise, and lands
    elsewhere than without the group; a group matching nothing stops before training, naming the key."""
    group = "train.dense_optimizer.groups=[{match: '*.over_arch.tower.*', lr: 0.01}]"
    a, b, plain = str(tmp_path / "straight"), str(tmp_path / "crashed"), str(tmp_path / "plain")
    run(train_args(data_dir, a, group, "train.epochs=1"))
    assert run(train_args(data_dir, b, group, "train.epochs=1"), env={"TINREC_FAIL_AT_STEP": "23"},
               check=False).returncode == 13
    run(train_args(data_dir, b, group, "train.epochs=1", "--resume"))
    run(train_args(data_dir, plain, "train.epochs=1"))
    (_, wa), (_, wb), (_, wp) = final_weights(a), final_weights(b), final_weights(plain)
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=0, msg=k)
    tower = [k for k in wa if "over_arch.tower" in k]
    assert tower and all(not torch.equal(wa[k], wp[k]) for k in tower)
    bad = run(train_args(data_dir, str(tmp_path / "bad"), "train.dense_optimizer.groups=[{match: '*nope*', lr: 0.01}]"),
              check=False)
    assert bad.returncode != 0 and "train.dense_optimizer.groups[0].match: '*nope*' matches no dense parameter" in bad.stderr


def test_param_groups_first_match_wins_and_the_rest_keep_the_optimizer_settings():
    from torch import nn

    from tinrec.config import OptimizerConfig, OptimizerGroup
    from tinrec.optim import param_groups

    named = {n: nn.Parameter(torch.zeros(1)) for n in ("a.tcns.0.weight", "a.tcns.0.bias", "a.tower.w", "b")}
    oc = OptimizerConfig(name="adam", lr=1e-3, groups=[OptimizerGroup(match="*.tcns.*.weight", lr=0.01),
                                                       OptimizerGroup(match="a.*", weight_decay=0.1)])
    groups = param_groups(oc, named)
    assert [len(g["params"]) for g in groups] == [1, 2, 1]
    assert groups[0]["lr"] == 0.01 and "weight_decay" not in groups[0]
    assert groups[1] == {"params": [named["a.tcns.0.bias"], named["a.tower.w"]], "weight_decay": 0.1}
    assert groups[2] == {"params": [named["b"]]}
    opt = torch.optim.Adam(groups, lr=1e-3)
    assert [g["lr"] for g in opt.param_groups] == [0.01, 1e-3, 1e-3]
