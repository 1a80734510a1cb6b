"""tinrec: TorchRec-based training of CTR / user-interest models.

Importing this package is cheap on purpose (no torchrec import): ``tinrec.modules`` (the plain-PyTorch
interest modules, folder ``modules/``) must import without the framework.
"""

__version__ = "0.1.0"
