"""TorchX components for tinrec: ``train``, ``eval`` and ``plan``.

Each returns a ``specs.AppDef`` that runs ``tinrec`` under ``torchrun`` on every node; TorchX builds the
command line from the signature and the ``Args:`` below. Examples (``.torchxconfig`` makes ``local_cwd``
the default scheduler)::

    torchx run launch/components.py:train -j 1x2 --config configs/default.yaml run_dir=runs/x
    torchx run -s slurm --dryrun launch/components.py:train -j 4x8 --gpu 8 --config configs/default.yaml
    torchx run launch/components.py:plan --config configs/production/tin_1b_items.yaml --nodes 8

``train`` always passes ``--resume``: a job that torchrun restarts (``max_restarts``) or that is submitted
again continues from the run's last checkpoint instead of starting over.
"""


import re
import shlex
from typing import Dict, List, Optional, Tuple

import torchx.specs as specs

# Elastic restarts hang on torch 2.13 with the shared rendezvous TCP store (see docs/launch.md).
_BASE_ENV = {"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1", "PYTHONUNBUFFERED": "1"}


class _Raw(str):
    """An argument the shell must expand (not quoted)."""


def _parse_j(j: str) -> Tuple[int, int]:
    m = re.fullmatch(r"(\d+)x(\d+)", j)
    if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1:
        raise ValueError(f"-j {j!r}: expected NNODESxNPROC, e.g. 2x8")
    return int(m.group(1)), int(m.group(2))


def _join(args: List[str]) -> str:
    return " ".join(a if isinstance(a, _Raw) else shlex.quote(a) for a in args)


def _torchrun(nnodes: int, nproc: int, rdzv_port: int, max_restarts: int) -> List[str]:
    # One node: port 0 lets the agent pick a free port. Several: rank 0's host, which the scheduler
    # exports as $TORCHX_RANK0_HOST (local_cwd leaves it unset: localhost).
    endpoint = "localhost:0" if nnodes == 1 else _Raw(f"$${{{specs.macros.rank0_env}:=localhost}}:{rdzv_port}")
    return ["torchrun", "--rdzv_backend", "c10d", "--rdzv_endpoint", endpoint, "--rdzv_id", specs.macros.app_id,
            "--nnodes", str(nnodes), "--nproc_per_node", str(nproc), "--max_restarts", str(max_restarts),
            "--tee", "3", "-m", "tinrec.cli"]


def _role(name: str, image: str, nnodes: int, args: List[str], cpu: int, gpu: int, memMB: int, h: Optional[str],
          env: Optional[Dict[str, str]], rdzv_port: int, max_retries: int, mounts: Optional[List[str]]) -> specs.Role:
    return specs.Role(
        name=name, image=image, entrypoint="bash", args=["-c", _join(args)], num_replicas=nnodes,
        resource=specs.resource(cpu=cpu, gpu=gpu, memMB=memMB, h=h), env={**_BASE_ENV, **(env or {})},
        port_map={"c10d": rdzv_port}, max_retries=max_retries, mounts=specs.parse_mounts(mounts) if mounts else [])


def train(
    *overrides: str,
    config: str,
    j: str = "1x1",
    cpu: int = 2,
    gpu: int = 0,
    memMB: int = 8192,
    h: Optional[str] = None,
    image: str = "tinrec:latest",
    env: Optional[Dict[str, str]] = None,
    rdzv_port: int = 29500,
    max_restarts: int = 0,
    max_retries: int = 0,
    mounts: Optional[List[str]] = None,
    name: str = "tinrec-train",
) -> specs.AppDef:
    """Train a tinrec config on NNODES x NPROC processes (``tinrec train CONFIG OVERRIDES --resume``).

    Args:
        overrides: config overrides ``key.sub=value`` (e.g. run_dir=runs/x train.epochs=2)
        config: the experiment YAML, a path inside the image / working directory
        j: NNODESxNPROC, nodes times processes per node (one process per GPU on GPU hosts)
        cpu: CPUs per node
        gpu: GPUs per node
        memMB: memory per node in MB
        h: a named resource of the scheduler (takes precedence over cpu, gpu and memMB)
        image: container image (local_cwd ignores it and runs in the current directory)
        env: extra environment variables, K1=v1,K2=v2
        rdzv_port: rendezvous port on rank 0's host; give concurrent multi-node jobs on one host different ports
        max_restarts: how often torchrun restarts the workers after a failure; each restart resumes from the last checkpoint
        max_retries: how often the scheduler retries the whole job
        mounts: mounts for the workers (type=bind,src=/host,dst=/job[,readonly])
        name: job name
    """
    nnodes, nproc = _parse_j(j)
    args = _torchrun(nnodes, nproc, rdzv_port, max_restarts) + ["train", config, *overrides, "--resume"]
    role = _role("trainer", image, nnodes, args, cpu, gpu, memMB, h, env, rdzv_port, max_retries, mounts)
    return specs.AppDef(name=name, roles=[role])


def eval(
    *overrides: str,
    config: str,
    checkpoint: Optional[str] = None,
    j: str = "1x1",
    cpu: int = 2,
    gpu: int = 0,
    memMB: int = 8192,
    h: Optional[str] = None,
    image: str = "tinrec:latest",
    env: Optional[Dict[str, str]] = None,
    rdzv_port: int = 29500,
    mounts: Optional[List[str]] = None,
    name: str = "tinrec-eval",
) -> specs.AppDef:
    """Evaluate a checkpoint on the valid and test splits (``tinrec eval CONFIG checkpoint=PATH``).

    Args:
        overrides: config overrides ``key.sub=value``
        config: the experiment YAML
        checkpoint: checkpoint folder; default the run_dir's latest checkpoint
        j: NNODESxNPROC
        cpu: CPUs per node
        gpu: GPUs per node
        memMB: memory per node in MB
        h: a named resource of the scheduler (takes precedence over cpu, gpu and memMB)
        image: container image (local_cwd ignores it)
        env: extra environment variables, K1=v1,K2=v2
        rdzv_port: rendezvous port on rank 0's host
        mounts: mounts for the workers (type=bind,src=/host,dst=/job[,readonly])
        name: job name
    """
    nnodes, nproc = _parse_j(j)
    extra = [f"checkpoint={checkpoint}"] if checkpoint else []
    args = _torchrun(nnodes, nproc, rdzv_port, 0) + ["eval", config, *overrides, *extra]
    role = _role("evaluator", image, nnodes, args, cpu, gpu, memMB, h, env, rdzv_port, 0, mounts)
    return specs.AppDef(name=name, roles=[role])


def plan(
    *overrides: str,
    config: str,
    nodes: int = 2,
    gpus_per_node: int = 8,
    hbm_gb: Optional[float] = None,
    batch_size: Optional[int] = None,
    out: Optional[str] = None,
    cpu: int = 2,
    memMB: int = 8192,
    image: str = "tinrec:latest",
    name: str = "tinrec-plan",
) -> specs.AppDef:
    """Embedding-sharding planner dry run for a cluster of NODES x GPUS_PER_NODE (no GPU needed).

    Args:
        overrides: config overrides ``key.sub=value``
        config: the experiment YAML
        nodes: nodes of the cluster to plan for
        gpus_per_node: GPUs per node
        hbm_gb: HBM per GPU in GB (default: H100, 80)
        batch_size: per-rank batch size (default: the config's train.batch_size)
        out: write the plan to this file (``tinrec train ... plan=FILE`` trains on it)
        cpu: CPUs for the planning job
        memMB: memory for the planning job in MB
        image: container image (local_cwd ignores it)
        name: job name
    """
    args = ["python", "-m", "tinrec.cli", "plan", config, "--nodes", str(nodes), "--gpus-per-node", str(gpus_per_node)]
    if hbm_gb is not None:
        args += ["--hbm-gb", str(hbm_gb)]
    if batch_size is not None:
        args += ["--batch-size", str(batch_size)]
    if out:
        args += ["--out", out]
    args += list(overrides)
    role = specs.Role(name="planner", image=image, entrypoint="bash", args=["-c", _join(args)],
                      resource=specs.resource(cpu=cpu, gpu=0, memMB=memMB), env=dict(_BASE_ENV))
    return specs.AppDef(name=name, roles=[role])
