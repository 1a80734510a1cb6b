"""``tinrec convert``: each public dataset's converter on tiny files in the exact published formats (written
here), against a hand-computed expected output row by row; malformed lines named by file and line; reruns
byte-identical; the output passes ``tinrec check-data``; a user's folder is never written into."""

import json
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tinrec.convert import movielens
from tinrec.data.scan import scan

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _write(folder, files):
    os.makedirs(folder, exist_ok=True)
    for name, text in files.items():
        with open(os.path.join(folder, name), "w", encoding="latin-1") as f:
            f.write(text)
    return str(folder)


def _rows(out, split):
    meta = json.load(open(os.path.join(out, "meta.json")))
    t = pa.concat_tables([pq.read_table(os.path.join(out, f)) for f in meta["splits"][split]["files"]])
    return t.to_pylist()


def _tree(root):
    out = {}
    for d, _, names in os.walk(root):
        for n in names:
            with open(os.path.join(d, n), "rb") as f:
                out[os.path.relpath(os.path.join(d, n), root)] = f.read()
    return out


# MovieLens: users 10 (F, 25) and 20 (M, 56); 30 has one rating (dropped) and no profile; movie 9 is unknown.
ML_1M = {
    "movies.dat": "1::Toy Story (1995)::Animation|Children's|Comedy\n2::Jumanji (1995)::Adventure|Children's|Fantasy\n"
                  "3::Heat (1995)::Action|Crime|Thriller\n",
    "users.dat": "10::F::25::3::12345\n20::M::56::7::54321\n",
    "ratings.dat": "10::1::5::100\n10::2::3::200\n20::2::4::150\n10::3::4::300\n20::3::1::160\n20::1::5::170\n"
                   "10::1::2::400\n30::1::5::10\n10::9::5::500\n",
}
FLAGS = {"Animation": 3, "Adventure": 2, "Action": 1}  # index in u.item's 19 genre flags


def _item_line(mid, title, genres):
    flags = ["0"] * 19
    for g in genres:
        flags[movielens.GENRES_100K.index(g)] = "1"
    return "|".join([str(mid), title, "01-Jan-1995", "", "http://x"] + flags) + "\n"


ML_100K = {
    "u.item": _item_line(1, "Toy Story (1995)", ["Animation", "Children's", "Comedy"])
    + _item_line(2, "Jumanji (1995)", ["Adventure", "Children's", "Fantasy"])
    + _item_line(3, "Heat (1995)", ["Action", "Crime", "Thriller"]),
    "u.user": "10|25|F|writer|12345\n20|60|M|other|54321\n",
    "u.data": "".join(f"{u}\t{m}\t{r}\t{t}\n" for u, m, r, t in (
        (10, 1, 5, 100), (10, 2, 3, 200), (20, 2, 4, 150), (10, 3, 4, 300), (20, 3, 1, 160), (20, 1, 5, 170),
        (10, 1, 2, 400), (30, 1, 5, 10), (10, 9, 5, 500))),
}


def _ml_expected():
    """By hand: users 10 -> 1 (F = 2, age 25 -> bucket 3), 20 -> 2 (M = 1, age 56 (1M) / 60 (100K) -> 7); items in
    file order 1, 2, 3 with categories Animation 1, Adventure 2, Action 3; a rating >= 4 is positive; the
    history is the earlier positives; per user the last rating is test, the one before valid."""
    def row(label, user, item, ts, hist):
        age, gender = {1: (3, 2), 2: (7, 1)}[user]
        return {"label": label, "user_id": user, "user_age": age, "user_gender": gender, "target_item": item,
                "target_category": item, "target_brand": 0, "target_author": 0, "target_timestamp": ts,
                "hist_item": [i for i, _ in hist], "hist_category": [i for i, _ in hist],
                "hist_brand": [0] * len(hist), "hist_author": [0] * len(hist), "hist_timestamp": [t for _, t in hist]}
    return {"train": [row(1, 1, 1, 100, []), row(0, 1, 2, 200, [(1, 100)]), row(1, 2, 2, 150, [])],
            "valid": [row(1, 1, 3, 300, [(1, 100)]), row(0, 2, 3, 160, [(2, 150)])],
            "test": [row(0, 1, 1, 400, [(1, 100), (3, 300)]), row(1, 2, 1, 170, [(2, 150)])]}


@pytest.mark.parametrize("layout, files", [("1m", ML_1M), ("100k", ML_100K)])
def test_movielens_rows_are_the_hand_computed_ones(tmp_path, layout, files):
    src = _write(tmp_path / "in", files)
    out = str(tmp_path / "out")
    meta = movielens.convert(src, out, show_progress=False)
    for split, rows in _ml_expected().items():
        assert _rows(out, split) == rows, split
    counts = meta["converter"]["counts"]
    assert meta["converter"]["name"] == f"movielens-{layout}"
    assert counts["users"] == 2 and counts["items"] == 3 and counts["categories"] == 3 and counts["samples"] == 7
    assert counts["positives"] == 4 and counts["users_without_profile"] == 1
    assert counts["dropped"] == {"rating of a movie not in the movies file": 1,
                                 "rating of a user with fewer than 3 ratings": 1}
    assert meta["tables"] == {"user": 4, "item": 4, "category": 4, "brand": 1, "author": 1, "age": 8, "gender": 3}
    report = scan(out, meta, show_progress=False)
    assert report["ok"], report["problems"]
    again = str(tmp_path / "again")
    movielens.convert(src, again, show_progress=False)
    assert _tree(out) == _tree(again)  # deterministic, byte for byte


@pytest.mark.parametrize("name, text, message", [
    ("ratings.dat", "10::1::5::100\n10::2::3\n", r"ratings\.dat:2: field ratings: expected 4 fields, got 3"),
    ("ratings.dat", "10::1::five::100\n", r"ratings\.dat:1: field rating: expected an integer, got 'five'"),
    ("users.dat", "10::X::25::3::1\n", r"users\.dat:1: field gender: expected M or F, got 'X'"),
    ("movies.dat", "1::A::Action\n1::B::Drama\n", r"movies\.dat:2: field movie id: 1 appears twice"),
])
def test_a_malformed_line_is_named_by_file_and_line(tmp_path, name, text, message):
    src = _write(tmp_path / "in", {**ML_1M, name: text})
    with pytest.raises(ValueError, match=message):
        movielens.convert(src, str(tmp_path / "out"), show_progress=False)


def test_the_command_refuses_a_users_folder_and_a_folder_that_is_not_the_dataset(tmp_path):
    src = _write(tmp_path / "in", ML_1M)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    run = lambda *a: subprocess.run([sys.executable, "-m", "tinrec.cli", "convert", *a], cwd=REPO,  # noqa: E731
                                    capture_output=True, text=True, timeout=300)
    p = run("movielens", "--input", src, "--output", str(mine))
    assert p.returncode == 2 and "holds files tinrec did not write (notes.txt)" in p.stderr
    assert sorted(os.listdir(mine)) == ["notes.txt"]
    p = run("movielens", "--input", str(tmp_path), "--output", str(tmp_path / "out"))
    assert p.returncode == 2 and "not a MovieLens 100K or 1M folder: expected the published files" in p.stderr
    p = run("movielens", "--input", src, "--output", str(tmp_path / "out"), "--max-history", "1")
    assert p.returncode == 0, p.stderr
    assert "train 3 samples" in p.stdout and "dropped (rating of a movie not in the movies file): 1" in p.stdout
    assert _rows(str(tmp_path / "out"), "test")[0]["hist_item"] == [3]  # the latest positive only
