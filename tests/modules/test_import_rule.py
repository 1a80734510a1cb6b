"""The interest modules under modules/ are plain PyTorch: no torchrec, fbgemm_gpu or tinrec.

Between themselves they import relatively (``from .masking import ...``): the folder is installed
as ``tinrec.modules``, so an absolute ``import modules...`` would only work from a source checkout.
"""
import ast
from pathlib import Path

BANNED = {"torchrec", "fbgemm_gpu", "tinrec"}
MODULES_DIR = Path(__file__).parents[2] / "modules"
EXPECTED = {"masking.py", "mlp.py", "tin.py", "din.py", "pooling.py"}


def _absolute_imports(path: Path):
    """Yield (line, top-level package) of every absolute import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module.split(".")[0]


def _module_files():
    files = sorted(MODULES_DIR.rglob("*.py"))
    assert files, f"no .py files found under {MODULES_DIR}"
    assert EXPECTED <= {f.name for f in files}, sorted(f.name for f in files)
    return files


def _offending(banned):
    return [
        f"{f.relative_to(MODULES_DIR.parent)}:{line} imports {pkg}"
        for f in _module_files()
        for line, pkg in _absolute_imports(f)
        if pkg in banned
    ]


def test_modules_do_not_import_torchrec_fbgemm_or_tinrec():
    offending = _offending(BANNED)
    assert not offending, "\n".join(offending)


def test_modules_import_each_other_relatively():
    offending = _offending({"modules"})
    assert not offending, "\n".join(offending)


def test_the_checker_catches_a_banned_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import os\nfrom torchrec.sparse import KeyedJaggedTensor\nfrom .masking import x\n"
        "import fbgemm_gpu.split_table_batched_embeddings_ops\n"
    )
    assert [pkg for _, pkg in _absolute_imports(bad)] == ["os", "torchrec", "fbgemm_gpu"]
