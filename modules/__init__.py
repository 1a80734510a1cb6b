"""Interest modules: plain PyTorch (no torchrec, fbgemm_gpu or tinrec imports).

Installed as ``tinrec.modules``. Each module takes dense, padded tensors and returns ``[B, out_dim]``.
"""
