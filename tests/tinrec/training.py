"""A TIN training set up on a tiny generated dataset, for tests that drive the real pipeline step by step."""

import itertools
import os

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def tiny_training(tmp_path, *overrides, batches=3, config="default.yaml"):
    """(the loader's first ``batches`` training batches, the DMP model, the training loop's pipeline) of
    ``configs/<config>`` on a tiny generated dataset."""
    from tinrec.config import load_config
    from tinrec.distributed import init_distributed
    from tinrec.train import Data, build_training

    cfg = load_config(os.path.join(REPO, "configs", config), [
        f"data.path={tmp_path / 'data'}", f"run_dir={tmp_path / 'run'}", "data.num_workers=0",
        "data.generate.num_users=60", "data.generate.num_items=40", "data.generate.num_categories=5",
        "data.generate.train_rows=512", "data.generate.valid_rows=64", "data.generate.test_rows=64",
        "data.generate.seq_len_mean=10.0", "data.generate.seq_len_max=20", "data.generate.show_progress=false",
        "data.max_len=16", "train.batch_size=64", "train.sparse_optimizer.lr=0.5", *overrides])
    env = init_distributed()
    data = Data(cfg, env)
    first = list(itertools.islice(data.loader(data.stream("train", train=True)), batches))
    model, _, _, pipeline = build_training(cfg, data, env)
    return first, model, pipeline


def train_then_eval(model, pipeline, batches):
    """Logits of training on ``batches`` then of evaluating the first of them, through the pipeline, each mode run
    to the end of its batches as ``tinrec.train`` runs them."""
    import torch

    logits = []
    for mode, source in (("train", batches), ("eval", batches[:1])):
        getattr(model, mode)()
        it = iter(source)
        with torch.set_grad_enabled(mode == "train"):
            while True:
                try:
                    logits.append(pipeline.progress(it)[0].detach())
                except StopIteration:
                    break
    return logits
