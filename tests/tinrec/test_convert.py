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


# Amazon (2014 files): metadata as published (Python literals, single quotes; one JSON line too), 5-core reviews.
AMAZON = {
    "meta_Books.json": "{'asin': 'X1', 'categories': [['Books', 'Fiction'], ['Books', 'Fantasy']], 'brand': 'P'}\n"
                       "{'asin': 'X2', 'title': \"Tom's\", 'categories': [['Books', 'History']]}\n"
                       '{"asin": "X3", "categories": [["Books", "Fiction"]], "brand": "Q"}\n'
                       "{'asin': 'X4', 'categories': [['Books', 'History']], 'brand': 'P'}\n"
                       "{'asin': 'X5', 'categories': []}\n",
    "reviews_Books_5.json": "".join(json.dumps({"reviewerID": u, "asin": a, "unixReviewTime": t, "overall": 5.0}) + "\n"
                                    for u, a, t in (("A", "X1", 100), ("B", "X2", 110), ("A", "X3", 300),
                                                    ("A", "X2", 200), ("B", "X3", 120), ("A", "X5", 250),
                                                    ("B", "X4", 130), ("C", "X1", 50), ("C", "X2", 60),
                                                    ("D", "X4", 10), ("D", "X1", 20), ("D", "X2", 30),
                                                    ("D", "X4", 40))),
}


def _amazon_expected():
    """By hand: users A 1, B 2, C 3 (2 reviews: dropped), D 4; items X1..X4 -> 1..4 (X5 has no category: its
    review dropped); categories Fantasy 1, Fiction 2, History 3 (the last leaf of the last path); brands P 1, Q 2.
    Each user's history leaves one item unreviewed, so each negative is that item: A X4, B X1, D X3."""
    cat, brand = {1: 1, 2: 3, 3: 2, 4: 3}, {1: 1, 2: 0, 3: 2, 4: 1}

    def pair(user, pos, neg, ts, hist):
        def row(label, item):
            return {"label": label, "user_id": user, "user_age": 0, "user_gender": 0, "target_item": item,
                    "target_category": cat[item], "target_brand": brand[item], "target_author": 0,
                    "target_timestamp": ts, "hist_item": [i for i, _ in hist], "hist_category": [cat[i] for i, _ in hist],
                    "hist_brand": [brand[i] for i, _ in hist], "hist_author": [0] * len(hist),
                    "hist_timestamp": [t for _, t in hist]}
        return [row(1, pos), row(0, neg)]
    return {"train": pair(4, 1, 3, 20, [(4, 10)]),
            "valid": pair(1, 2, 4, 200, [(1, 100)]) + pair(2, 3, 1, 120, [(2, 110)])
            + pair(4, 2, 3, 30, [(4, 10), (1, 20)]),
            "test": pair(1, 3, 4, 300, [(1, 100), (2, 200)]) + pair(2, 4, 1, 130, [(2, 110), (3, 120)])
            + pair(4, 4, 3, 40, [(4, 10), (1, 20), (2, 30)])}


def test_amazon_rows_are_the_hand_computed_ones(tmp_path):
    from tinrec.convert import amazon

    src = _write(tmp_path / "in", AMAZON)
    out = str(tmp_path / "out")
    meta = amazon.convert(src, out, show_progress=False)
    for split, rows in _amazon_expected().items():
        assert _rows(out, split) == rows, split
    assert meta["converter"]["counts"] == {
        "users": 3, "items": 4, "categories": 3, "brands": 2, "samples": 14, "positives": 7, "input_reviews": 13,
        "dropped": {"review of a user with fewer than 3 reviews": 2,
                    "review of an item without metadata or category": 1}}
    assert scan(out, meta, show_progress=False)["ok"]
    again = str(tmp_path / "again")
    amazon.convert(src, again, show_progress=False)
    assert _tree(out) == _tree(again)
    with pytest.raises(ValueError, match=r"reviews_Books_5\.json:2: field unixReviewTime: expected an integer"):
        bad = dict(AMAZON, **{"reviews_Books_5.json": AMAZON["reviews_Books_5.json"].replace('"unixReviewTime": 110',
                                                                                            '"unixReviewTime": "x"')})
        amazon.convert(_write(tmp_path / "bad", bad), str(tmp_path / "out2"), show_progress=False)


def test_amazon_reads_the_gzip_files_as_published(tmp_path):
    import gzip

    from tinrec.convert import amazon

    os.makedirs(tmp_path / "in")
    for name, text in AMAZON.items():
        with gzip.open(tmp_path / "in" / (name + ".gz"), "wt", encoding="latin-1") as f:
            f.write(text)
    amazon.convert(str(tmp_path / "in"), str(tmp_path / "out"), show_progress=False)
    for split, rows in _amazon_expected().items():
        assert _rows(str(tmp_path / "out"), split) == rows, split


def test_amazon_negatives_lie_outside_the_history_and_depend_on_the_seed(tmp_path):
    """On a larger set of random reviews: every negative is an item the user never reviewed, every item can be
    one, and another seed draws other negatives (the positives do not move)."""
    import random

    from tinrec.convert import amazon

    r = random.Random(5)
    meta = "".join(f"{{'asin': 'I{i}', 'categories': [['Books', 'C{i % 4}']]}}\n" for i in range(30))
    reviews = "".join(json.dumps({"reviewerID": f"U{u}", "asin": f"I{r.randrange(30)}", "unixReviewTime": t}) + "\n"
                      for u in range(40) for t in range(8))
    src = _write(tmp_path / "in", {"meta_Books.json": meta, "reviews_Books_5.json": reviews})
    got = {}
    for seed in (0, 1):
        out = str(tmp_path / f"s{seed}")
        amazon.convert(src, out, seed=seed, show_progress=False)
        rows = [x for s in ("train", "valid", "test") for x in _rows(out, s)]
        reviewed = {}
        for x in rows:
            if x["label"] == 1:
                reviewed.setdefault(x["user_id"], set()).update(x["hist_item"] + [x["target_item"]])
        negs = [(x["user_id"], x["target_item"]) for x in rows if x["label"] == 0]
        assert all(item not in reviewed[u] for u, item in negs)
        got[seed] = negs
    assert len({i for _, i in got[0]}) > 15 and got[0] != got[1]


def _taobao_csv():
    from tinrec.convert.taobao import DAY, START
    rows = [(7, 100, 5, "pv", START + 10), (7, 101, 5, "buy", START + 20), (8, 103, 6, "pv", START + 50),
            (7, 102, 6, "pv", START + DAY + 5), (7, 100, 5, "cart", START + 7 * DAY + 1),
            (7, 103, 6, "fav", START + 8 * DAY + 3), (8, 102, 6, "buy", START + 8 * DAY + 100),
            (7, 101, 5, "pv", START + 8 * DAY + 9), (9, 104, 7, "pv", START + 2 * DAY),
            (7, 105, 7, "pv", START - 5), (8, 106, 7, "pv", START + 9 * DAY)]
    return "".join(f"{u},{i},{c},{b},{t}\n" for u, i, c, b, t in rows), START, DAY


def test_taobao_rows_are_the_hand_computed_ones_and_do_not_depend_on_the_partitions(tmp_path):
    """By hand: the last behaviour of each (user, day) with an earlier behaviour is a positive; its history the
    user's earlier behaviours (types pv 1, buy 2, cart 3, fav 4); day 8 (0-based 7) -> valid, day 9 -> test; the
    two behaviours outside the 9 days are dropped; user 9 has one behaviour and no sample. Each positive is
    followed by a negative with the same history, an item of the data outside the user's past."""
    from tinrec.convert import taobao

    text, S, D = _taobao_csv()
    src = _write(tmp_path / "in", {"UserBehavior.csv": text})
    out = str(tmp_path / "out")
    meta = taobao.convert(src, out, partitions=3, show_progress=False)
    cat = {100: 5, 101: 5, 102: 6, 103: 6, 104: 7}
    kinds = {"pv": 1, "buy": 2, "cart": 3, "fav": 4}
    u7 = [(100, S + 10, "pv"), (101, S + 20, "buy"), (102, S + D + 5, "pv"), (100, S + 7 * D + 1, "cart"),
          (103, S + 8 * D + 3, "fav"), (101, S + 8 * D + 9, "pv")]
    u8 = [(103, S + 50, "pv"), (102, S + 8 * D + 100, "buy")]

    def positive(user, log, j):
        hist = log[:j]
        return {"label": 1, "user_id": user, "target_item": log[j][0], "target_category": cat[log[j][0]],
                "target_timestamp": log[j][1], "hist_item": [i for i, _, _ in hist],
                "hist_category": [cat[i] for i, _, _ in hist], "hist_timestamp": [t for _, t, _ in hist],
                "hist_behavior": [kinds[b] for _, _, b in hist]}
    want = {"train": [positive(7, u7, 1), positive(7, u7, 2)], "valid": [positive(7, u7, 3)],
            "test": [positive(7, u7, 5), positive(8, u8, 1)]}  # partitions 7 % 3 = 1 before 8 % 3 = 2
    for split, positives in want.items():
        rows = _rows(out, split)
        assert [r["label"] for r in rows] == [1, 0] * len(positives)
        for pos, neg, w in zip(rows[::2], rows[1::2], positives):
            assert {k: pos[k] for k in w} == w
            assert {k: neg[k] for k in w if k.startswith("hist_") or k in ("user_id", "target_timestamp")} == \
                {k: w[k] for k in w if k.startswith("hist_") or k in ("user_id", "target_timestamp")}
            past = set(w["hist_item"]) | {w["target_item"]}
            assert neg["target_item"] in cat and neg["target_item"] not in past
            assert neg["target_category"] == cat[neg["target_item"]]
    counts = meta["converter"]["counts"]
    assert counts["dropped"] == {"behaviour outside the 9 days": 2}
    assert (counts["users"], counts["items"], counts["categories"], counts["samples"]) == (3, 5, 3, 10)
    assert meta["tables"]["behavior"] == 5 and meta["tables"]["item"] == 105 and meta["tables"]["user"] == 10
    assert scan(out, meta, show_progress=False)["ok"]
    assert not os.path.exists(os.path.join(out, ".tinrec", "tmp"))
    one = str(tmp_path / "one")
    taobao.convert(src, one, partitions=1, show_progress=False)
    key = lambda r: (r["user_id"], r["target_timestamp"], r["label"])  # noqa: E731
    for split in want:  # the same samples, negatives included, whatever the partitions (only the order differs)
        assert sorted(_rows(one, split), key=key) == sorted(_rows(out, split), key=key)
    again = str(tmp_path / "again")
    taobao.convert(src, again, partitions=3, show_progress=False)
    assert _tree(again) == _tree(out)
    short = str(tmp_path / "short")  # the short-term sequence: the history's latest --short-len behaviours
    taobao.convert(src, short, short_len=1, show_progress=False)
    for split in want:
        for folder, k in ((short, 1), (out, 50)):
            for r in _rows(folder, split):
                assert r["short_item"] == r["hist_item"][-k:] and r["short_timestamp"] == r["hist_timestamp"][-k:]
    with pytest.raises(ValueError, match=r"UserBehavior\.csv:2: field behavior_type: expected pv, buy, cart or fav"):
        bad = _write(tmp_path / "bad", {"UserBehavior.csv": text.replace(",buy,", ",like,", 1)})
        taobao.convert(bad, str(tmp_path / "out3"), show_progress=False)


def test_taobao_negative_draws_are_uniform_and_follow_the_seed():
    """The hash behind Taobao's negatives: uniform over the items, a function of (seed, user, day, attempt)."""
    import numpy as np

    from tinrec.convert.common import draw

    users, days = np.arange(20000), np.arange(20000) % 9
    counts = np.bincount(draw(0, users, days, 0, 10), minlength=10)
    assert counts.min() > 1800 and counts.max() < 2200
    assert (draw(0, users, days, 0, 1000) != draw(1, users, days, 0, 1000)).mean() > 0.99
    assert (draw(0, users, days, 0, 1000) != draw(0, users, days, 1, 1000)).mean() > 0.99
    assert np.array_equal(draw(0, users[5:9], days[5:9], 0, 1000), draw(0, users, days, 0, 1000)[5:9])


def _alimama_files():
    from tinrec.convert.alimama import DAY, START
    S, D = START, DAY
    samples = [(7, S + 100, 1, 0, 1), (7, S + 200, 2, 1, 0), (7, S + 6 * D + 40, 2, 0, 1), (7, S + 6 * D + 50, 3, 1, 0),
               (7, S + 7 * D + 5, 3, 0, 1),
               (7, S + 7 * D + 10, 1, 0, 1), (8, S + 7 * D + 20, 2, 1, 0), (7, S + 9 * D, 1, 0, 1), (9, S + 50, 99, 0, 1)]
    log = [(7, S + 50, "pv", 10, "50"), (7, S + 150, "cart", 11, "NULL"), (7, S + 7 * D + 10, "buy", 10, "51"),
           (8, S + 10, "fav", 12, "52"), (7, S + 10 * D, "pv", 10, "50")]
    return {
        "ad_feature.csv": "adgroup_id,cate_id,campaign_id,customer,brand,price\n1,10,100,1000,50,9.9\n"
                          "2,11,101,1001,NULL,5.0\n3,10,102,1002,51,1.0\n",
        "user_profile.csv": "userid,cms_segid,cms_group_id,final_gender_code,age_level,pvalue_level,shopping_level,"
                            "occupation,new_user_class_level \n7,0,5,2,3,1,3,0,2\n",
        "raw_sample.csv": "user,time_stamp,adgroup_id,pid,nonclk,clk\n"
                          + "".join(f"{u},{t},{a},430548_1007,{n},{c}\n" for u, t, a, n, c in samples),
        "behavior_log.csv": "user,time_stamp,btag,cate,brand\n" + "".join(f"{u},{t},{b},{c},{br}\n" for u, t, b, c, br in log),
    }, S, D


@pytest.mark.parametrize("protocol", ["tin", "dei2n", "dumn"])
def test_alimama_rows_are_the_hand_computed_ones(tmp_path, protocol):
    """By hand, on 9 impressions and 5 logged behaviours: the history is the user's behaviours strictly before
    the impression (the buy at the test impression's own second is not in it), split by day (7th valid, 8th
    test), ad groups' categories and brands (NULL -> 0), profile (user 8 has none: 0); dei2n keeps the
    impressions with a click in the 4 hours before (the trigger), dumn adds the earlier unclicked impressions to
    the history and tells the feedback kinds apart."""
    from tinrec.convert import alimama

    files, S, D = _alimama_files()
    src = _write(tmp_path / "in", files)
    out = str(tmp_path / "out")
    meta = alimama.convert(src, out, protocol=protocol, partitions=2, show_progress=False)
    ad = {1: (10, 50), 2: (11, 0), 3: (10, 51)}
    pv, cart, fav = (0, 10, 50, S + 50, 1), (0, 11, 0, S + 150, 3), (0, 12, 52, S + 10, 4)
    un2, un3 = (2, 11, 0, S + 200, 5), (3, 10, 51, S + 6 * D + 50, 5)
    fb = {1: 0, 2: 1, 3: 1, 4: 1, 5: 3}

    def row(user, ts, item, label, hist, trigger=None):
        r = {"label": label, "user_id": user, "user_age": 4 if user == 7 else 0, "user_gender": 2 if user == 7 else 0,
             "target_item": item, "target_category": ad[item][0], "target_brand": ad[item][1], "target_author": 0,
             "target_timestamp": ts, "hist_item": [h[0] for h in hist], "hist_category": [h[1] for h in hist],
             "hist_brand": [h[2] for h in hist], "hist_author": [0] * len(hist), "hist_timestamp": [h[3] for h in hist],
             "hist_behavior": [h[4] for h in hist]}
        if protocol == "dumn":
            r["hist_feedback"] = [fb[h[4]] for h in hist]
        if trigger:
            r.update(trigger_item=trigger, trigger_category=ad[trigger][0], page=1)
        return r
    if protocol == "tin":
        want = {"train": [row(7, S + 100, 1, 1, [pv]), row(7, S + 200, 2, 0, [pv, cart])],
                "valid": [row(7, S + 6 * D + 40, 2, 1, [pv, cart]), row(7, S + 6 * D + 50, 3, 0, [pv, cart])],
                "test": [row(7, S + 7 * D + 5, 3, 1, [pv, cart]), row(7, S + 7 * D + 10, 1, 1, [pv, cart]),
                         row(8, S + 7 * D + 20, 2, 0, [fav])]}
    elif protocol == "dei2n":
        want = {"train": [row(7, S + 200, 2, 0, [pv, cart], trigger=1)],
                "valid": [row(7, S + 6 * D + 50, 3, 0, [pv, cart], trigger=2)],
                "test": [row(7, S + 7 * D + 10, 1, 1, [pv, cart], trigger=3)]}
    else:
        want = {"train": [row(7, S + 100, 1, 1, [pv]), row(7, S + 200, 2, 0, [pv, cart])],
                "valid": [row(7, S + 6 * D + 40, 2, 1, [pv, cart, un2]), row(7, S + 6 * D + 50, 3, 0, [pv, cart, un2])],
                "test": [row(7, S + 7 * D + 5, 3, 1, [pv, cart, un2, un3]),
                         row(7, S + 7 * D + 10, 1, 1, [pv, cart, un2, un3]), row(8, S + 7 * D + 20, 2, 0, [fav])]}
    for split, rows in want.items():
        got = _rows(out, split)
        key = lambda r: (r["user_id"], r["target_timestamp"])  # noqa: E731 (partition order: by user id mod 2)
        assert sorted(got, key=key) == rows, split
    dropped = {"behaviour after the last day": 1, "impression of an ad group not in ad_feature.csv": 1,
               "impression outside the 8 days": 1}
    if protocol == "dei2n":
        dropped["impression without a click in the 4 hours before it"] = 4
    assert meta["converter"]["counts"]["dropped"] == dropped
    assert meta["tables"]["category"] == 13 and meta["tables"]["brand"] == 53 and meta["tables"]["behavior"] == 6
    counts = meta["converter"]["counts"]
    assert (counts["items"], counts["categories"], counts["users"]) == (3, 2, 2)  # ad groups 1-3; categories 10, 11
    assert scan(out, meta, show_progress=False)["ok"]


def test_alimama_names_a_bad_header_and_a_bad_line(tmp_path):
    from tinrec.convert import alimama

    files, _, _ = _alimama_files()
    no_space = dict(files, **{"user_profile.csv": files["user_profile.csv"].replace("new_user_class_level \n",
                                                                                  "level\n")})
    with pytest.raises(ValueError, match=r"user_profile\.csv:1: field header: expected 'userid,"):
        alimama.convert(_write(tmp_path / "a", no_space), str(tmp_path / "o1"), show_progress=False)
    bad = dict(files, **{"behavior_log.csv": files["behavior_log.csv"].replace(",cart,", ",like,")})
    with pytest.raises(ValueError, match=r"behavior_log\.csv:3: field btag: expected pv, buy, cart or fav, got 'like'"):
        alimama.convert(_write(tmp_path / "b", bad), str(tmp_path / "o2"), show_progress=False)


def _contentwise_folder(root, rows, **types):
    """The published layout: CW10M/interactions/part.0.parquet with every published column."""
    folder = os.path.join(root, "CW10M", "interactions")
    os.makedirs(folder)
    cols = {"utc_ts_milliseconds": [r[0] for r in rows], "user_id": [r[1] for r in rows], "item_id": [r[2] for r in rows],
            "item_type": [3] * len(rows), "series_id": [r[3] for r in rows], "episode_number": [1] * len(rows),
            "series_length": [10] * len(rows), "recommendation_id": [-1] * len(rows),
            "interaction_type": [r[4] for r in rows], "explicit_rating": [-1.0] * len(rows),
            "vision_factor": [0.5] * len(rows)}
    table = pa.table({k: pa.array(v, type=types.get(k, pa.float32() if isinstance(v[0], float) else
                                                    (pa.int64() if k == "utc_ts_milliseconds" else pa.int32())))
                      for k, v in cols.items()})
    pq.write_table(table, os.path.join(folder, "part.0.parquet"))
    return str(root)


def test_contentwise_rows_are_the_hand_computed_ones(tmp_path):
    """By hand: user 0 interacts at t = 1000 s (a), +1 h (b), +10 h (c), +1 min (d), +1 min (e); user 1 at 500 s
    (f) and 600 s (g). The trigger is the latest interaction within 8 h before: a, c and f have none (dropped);
    b's is a, d's c, e's d, g's f. Kept positives per user: b train, d valid, e test; g test. Ids: + 1 (items 5..9
    -> 6..10, series -> category + 1, item type 3 -> brand 4, interaction type -> behaviour + 1)."""
    from tinrec.convert import contentwise

    H = 3600
    a, b, c = (1000, 0, 5, 2, 0), (1000 + H, 0, 6, 2, 1), (1000 + 10 * H, 0, 7, 3, 0)
    d, e = (1000 + 10 * H + 60, 0, 5, 2, 3), (1000 + 10 * H + 120, 0, 8, 4, 2)
    f, g = (500, 1, 6, 2, 0), (600, 1, 9, 5, 0)
    rows = [(t * 1000, u, i, s, k) for t, u, i, s, k in (e, a, f, c, b, g, d)]  # any input order
    src = _contentwise_folder(tmp_path / "in", rows)
    out = str(tmp_path / "out")
    meta = contentwise.convert(src, out, partitions=2, show_progress=False)

    def positive(x, hist, trig):
        return {"label": 1, "user_id": x[1] + 1, "target_item": x[2] + 1, "target_category": x[3] + 1,
                "target_brand": 4, "target_timestamp": x[0], "hist_item": [h[2] + 1 for h in hist],
                "hist_category": [h[3] + 1 for h in hist], "hist_timestamp": [h[0] for h in hist],
                "hist_behavior": [h[4] + 1 for h in hist], "trigger_item": trig[2] + 1,
                "trigger_category": trig[3] + 1, "page": 1}
    want = {"train": [positive(b, [a], a)], "valid": [positive(d, [a, b, c], c)],
            "test": [positive(e, [a, b, c, d], d), positive(g, [f], f)]}
    for split, positives in want.items():
        got = sorted(_rows(out, split), key=lambda r: (r["user_id"], r["target_timestamp"], -r["label"]))
        assert [r["label"] for r in got] == [1, 0] * len(positives)
        for pos, neg, w in zip(got[::2], got[1::2], positives):
            assert {k: pos[k] for k in w} == w
            same = [k for k in w if k.startswith(("hist_", "trigger_")) or k in ("user_id", "target_timestamp")]
            assert {k: neg[k] for k in same} == {k: w[k] for k in same}
            assert 6 <= neg["target_item"] <= 10 and neg["target_item"] not in w["hist_item"] + [w["target_item"]]
    assert meta["converter"]["counts"]["dropped"] == {"interaction without an interaction in the 8 hours before it": 3}
    assert scan(out, meta, show_progress=False)["ok"]
    bad = _contentwise_folder(tmp_path / "bad", [(1, 0, 5, 2, 7)])
    with pytest.raises(ValueError, match=r"part\.0\.parquet:1: field interaction_type: expected 0-3, got 7"):
        contentwise.convert(bad, str(tmp_path / "out2"), show_progress=False)


@pytest.mark.parametrize("name, protocol, spec, row", [
    ("amazon", None, "experiments/public/tin_table1_amazon.yaml", "TIN"),
    ("alimama", "dei2n", "experiments/public/dei2n_table2_alimama.yaml", "DEI2N"),
    ("alimama", "dumn", "experiments/public/dumn_table1_alibaba.yaml", "DUMN"),
    ("taobao", None, "experiments/public/cain_table2_taobao.yaml", "LAP + TCN"),
])
def test_a_converted_dataset_trains_the_papers_models_through_their_spec(tmp_path, name, protocol, spec, row):
    """A converted dataset (synthetic files in the published format, benchmarks/convert.py) trains the paper's
    model (the spec's row) with the spec's overrides, for a few steps, and reports both GAUC definitions."""
    import numpy as np
    import yaml

    from benchmarks.convert import WRITERS
    from tinrec.convert import module

    src = str(tmp_path / "in")
    os.makedirs(src)
    WRITERS[name](src, 6000, np.random.default_rng(0))
    out = str(tmp_path / "data")
    module(name).convert(src, out, show_progress=False, **({"protocol": protocol} if protocol else {}))
    d = yaml.safe_load(open(os.path.join(REPO, spec)))
    (r,) = [r for r in d["rows"] if r["name"] == row]
    overrides = [o for o in d["overrides"] + r.get("overrides", []) if not o.startswith("data.path")]
    run_dir = str(tmp_path / "run")
    p = subprocess.run([sys.executable, "-m", "tinrec.cli", "train", r["config"], f"data.path={out}", f"run_dir={run_dir}",
                        *overrides, "train.batch_size=32", "train.eval_batch_size=64", "train.max_steps=4",
                        "data.num_workers=0"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    m = json.load(open(os.path.join(run_dir, "metrics.json")))
    assert m["global_step"] == 4 and {"auc", "gauc", "gauc_pairs", "logloss"} <= set(m["test"])


def test_taobao_and_contentwise_negatives_by_hand_when_one_item_is_left(tmp_path):
    """Users who interact only with items 1 and 2, and a third item 3 that only a user without samples touched:
    every positive's past holds 1 and 2, so every negative is, by hand, item 3 (with its category)."""
    from tinrec.convert import contentwise, taobao
    from tinrec.convert.taobao import DAY, START

    rows = [(7, 1, 5, "pv", START + 10), (7, 2, 6, "buy", START + DAY + 10), (7, 1, 5, "pv", START + 7 * DAY),
            (7, 2, 6, "pv", START + 8 * DAY), (8, 2, 6, "pv", START + 5), (8, 1, 5, "cart", START + 8 * DAY + 1),
            (9, 3, 7, "pv", START + 3 * DAY)]
    src = _write(tmp_path / "tb", {"UserBehavior.csv": "".join(f"{u},{i},{c},{b},{t}\n" for u, i, c, b, t in rows)})
    taobao.convert(src, str(tmp_path / "tb_out"), show_progress=False)
    negs = [r for s in ("train", "valid", "test") for r in _rows(str(tmp_path / "tb_out"), s) if r["label"] == 0]
    # the positives: user 7 on days 2, 8 and 9, user 8 on day 9; each one's history and itself hold items 1 and 2
    assert len(negs) == 4 and all((r["target_item"], r["target_category"]) == (3, 7) for r in negs)
    H = 3600
    cw = [(1000, 0, 0, 4, 0), (1000 + H, 0, 1, 4, 0), (1000 + 2 * H, 0, 0, 4, 1), (1000 + 3 * H, 0, 1, 4, 0),
          (5000, 1, 2, 9, 0)]  # user 1 alone touches item 2 (our id 3) and has no sample
    src = _contentwise_folder(tmp_path / "cw", [(t * 1000, u, i, s, k) for t, u, i, s, k in cw])
    contentwise.convert(src, str(tmp_path / "cw_out"), show_progress=False)
    negs = [r for s in ("train", "valid", "test") for r in _rows(str(tmp_path / "cw_out"), s) if r["label"] == 0]
    assert len(negs) == 3 and all((r["target_item"], r["target_category"]) == (3, 10) for r in negs)
