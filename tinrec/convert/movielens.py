"""MovieLens 100K and 1M (GroupLens, https://grouplens.org/datasets/movielens/) as published, to the documented
format. The protocol (the issue's; the papers do not run MovieLens, so the sequential CTR setting common to
DIN-style work, our choice where marked):

- layouts: 100K (``u.data`` tab-separated ``user item rating timestamp``, ``u.item`` ``|``-separated with 19
  genre flags, ``u.user`` ``user|age|gender|occupation|zip``; latin-1) or 1M (``ratings.dat``
  ``UserID::MovieID::Rating::Timestamp``, ``movies.dat`` ``MovieID::Title::Genres`` with ``|``-separated
  genres, ``users.dat`` ``UserID::Gender::Age::Occupation::Zip-code``; latin-1), found by their file names;
- a sample per rating, label 1 when the rating is >= ``min_rating`` (4), the target the rated movie, its
  category the movie's first genre (genres as categories; ids in the movies file's first-seen order);
- the history: the user's earlier positively rated movies (rating >= ``min_rating``), the latest
  ``max_history`` (100), oldest first, with their genres and timestamps; a user's ratings in time order, ties in
  file order;
- split per user, leave one out: the last rating -> test, the one before -> valid, the rest -> train; a user
  with fewer than 3 ratings is dropped (counted);
- profile: ``user_age`` the 1M file's age code (1, 18, 25, 35, 45, 50, 56 -> 1..7; 100K's ages bucketed at the
  same edges), ``user_gender`` M -> 1, F -> 2; ``target_brand`` / ``target_author`` and the history's are 0
  (unknown: MovieLens has neither);
- user ids 1..U in ascending raw id; item ids in the movies file's order.
"""

from __future__ import annotations

import time
from array import array
from typing import Any, Dict

import numpy as np

from tinrec.convert import common
from tinrec.data import format as fmt

LAYOUTS = (["u.data", "u.item", "u.user"], ["ratings.dat", "movies.dat", "users.dat"])
GENRES_100K = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
               "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War",
               "Western")
AGE_CODES = (1, 18, 25, 35, 45, 50, 56)  # ML-1M's age codes; bucket k + 1 is [code_k, code_k+1)
ENCODING = "latin-1"


def add_arguments(p) -> None:
    p.add_argument("--max-history", type=int, default=100, help="the latest positively rated movies kept (100)")
    p.add_argument("--min-rating", type=int, default=4, help="ratings >= this are positives (4)")


def _split_line(text: str, one_m: bool, expected: int, path: str, n: int, what: str) -> list:
    parts = text.split("::") if one_m else text.split("\t" if what == "ratings" else "|")
    if len(parts) != expected:
        raise common.InputError(path, n, what, f"expected {expected} fields, got {len(parts)}: {text[:80]!r}")
    return parts


def convert(input_dir: str, output_dir: str, *, max_history: int = 100, min_rating: int = 4,
            show_progress: bool = True) -> Dict[str, Any]:
    if max_history < 1:
        raise ValueError(f"--max-history: expected >= 1, got {max_history}")
    t0 = time.monotonic()
    ratings_path, movies_path, users_path = common.require_files("MovieLens 100K or 1M", input_dir, LAYOUTS)
    one_m = ratings_path.endswith("ratings.dat")
    report = common.Report()

    # Movies: dense item ids in file order, the first genre as category.
    items, genres = common.IdMap(), common.IdMap()
    item_cat = array("q", [0])
    for n, text in common.lines(movies_path, encoding=ENCODING, show_progress=show_progress):
        if not text.strip():
            continue
        if one_m:
            mid, _, gen = _split_line(text, True, 3, movies_path, n, "movies")
            first = gen.split("|")[0]
        else:
            parts = _split_line(text, False, 5 + len(GENRES_100K), movies_path, n, "movies")
            mid, flags = parts[0], parts[5:]
            on = [g for g, f in zip(GENRES_100K, flags) if f.strip() == "1"]
            first = on[0] if on else "unknown"
        common.integer(movies_path, n, "movie id", mid)
        if mid in items:
            raise common.InputError(movies_path, n, "movie id", f"{mid} appears twice")
        items.add(mid)
        item_cat.append(genres.add(first))

    # Users: age bucket and gender.
    profile: Dict[int, tuple] = {}
    for n, text in common.lines(users_path, encoding=ENCODING, show_progress=show_progress):
        if not text.strip():
            continue
        parts = _split_line(text, one_m, 5, users_path, n, "users")
        uid = common.integer(users_path, n, "user id", parts[0])
        gender_text, age_text = (parts[1], parts[2]) if one_m else (parts[2], parts[1])
        age = common.integer(users_path, n, "age", age_text)
        if gender_text not in ("M", "F"):
            raise common.InputError(users_path, n, "gender", f"expected M or F, got {gender_text!r}")
        profile[uid] = (int(np.searchsorted(AGE_CODES, age, side="right")), 1 if gender_text == "M" else 2)

    # Ratings, streamed into compact arrays.
    u_raw, item, rating, ts = array("q"), array("q"), array("q"), array("q")
    for n, text in common.lines(ratings_path, encoding=ENCODING, show_progress=show_progress):
        if not text.strip():
            continue
        uid, mid, r, t = _split_line(text, one_m, 4, ratings_path, n, "ratings")
        i = items.get(mid)
        if i == 0:
            report.drop("rating of a movie not in the movies file")
            continue
        u_raw.append(common.integer(ratings_path, n, "user id", uid))
        item.append(i)
        rating.append(common.integer(ratings_path, n, "rating", r))
        ts.append(common.integer(ratings_path, n, "timestamp", t))
    u_raw_a = np.frombuffer(u_raw, np.int64) if len(u_raw) else np.zeros(0, np.int64)
    raw_users, user = np.unique(u_raw_a, return_inverse=True)
    user = user.astype(np.int64) + 1
    item_a, rating_a = np.frombuffer(item, np.int64), np.frombuffer(rating, np.int64)
    ts_a, cat_a = np.frombuffer(ts, np.int64), np.frombuffer(item_cat, np.int64)
    age = np.zeros(raw_users.size + 1, np.int64)
    gender = np.zeros(raw_users.size + 1, np.int64)
    for k, raw in enumerate(raw_users, 1):
        age[k], gender[k] = profile.get(int(raw), (0, 0))
    no_profile = int(sum(1 for raw in raw_users if int(raw) not in profile))  # kept, with age and gender 0

    order = common.by_user_time(user, ts_a)
    user, item_a, rating_a, ts_a = user[order], item_a[order], rating_a[order], ts_a[order]
    start, count = common.user_runs(user)
    few = count < 3
    report.drop("rating of a user with fewer than 3 ratings", int(count[few].sum()))
    label = (rating_a >= min_rating).astype(np.int8)
    # positives: each sample's history is the user's positives before it
    pos_idx = np.flatnonzero(label)
    prior_end_all = np.searchsorted(pos_idx, np.arange(user.size), side="left")  # positives before each row
    user_pos_start = np.searchsorted(pos_idx, start, side="left")

    schema = fmt.arrow_schema(with_feedback=False, with_watch_time=False, with_trigger=False)
    writer = common.SampleWriter(output_dir, schema)
    common.claim(output_dir)
    with common.writing(writer):
        keep_start, keep_n = start[~few], count[~few]
        first_pos = user_pos_start[~few]
        for a, b in common.chunks_of_users(keep_start, keep_n, 50_000):
            rows = np.concatenate([np.arange(s, s + k) for s, k in zip(keep_start[a:b], keep_n[a:b])])
            split = common.leave_last_out(np.concatenate([[0], np.cumsum(keep_n[a:b])[:-1]]), keep_n[a:b])
            off, idx = common.latest(prior_end_all[rows], np.repeat(first_pos[a:b], keep_n[a:b]), max_history)
            hist_rows = pos_idx[idx]
            for s_i, s in enumerate(fmt.SPLITS):
                m = split == s_i
                sub_off, sub_idx = common.take(off, hist_rows, m)
                r = rows[m]
                zeros = np.zeros(sub_idx.size, np.int64)
                writer.add(s, {
                    fmt.LABEL: label[r], "user_id": user[r], "user_age": age[user[r]], "user_gender": gender[user[r]],
                    "target_item": item_a[r], "target_category": cat_a[item_a[r]],
                    "target_brand": np.zeros(r.size, np.int64), "target_author": np.zeros(r.size, np.int64),
                    fmt.TARGET_TIMESTAMP: ts_a[r],
                    "hist_item": (sub_off, item_a[sub_idx]), "hist_category": (sub_off, cat_a[item_a[sub_idx]]),
                    "hist_brand": (sub_off, zeros), "hist_author": (sub_off, zeros),
                    fmt.HIST_TIMESTAMP: (sub_off, ts_a[sub_idx])})
    splits = writer.splits
    report.counts.update(users=int((~few).sum()), items=items.rows - 1, categories=genres.rows - 1,
                         samples=sum(writer.rows.values()), positives=sum(writer.positives.values()),
                         users_without_profile=no_profile,
                         input_ratings=int(len(u_raw)) + report.dropped["rating of a movie not in the movies file"])
    tables = {"user": raw_users.size + 1, "item": items.rows, "category": genres.rows, "brand": 1, "author": 1,
              "age": len(AGE_CODES) + 1, "gender": 3}
    meta = common.write_meta(output_dir, converter="movielens-1m" if one_m else "movielens-100k",
                             options={"max_history": max_history, "min_rating": min_rating}, tables=tables,
                             writer=writer, splits=splits, max_seq_len=max_history, report=report)
    if show_progress:
        common.print_report(meta["converter"]["name"], report, splits, time.monotonic() - t0)
    return meta
