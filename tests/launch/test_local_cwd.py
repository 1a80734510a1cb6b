"""Real training through ``torchx run -s local_cwd``: 1x2 and 2x1 (gloo), and a crash that torchrun restarts."""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from tests.tinrec.test_train_cli import TINY, final_weights

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
pytestmark = pytest.mark.integration


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchx_train(tmp, run_dir, data_dir, *component_args, env=None, overrides=()):
    bindir = os.path.dirname(sys.executable)
    e = dict(os.environ, PATH=bindir + os.pathsep + os.environ.get("PATH", ""))
    e.pop("TINREC_FAIL_AT_STEP", None)
    e.pop("TINREC_HANG_AT_STEP", None)
    cmd = [os.path.join(bindir, "torchx"), "run", "-s", "local_cwd", "-cfg", f"log_dir={tmp}/torchx-logs",
           "launch/components.py:train", *component_args]
    if env:
        cmd += ["--env", ",".join(f"{k}={v}" for k, v in env.items())]
    cmd += ["--config", "configs/default.yaml", f"run_dir={run_dir}", f"data.path={data_dir}", *TINY,
            "train.epochs=1", *overrides]
    p = subprocess.run(cmd, cwd=REPO, env=e, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, f"{cmd}\n{p.stdout[-3000:]}\n{p.stderr[-5000:]}"
    with open(os.path.join(run_dir, "metrics.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("torchx")
    data_dir = str(tmp / "data")
    baseline = str(tmp / "one-by-two")
    m = torchx_train(tmp, baseline, data_dir, "-j", "1x2")
    return tmp, data_dir, baseline, m


def test_one_node_two_processes(shared):
    tmp, data_dir, baseline, m = shared
    assert m["world_size"] == 2 and m["test"]["samples"] == 400 and m["valid"]["samples"] == 400
    assert set(m["test"]) >= {"auc", "gauc", "logloss"}


def test_two_nodes_one_process_each(shared):
    tmp, data_dir, _, _ = shared
    m = torchx_train(tmp, str(tmp / "two-by-one"), data_dir, "-j", "2x1", "--rdzv_port", str(free_port()))
    assert m["world_size"] == 2 and m["test"]["samples"] == 400


def assert_same_run(baseline, m, run_dir, m2):
    """The restarted run ended at the same checkpoint with bitwise the same weights and test metrics."""
    name_a, wa = final_weights(baseline)
    name_b, wb = final_weights(run_dir)
    assert name_a == name_b
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=0, msg=k)
    assert m2["test"] == m["test"]


def test_injected_crash_restarts_resumes_and_matches(shared):
    tmp, data_dir, baseline, m = shared
    run_dir = str(tmp / "crashed")
    m2 = torchx_train(tmp, run_dir, data_dir, "-j", "1x2", "--max_restarts", "1", env={"TINREC_FAIL_AT_STEP": "12"})
    assert os.path.exists(os.path.join(run_dir, ".fault-injected"))  # it did crash once
    assert_same_run(baseline, m, run_dir, m2)


def test_a_stopped_rank_ends_the_job_naming_it_and_a_restart_resumes(shared):
    """A hung rank (SIGSTOP: alive, not answering) must not hang the group: the other rank's collective times
    out (train.collective_timeout_s), it names the rank, torchrun ends the group and restarts it, and the job
    resumes to the same weights as an uninterrupted run."""
    tmp, data_dir, baseline, m = shared
    run_dir = str(tmp / "hung")
    m2 = torchx_train(tmp, run_dir, data_dir, "-j", "1x2", "--max_restarts", "1",
                      env={"TINREC_HANG_AT_STEP": "12:1"}, overrides=["train.collective_timeout_s=10"])
    assert os.path.exists(os.path.join(run_dir, ".hang-injected"))  # rank 1 did stop itself
    logs = ""
    for d, _, files in os.walk(tmp / "torchx-logs"):
        for f in files:
            logs += open(os.path.join(d, f), errors="replace").read()
    assert "rank 0: a collective waited longer than train.collective_timeout_s=10 s; rank(s) 1 did not answer" in logs
    assert_same_run(baseline, m, run_dir, m2)
