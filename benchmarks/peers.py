"""The peer side of the CPU benchmark: the same models in DeepCTR-Torch (DIN, DIEN) and torch-rechub (DIN, BST).

The peers need package versions our venv must not get, so they run in a separate venv (default
``.bench-peers`` at the repository root, ignored by git). This file has two halves:

**Driver** (imported from our main venv; standard library only, no torch import):

- :func:`ensure_env` creates the peer venv once (``python3 -m venv``, then pip installs :data:`PINS`) and
  returns its python; an existing venv is reused when it imports the pinned versions.
- :func:`measure` runs the script half in a subprocess with that python and returns its JSON result.

**Script** (run inside the peer venv)::

    python benchmarks/peers.py --peer deepctr|rechub --model din|dien|bst --seq-len L \\
        [--batch 256] [--dim 64] --steps N --warmup W [--threads 2] [--seed 0] [--device cpu|cuda]

What is built: the peer's own model class on target item + target category and the history item + history
category sequences (one embedding table per id kind, width ``dim`` each, shared by target and history; table
rows from :func:`benchmarks.synthetic.vocab_sizes`), attention MLP (80, 40) with PReLU and softmax-normalised
attention weights (as our DIN config), DNN tower (200, 80) with ReLU, no dropout, no embedding L2. Every
place where a library cannot be configured that way, or needs something extra, is listed in the result's
``deviations`` (see :data:`NOTES` for the fixed ones).

What is measured, on one batch of :func:`benchmarks.synthetic.make_batch` (the numbers our side trains on;
``batch_sha256`` in the result lets the caller check this), converted once to tensors in exactly the input
format the model's ``forward`` takes (DeepCTR: one float matrix with the columns of ``model.feature_index``;
rechub: a dict of tensors keyed by feature name):

- training: a plain PyTorch step (``zero_grad``, forward, mean binary cross-entropy on the model's sigmoid
  output (+ DIEN's auxiliary loss), ``backward``, ``torch.optim.Adam(lr=1e-3).step()``), ``warmup`` untimed
  steps, then ``steps`` steps each timed with ``time.perf_counter``; ``train_samples_per_s`` = batch / median
  step time. The libraries' own ``fit`` loops are not used (they add data loaders, progress bars, metrics).
- inference: ``model.eval()`` under ``torch.no_grad()``, forward only on the same batch, ``warmup`` + ``steps``
  passes, ``infer_samples_per_s`` = batch / median pass time.
- memory: peak resident set size of the process (``ru_maxrss``, MiB) after training and at the end.

Stdout carries exactly one JSON object; everything the libraries print goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

#: Exact versions installed in the peer venv (the latest releases that work with our torch 2.13.0).
#: torch is the version the project uses; requests is imported by DeepCTR-Torch but not declared by it.
PINS: Dict[str, str] = {
    "torch": "2.13.0",
    "deepctr-torch": "0.3.0",
    "torch-rechub": "0.9.0",
    "requests": "2.34.2",
}

#: Models available per peer library.
PEER_MODELS: Dict[str, tuple] = {"deepctr": ("din", "dien"), "rechub": ("din", "bst")}

#: Distribution name of each peer library.
PEER_DISTRIBUTIONS = {"deepctr": "deepctr-torch", "rechub": "torch-rechub"}

ATTENTION_HIDDEN = (80, 40)
TOWER_HIDDEN = (200, 80)
LEARNING_RATE = 1e-3
NUM_HEADS = 8  # BST

#: Fixed differences from the requested configuration (or from our models), per (peer, model).
NOTES: Dict[tuple, List[str]] = {
    ("deepctr", "din"): [
        "loss: mean BCE without DeepCTR's L2 penalty (l2_reg_embedding=0; the library's fit() would add an L2 "
        "term over the full embedding tables and use a summed BCE)",
    ],
    ("deepctr", "dien"): [
        "attention: DeepCTR's DIN-style MLP (80, 40) with PReLU and softmax over the history (ours: the paper's "
        "bilinear Eq. 8)",
        "auxiliary loss enabled (use_negsampling=True, alpha=1): one negative behaviour (item and its category) "
        "per history step, drawn uniformly from the batch's behaviours by numpy default_rng(seed + 1), computed "
        "once before timing (ours draws in-batch negatives inside every step)",
        "inference: use_negsampling switched off for the eval passes (DeepCTR's forward would otherwise compute "
        "the auxiliary loss in prediction too)",
        "loss: mean BCE + auxiliary loss, without DeepCTR's L2 penalty (l2_reg_embedding=0)",
    ],
    ("rechub", "din"): [
        "tower activation: dice (rechub's DIN hard-codes activation='dice' for its MLP; relu requested)",
        "batch norm after every hidden Linear of the attention MLP and the tower (rechub's MLP always adds "
        "BatchNorm1d)",
        "attention per field: the item history is attended with the target item and the category history with "
        "the target category, each by its own activation unit over width dim (ours: one unit over the "
        "concatenated 2*dim behaviour)",
        "extra input: a constant 1-wide context feature (vocab 1), because rechub's DIN rejects an empty "
        "`features` list; it adds one input to the tower",
    ],
    ("rechub", "bst"): [
        "transformer FFN width 2048 (nn.TransformerEncoderLayer's default; rechub's BST does not expose it; ours "
        "uses 4 * width), LeakyReLU",
        "dropout 0 in the transformer (rechub's default is 0.2; our configs use 0)",
        "positions: learned absolute position embeddings (0..L, target last); the target token's output is the "
        "interest",
        "batch norm after every hidden Linear of the tower (rechub's MLP always adds BatchNorm1d)",
        "extra input: a constant 1-wide context feature (vocab 1), because rechub's BST rejects an empty "
        "`features` list; it adds one input to the tower",
    ],
}


# ----------------------------------------------------------------------------------------------------------
# Driver half (our main venv)
# ----------------------------------------------------------------------------------------------------------

_CHECK = """
import json, importlib.metadata as md
import torch, deepctr_torch, torch_rechub
print(json.dumps({d: md.version(d) for d in %r}))
"""


def _log(msg: str) -> None:
    print(f"[peers] {msg}", file=sys.stderr, flush=True)


def _venv_python(path: str) -> str:
    return os.path.join(path, "bin", "python")


def _installed_pins(python: str) -> Optional[Dict[str, str]]:
    """The pinned distributions' versions in the venv of ``python``, or None when the imports fail."""
    if not os.path.exists(python):
        return None
    try:
        proc = subprocess.run([python, "-c", _CHECK % (list(PINS),)], capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    for line in reversed(proc.stdout.splitlines()):  # DeepCTR's version-check thread may print too
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                return None
    return None


def _pins_match(installed: Optional[Dict[str, str]]) -> bool:
    # local version labels (torch "2.13.0+cpu") satisfy the pin, as for pip's ==
    return installed is not None and all(installed.get(d, "").split("+")[0] == v for d, v in PINS.items())


def ensure_env(path: str = ".bench-peers", *, python: str = "python3") -> str:
    """Create (once) the peer venv at ``path`` and return its python executable.

    A relative ``path`` is taken from the repository root. An existing venv whose python imports torch,
    deepctr_torch and torch_rechub at the versions of :data:`PINS` is reused as it is; otherwise the venv is
    created with ``python -m venv`` (if its python is missing) and the pins are installed with pip (pip's
    cache and ``/opt/wheels``-style find-links make torch quick). Progress goes to stderr.

    Raises:
        RuntimeError: the venv could not be created or still does not import the pinned versions.
    """
    path = path if os.path.isabs(path) else os.path.join(REPO, path)
    venv_python = _venv_python(path)
    installed = _installed_pins(venv_python)
    if _pins_match(installed):
        _log(f"reusing {path} ({', '.join(f'{d}=={v}' for d, v in installed.items())})")
        return venv_python
    if not os.path.exists(venv_python):
        _log(f"creating venv {path} with {python} -m venv")
        subprocess.run([python, "-m", "venv", path], check=True, stdout=sys.stderr)
    specs = [f"{d}=={v}" for d, v in PINS.items()]
    _log(f"installing {' '.join(specs)} into {path}")
    subprocess.run([venv_python, "-m", "pip", "install", *specs], check=True, stdout=sys.stderr)
    installed = _installed_pins(venv_python)
    if not _pins_match(installed):
        raise RuntimeError(f"peer venv {path} does not import the pinned versions {PINS}: got {installed}")
    _log(f"ready: {path}")
    return venv_python


def measure(python: str, peer: str, model: str, seq_len: int, *, batch: int = 256, dim: int = 64, steps: int,
            warmup: int, threads: int = 2, timeout: float, seed: int = 0, host_memory: str = "system",
            device: str = "cpu") -> dict:
    """Run this file as a script under ``python`` (the peer venv's) and return its JSON result.

    The subprocess gets ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` = ``threads`` as well (the script also calls
    ``torch.set_num_threads``). See the module docstring for what is measured. ``host_memory="cached"`` gives
    the peer's process the glibc settings tinrec's ``train.host_memory: cached`` applies (``tinrec/hostmem.py``),
    through glibc's environment variables, so that a ratio can be read without tinrec's allocator setting.

    Raises:
        ValueError: unknown peer or model.
        RuntimeError: the subprocess failed, timed out or printed no JSON object (with its stderr tail).
    """
    if model not in PEER_MODELS.get(peer, ()):
        raise ValueError(f"unknown peer/model {peer}/{model}; known: {PEER_MODELS}")
    cmd = [python, os.path.abspath(__file__), "--peer", peer, "--model", model, "--seq-len", str(seq_len),
           "--batch", str(batch), "--dim", str(dim), "--steps", str(steps), "--warmup", str(warmup),
           "--threads", str(threads), "--seed", str(seed), "--device", device]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    env.pop("PYTHONPATH", None)  # nothing of the main venv may leak into the peer venv
    if host_memory == "cached":
        env.update(MALLOC_MMAP_MAX_="0", MALLOC_TRIM_THRESHOLD_=str(2**62))
    elif host_memory != "system":
        raise ValueError(f"host_memory: expected 'system' or 'cached', got {host_memory!r}")
    what = f"{peer} {model} L={seq_len} B={batch} D={dim}"
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)
    except subprocess.TimeoutExpired as e:
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        raise RuntimeError(f"peer benchmark {what} timed out after {timeout:g} s; stderr tail:\n{_tail(err)}") from e
    if proc.returncode != 0:
        raise RuntimeError(f"peer benchmark {what} failed (exit {proc.returncode}); stderr tail:\n"
                           f"{_tail(proc.stderr)}")
    try:
        return dict(json.loads(proc.stdout), host_memory=host_memory)
    except ValueError as e:
        raise RuntimeError(f"peer benchmark {what} printed no JSON object: stdout {proc.stdout[-500:]!r}; "
                           f"stderr tail:\n{_tail(proc.stderr)}") from e


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


# ----------------------------------------------------------------------------------------------------------
# Script half (the peer venv)
# ----------------------------------------------------------------------------------------------------------


def _load_synthetic():
    """benchmarks/synthetic.py by file path (our package is not installed in the peer venv, and putting the
    repository root on sys.path would let its top-level folders shadow other packages)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_bench_synthetic", os.path.join(HERE, "synthetic.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _join_new_threads(before, timeout: float = 30.0) -> List[str]:
    """Wait for threads started since ``before`` (DeepCTR-Torch checks PyPI for a newer release in a thread
    at import); returns a note for each one still running, which then competes with the timed steps."""
    import threading

    notes = []
    for t in threading.enumerate():
        if t not in before and t is not threading.current_thread() and not t.daemon:
            t.join(timeout)
            if t.is_alive():
                notes.append(f"background thread {t.name!r} (started at the library's import) still running")
    return notes


def _negatives(data: dict, seed: int):
    """DIEN's negative behaviours: for every history step, one (item, category) behaviour drawn uniformly from
    all behaviours of the batch, deterministic in ``seed`` (numpy default_rng(seed + 1))."""
    import numpy as np

    items, cats = data["hist_item"].reshape(-1), data["hist_category"].reshape(-1)
    pick = np.random.default_rng(seed + 1).integers(0, items.size, size=items.size)
    shape = data["hist_item"].shape
    return items[pick].reshape(shape), cats[pick].reshape(shape)


def _build_deepctr(model_name: str, data: dict, vocab: Dict[str, int], dim: int, seq_len: int, seed: int,
                   device: str = "cpu"):
    """DeepCTR-Torch's DIN / DIEN and its input: one float32 matrix with the columns of ``model.feature_index``
    (ids as floats, as its ``fit`` feeds them; exact below 2**24)."""
    import numpy as np
    import torch
    from deepctr_torch.inputs import SparseFeat, VarLenSparseFeat
    from deepctr_torch.models import DIEN, DIN

    def seq(name, table):
        return VarLenSparseFeat(SparseFeat(name, vocab[table], embedding_dim=dim, embedding_name=table),
                                maxlen=seq_len, length_name="hist_len")

    # targets are named after their tables; DeepCTR finds the histories as "hist_" + name (and "neg_hist_" +)
    columns = [SparseFeat("item", vocab["item"], embedding_dim=dim),
               SparseFeat("category", vocab["category"], embedding_dim=dim),
               seq("hist_item", "item"), seq("hist_category", "category")]
    arrays = {"item": data["target_item"], "category": data["target_category"], "hist_item": data["hist_item"],
              "hist_category": data["hist_category"], "hist_len": data["hist_len"]}
    common = dict(dnn_hidden_units=TOWER_HIDDEN, dnn_activation="relu", att_activation="prelu",
                  att_weight_normalization=True, l2_reg_embedding=0.0, dnn_dropout=0, seed=seed, task="binary",
                  device=device)
    if model_name == "din":
        model = DIN(columns, ["item", "category"], att_hidden_size=ATTENTION_HIDDEN, **common)
    else:
        columns += [seq("neg_hist_item", "item"), seq("neg_hist_category", "category")]
        arrays["neg_hist_item"], arrays["neg_hist_category"] = _negatives(data, seed)
        model = DIEN(columns, ["item", "category"], gru_type="AUGRU", use_negsampling=True, alpha=1.0,
                     att_hidden_units=ATTENTION_HIDDEN, **common)
    blocks = []
    for name, (start, end) in model.feature_index.items():
        block = arrays[name].reshape(len(data["label"]), -1).astype(np.float32)
        if block.shape[1] != end - start:
            raise RuntimeError(f"DeepCTR input column {name}: width {block.shape[1]}, expected {end - start}")
        blocks.append(block)
    x = torch.from_numpy(np.concatenate(blocks, axis=1)).to(device)

    def predict(inputs):
        return model(inputs).squeeze(-1)  # PredictionLayer: sigmoid probabilities [B, 1]

    def extra_loss():
        return model.aux_loss.sum() if model_name == "dien" else None  # DIEN stores alpha * aux loss per forward

    def eval_mode():
        model.eval()
        if model_name == "dien":
            model.use_negsampling = False  # prediction needs no auxiliary loss

    config = {"attention_hidden": list(ATTENTION_HIDDEN), "attention_activation": "prelu",
              "attention_normalisation": "softmax", "tower_hidden": list(TOWER_HIDDEN), "tower_activation": "relu",
              "tower_batch_norm": False, "embedding_l2": 0.0}
    if model_name == "dien":
        config.update(gru_type="AUGRU", gru_hidden=2 * dim, use_negsampling=True, aux_alpha=1.0,
                      aux_hidden=[100, 50])
    return model, x, predict, extra_loss, eval_mode, config


def _build_rechub(model_name: str, data: dict, vocab: Dict[str, int], dim: int, seq_len: int, seed: int,
                  device: str = "cpu"):
    """torch-rechub's DIN / BST and its input: a dict of int64 tensors keyed by feature name."""
    import numpy as np
    import torch
    from torch_rechub.basic.features import SequenceFeature, SparseFeature
    from torch_rechub.models.ranking import BST, DIN

    torch.manual_seed(seed)
    context = [SparseFeature("constant", vocab_size=1, embed_dim=1)]  # the libraries reject empty `features`
    targets = [SparseFeature("target_item", vocab["item"], embed_dim=dim),
               SparseFeature("target_category", vocab["category"], embed_dim=dim)]
    histories = [SequenceFeature("hist_item", vocab["item"], embed_dim=dim, pooling="concat", shared_with="target_item"),
                 SequenceFeature("hist_category", vocab["category"], embed_dim=dim, pooling="concat",
                                 shared_with="target_category")]
    config = {"tower_hidden": list(TOWER_HIDDEN), "tower_batch_norm": True}
    deviations = []
    if model_name == "din":
        model = DIN(context, histories, targets, mlp_params={"dims": list(TOWER_HIDDEN), "dropout": 0.0},
                    attention_mlp_params={"dims": list(ATTENTION_HIDDEN), "activation": "prelu",
                                          "use_softmax": True})
        config.update(attention_hidden=list(ATTENTION_HIDDEN), attention_activation="prelu",
                      attention_normalisation="softmax", attention_batch_norm=True, tower_activation="dice")
    else:
        width = 2 * dim
        heads = max(h for h in range(1, NUM_HEADS + 1) if width % h == 0)
        if heads != NUM_HEADS:
            deviations.append(f"heads: {heads} ({NUM_HEADS} do not divide the width {width})")
        model = BST(context, histories, targets,
                    mlp_params={"dims": list(TOWER_HIDDEN), "activation": "relu", "dropout": 0.0},
                    nhead=heads, dropout=0.0, num_layers=1, max_seq_len=seq_len + 1)
        config.update(num_layers=1, num_heads=heads, width=width, ffn_hidden=2048, dropout=0.0,
                      tower_activation="relu")
    names = ["target_item", "target_category", "hist_item", "hist_category"]
    x = {n: torch.from_numpy(np.ascontiguousarray(data[n])).to(device) for n in names}
    x["constant"] = torch.zeros(len(data["label"]), dtype=torch.int64, device=device)
    model.to(device)

    def predict(inputs):
        return model(inputs)  # sigmoid probabilities [B]

    return model, x, predict, (lambda: None), model.eval, config, deviations


def _median(values: List[float]) -> float:
    ordered = sorted(values)
    n = len(ordered)
    return ordered[n // 2] if n % 2 else 0.5 * (ordered[n // 2 - 1] + ordered[n // 2])


def _peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def run_peer(args: argparse.Namespace) -> dict:
    """Build the peer model, time training and inference steps; the result object of the script."""
    import importlib.metadata
    import platform
    import threading
    import time

    threads_before = set(threading.enumerate())
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(args.threads)
    if args.peer == "deepctr":
        import deepctr_torch  # noqa: F401  (starts its PyPI version check thread)
    else:
        import torch_rechub  # noqa: F401
    notes = _join_new_threads(threads_before)

    synthetic = _load_synthetic()
    data = synthetic.make_batch(args.batch, args.seq_len, seed=args.seed)
    vocab = synthetic.vocab_sizes()
    if args.peer == "deepctr":
        model, x, predict, extra_loss, eval_mode, config = _build_deepctr(
            args.model, data, vocab, args.dim, args.seq_len, args.seed, args.device)
        deviations = []
    else:
        model, x, predict, extra_loss, eval_mode, config, deviations = _build_rechub(
            args.model, data, vocab, args.dim, args.seq_len, args.seed, args.device)
    deviations = NOTES[(args.peer, args.model)] + deviations + notes
    label = torch.from_numpy(data["label"]).to(args.device)
    # on a GPU a step is timed to its end, not to its last kernel launch
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)

    def train_step() -> float:
        optimizer.zero_grad()
        loss = F.binary_cross_entropy(predict(x), label)
        extra = extra_loss()
        if extra is not None:
            loss = loss + extra
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    model.train()
    losses, train_times = [], []
    for i in range(args.warmup + args.steps):
        sync()
        start = time.perf_counter()
        losses.append(train_step())
        sync()
        if i >= args.warmup:
            train_times.append(time.perf_counter() - start)
    rss_train = _peak_rss_mib()

    eval_mode()
    infer_times = []
    with torch.no_grad():
        for i in range(args.warmup + args.steps):
            sync()
            start = time.perf_counter()
            predict(x)
            sync()
            if i >= args.warmup:
                infer_times.append(time.perf_counter() - start)

    train_s, infer_s = _median(train_times), _median(infer_times)
    distribution = PEER_DISTRIBUTIONS[args.peer]
    return {
        "peer": args.peer,
        "model": args.model,
        "library": distribution,
        "library_version": importlib.metadata.version(distribution),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "seq_len": args.seq_len,
        "batch": args.batch,
        "dim": args.dim,
        "threads": torch.get_num_threads(),
        "steps": args.steps,
        "warmup": args.warmup,
        "seed": args.seed,
        "batch_sha256": synthetic.fingerprint(data),
        "train_samples_per_s": args.batch / train_s,
        "train_step_s_median": train_s,
        "train_step_s": train_times,
        "infer_samples_per_s": args.batch / infer_s,
        "infer_step_s_median": infer_s,
        "infer_step_s": infer_times,
        "peak_rss_mib_after_train": rss_train,
        "peak_rss_mib": _peak_rss_mib(),
        **({"peak_cuda_mib": torch.cuda.max_memory_allocated() / 2**20,
            "gpu": torch.cuda.get_device_name()} if args.device == "cuda" else {}),
        "device": args.device,
        "num_params": sum(p.numel() for p in model.parameters()),
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "optimizer": f"torch.optim.Adam(lr={LEARNING_RATE:g}) over all parameters (dense embedding gradients)",
        "config": config,
        "deviations": deviations,
    }


def _parse(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Time one peer-library model on the benchmark's synthetic batch "
                                            "(prints one JSON object).")
    p.add_argument("--peer", required=True, choices=sorted(PEER_MODELS))
    p.add_argument("--model", required=True, choices=sorted({m for ms in PEER_MODELS.values() for m in ms}))
    p.add_argument("--seq-len", type=int, required=True)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--warmup", type=int, required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = p.parse_args(argv)
    if args.model not in PEER_MODELS[args.peer]:
        p.error(f"--peer {args.peer} has models {', '.join(PEER_MODELS[args.peer])}, not {args.model}")
    for name in ("seq_len", "batch", "dim", "steps", "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup < 0:
        p.error("--warmup must be >= 0")
    return args


def main(argv: Optional[List[str]] = None) -> None:
    args = _parse(argv)
    stdout = sys.stdout
    sys.stdout = sys.stderr  # whatever the libraries print must not reach the JSON channel
    try:
        result = run_peer(args)
    finally:
        sys.stdout = stdout
    stdout.write(json.dumps(result) + "\n")
    stdout.flush()


if __name__ == "__main__":
    main()
