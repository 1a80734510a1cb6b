"""benchmarks/synthetic.py: the shared benchmark batch (shapes, dtypes, id ranges, determinism, numpy only)."""

import os
import subprocess
import sys

import numpy as np
import pytest

from benchmarks import synthetic

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_shapes_and_dtypes():
    b = synthetic.make_batch(5, 7)
    assert set(b) == set(synthetic.KEYS)
    for key in ("target_item", "target_category", "hist_len"):
        assert b[key].shape == (5,) and b[key].dtype == np.int64
    for key in ("hist_item", "hist_category"):
        assert b[key].shape == (5, 7) and b[key].dtype == np.int64
    assert b["label"].shape == (5,) and b["label"].dtype == np.float32
    assert (b["hist_len"] == 7).all()


def test_id_ranges_no_padding():
    b = synthetic.make_batch(64, 50, num_items=30, num_categories=4)
    for key, high in (("target_item", 30), ("hist_item", 30), ("target_category", 4), ("hist_category", 4)):
        assert b[key].min() >= 1 and b[key].max() <= high, key  # 0 is padding and never occurs
    assert set(np.unique(b["hist_item"])) == set(range(1, 31))  # uniform over all ids
    assert set(np.unique(b["hist_category"])) == set(range(1, 5))
    assert set(np.unique(b["label"])) == {0.0, 1.0}
    assert synthetic.vocab_sizes(num_items=30, num_categories=4) == {"item": 31, "category": 5}


def test_default_ranges_fit_the_tables():
    b = synthetic.make_batch(32, 40)
    rows = synthetic.vocab_sizes()
    assert b["hist_item"].max() < rows["item"] and b["target_category"].max() < rows["category"]


def test_category_is_a_function_of_the_item():
    b = synthetic.make_batch(16, 200, num_items=50)
    items = np.concatenate([b["target_item"], b["hist_item"].ravel()])
    cats = np.concatenate([b["target_category"], b["hist_category"].ravel()])
    for item in np.unique(items):
        assert len(np.unique(cats[items == item])) == 1
    np.testing.assert_array_equal(synthetic.item_category(b["hist_item"]), b["hist_category"])


def test_deterministic_in_seed():
    a, b = synthetic.make_batch(8, 20, seed=3), synthetic.make_batch(8, 20, seed=3)
    for key in synthetic.KEYS:
        np.testing.assert_array_equal(a[key], b[key])
    assert synthetic.fingerprint(a) == synthetic.fingerprint(b)
    c = synthetic.make_batch(8, 20, seed=4)
    assert not np.array_equal(a["hist_item"], c["hist_item"])
    assert synthetic.fingerprint(a) != synthetic.fingerprint(c)
    # targets and labels do not depend on the history length
    d = synthetic.make_batch(8, 5, seed=3)
    np.testing.assert_array_equal(a["target_item"], d["target_item"])
    np.testing.assert_array_equal(a["label"], d["label"])


def test_known_values():
    # SplitMix64, not numpy's generators: these numbers must not change with the numpy version
    b = synthetic.make_batch(4, 3)
    assert b["target_item"].tolist() == [1971, 66696, 47528, 73005]
    assert b["target_category"].tolist() == [527, 214, 168, 785]
    assert b["hist_item"].tolist() == [[93855, 56342, 22981], [27691, 82841, 75291], [92957, 7409, 2104],
                                       [23823, 39290, 86435]]
    assert b["label"].tolist() == [0.0, 1.0, 0.0, 0.0]
    assert synthetic.fingerprint(b) == "f633d969dd6fa8457ffd7623a66f2469f86f5dc08252efb58f87a594a37d400a"


@pytest.mark.parametrize("kwargs", [dict(batch=0, seq_len=3), dict(batch=2, seq_len=0),
                                    dict(batch=2, seq_len=3, num_items=0)])
def test_invalid_sizes(kwargs):
    with pytest.raises(ValueError):
        synthetic.make_batch(**kwargs)


def test_imports_no_torch():
    code = "import sys, benchmarks.synthetic; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
