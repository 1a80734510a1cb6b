"""TorchX components: slurm and kubernetes dry runs show the nodes, processes, resources and command."""

import os
import subprocess
import sys

import pytest

from launch import components

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def dryrun(*args):
    torchx = os.path.join(os.path.dirname(sys.executable), "torchx")
    p = subprocess.run([torchx, "run", "--dryrun", *args], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    return p.stdout + p.stderr


def test_slurm_dryrun():
    out = dryrun("-s", "slurm", "launch/components.py:train", "-j", "4x8", "--gpu", "8", "--cpu", "64", "--memMB",
                 "500000", "--max_restarts", "3", "--config", "configs/default.yaml", "run_dir=/shared/runs/x",
                 "train.epochs=2")
    assert out.count("#SBATCH --job-name=trainer-") == 4  # one hetjob group per node
    assert out.count("--gpus-per-task=8") == 4 and "--cpus-per-task=64" in out and "--mem=500000" in out
    cmd = ("torchrun --rdzv_backend c10d --rdzv_endpoint ${SLURM_JOB_NODELIST_HET_GROUP_0:=localhost}:29500")
    assert cmd in out
    assert "--nnodes 4 --nproc_per_node 8 --max_restarts 3" in out
    assert "-m tinrec.cli train configs/default.yaml run_dir=/shared/runs/x train.epochs=2 --resume" in out
    assert "TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1" in out


def test_kubernetes_dryrun():
    out = dryrun("-s", "kubernetes", "--workspace", "", "launch/components.py:train", "-j", "2x8", "--gpu", "8",
                 "--cpu", "32", "--memMB", "200000", "--image", "ghcr.io/acme/tinrec:1.0", "--config",
                 "configs/default.yaml", "run_dir=/mnt/runs/x")
    assert "kind: Job" in out and "schedulerName: volcano" in out
    assert out.count("- name: trainer-") == 2 and out.count("replicas: 1") == 2
    assert "nvidia.com/gpu: '8'" in out and "cpu: 32000m" in out and "memory: 200000M" in out
    assert "image: ghcr.io/acme/tinrec:1.0" in out
    assert "--nnodes 2 --nproc_per_node 8" in out and "tinrec.cli train configs/default.yaml" in out
    assert "name: TORCH_DISABLE_SHARE_RDZV_TCP_STORE" in out


def test_single_node_picks_a_free_port_and_bad_j_is_refused():
    app = components.train("train.epochs=1", config="configs/default.yaml", j="1x2")
    cmd = app.roles[0].args[1]
    assert "--rdzv_endpoint localhost:0" in cmd and "--nnodes 1 --nproc_per_node 2" in cmd
    assert cmd.endswith("train configs/default.yaml train.epochs=1 --resume")
    with pytest.raises(ValueError, match="NNODESxNPROC"):
        components.train(config="configs/default.yaml", j="2by8")


def test_eval_and_plan_components():
    e = components.eval(config="configs/default.yaml", checkpoint="runs/x/checkpoints/step-00000010")
    assert "eval configs/default.yaml checkpoint=runs/x/checkpoints/step-00000010" in e.roles[0].args[1]
    p = components.plan("data.max_len=2000", config="configs/default.yaml", nodes=8, gpus_per_node=8, out="p.json")
    assert p.roles[0].args[1] == ("python -m tinrec.cli plan configs/default.yaml --nodes 8 --gpus-per-node 8 "
                                  "--out p.json data.max_len=2000")
    assert p.roles[0].resource.gpu == 0
