r"""The built-in synthetic dataset: a world of users and items, impressions with behaviour histories, and
labels drawn from planted, known effects (the prose and the on-disk contract are in ``docs/data.md``).

Notation: C categories, U users, N items, B brands, A authors; a row is one impression of a target item to a
user, with that user's history of L behaviours stored oldest first; p is a behaviour's target-relative
position (1 = most recent).

World (``default_rng([seed, 999])``)
------------------------------------
* Items 1..N: ``item_category`` uniform over 1..C (a shuffled balanced assignment, so every category has
  items); categories own disjoint random subsets of brands (each brand belongs to one category; when B < C
  each category gets one, shared, brand) and ``item_brand`` is uniform over its category's brands;
  ``item_author`` uniform over 1..A; ``item_bias ~ N(0, 0.3)``. Popularity is Zipf-like within a
  category: the items of category c, in a random order r = 1, 2, ..., are drawn with probability
  proportional to ``1 / r`` ("a popular item of c").
* Users 1..U: K = 4 distinct favourite categories with weights ~ Dirichlet(1, 1, 1, 1) ("a favourite" is
  drawn with those weights); ``user_age`` uniform 1..8, ``user_gender`` uniform 1..2;
  ``user_bias ~ N(0, 0.3)``; a mean between-session gap ``gap_u ~ LogNormal(log 24 h, 1.0)``.

Rows (``default_rng([seed, split_index, chunk_index])``, split_index train 0, valid 1, test 2)
-------------------------------------------------------------------------------------------------
* user uniform over 1..U; ``L = clip(round(LogNormal(mu, 0.6)), 1, seq_len_max)`` with
  ``mu = log(seq_len_mean) - 0.6**2 / 2`` (so the unclipped mean is ``seq_len_mean``).
* ``target_timestamp`` uniform over days [0, 21) for train, day 21 for valid, day 22 for test, counted
  from 1_600_000_000 (Unix seconds).
* Gaps going back from the target (one per behaviour, between it and the next more recent event): w.p.
  0.7 ``~ Exp(mean 180 s)`` (same session), else ``~ Exp(mean gap_u)``; each rounded up to whole seconds,
  at least 1. ``hist_timestamp_i = target_timestamp - dt_i`` with ``dt_i`` the sum of the gaps of
  positions 1..p_i, so timestamps strictly increase along the list and stay below the target's, and time
  interval and position are not collinear across users.
* Feedback and category of a behaviour. feedback effect enabled: type ~ (click .6, like .15,
  dislike .1, non-click .15); like -> a favourite; dislike -> a uniform non-favourite; click -> a
  favourite w.p. 1 - click_noise ("genuine") else uniform over 1..C ("accidental"); non-click -> uniform.
  With ``feedback.disliked = D > 0`` each user has D disliked categories (none a favourite; ``default_rng([seed,
  992])``): a dislike -> a uniform one of them instead, and an accidental click -> one of them w.p.
  ``clickbait`` (clickbait), else uniform (their own draws: ``default_rng([seed, split, chunk, 88])``).
  Disabled: every behaviour is a genuine click, from a favourite w.p. 0.8 else uniform.
  Item: a popular item of the category; brand and author are the item's.
* Feedback factor ``g_i``: like +2, genuine click +1, accidental click 0, dislike -2, non-click 0
  (feedback disabled: ``g_i = 1``).
* Watch time ``w_i ~ LogNormal(log 30 s, 0.5)``. Drop events: a behaviour with p >= 2 is, w.p. 0.05,
  followed by a sharp drop: the next (more recent) behaviour's watch time is multiplied by 0.1. Drops are
  drawn whether or not the context effect is enabled (the columns are identically distributed). A
  behaviour j is "lost interest" if a behaviour of the same category at p <= p_j (itself included) has a
  drop after it.
* Trigger: ``trigger_item`` a popular item of a favourite category, ``trigger_category`` its category;
  ``page = min(G, 20)``, G ~ Geometric(0.35) on {1, 2, ...} (P(page = 1) = 0.35).
* Target category: w.p. 0.5 the category of a uniformly chosen behaviour of the row, w.p. 0.2 the trigger
  category, else uniform over 1..C; ``target_item`` a popular item of it, brand and author the item's.

Label
-----
* Semantic weight ``w(c_t, c_b) = 1`` if c_b = c_t, 0.5 if c_b = sibling(c_t), else 0, with categories
  paired 1-2, 3-4, ...: ``sibling(c) = c + 1 if c odd else c - 1``.
* Temporal decay ``d_i = exp(-(p_i - 1) / tau_position)`` (decay "position") or
  ``exp(-dt_i / 3600 / tau_time_hours)`` (decay "time").
* ``ctx_i = -context.strength`` if the context effect is enabled and behaviour i is lost interest, else 1.
* ``S_st = sum_i w(c_t, c_i) d_i g_i ctx_i``;  ``S_trig = w(c_t, trigger_category) exp(-(page-1)/tau_page)``.
* ``logit = bias + semantic_temporal.strength S_st + trigger.strength S_trig + user_bias + item_bias(target)``,
  ``label ~ Bernoulli(sigmoid(logit))``. A disabled effect contributes 0.

Ground truth (``ground_truth.npz``): ``stc_weight[c_t, c_b, p-1] = semantic_temporal.strength w(c_t, c_b)
mean_decay[p]`` for p = 1..gt_positions, ``mean_decay[p] = exp(-(p-1)/tau_position)`` (position decay) or the
mean of ``exp(-dt/3600/tau_time_hours)`` over the train behaviours at position p (time decay; 0 where no
behaviour has that position); all zeros when the effect is disabled. Also ``positions`` (1..P),
``mean_decay``, and ``trigger_weight[c_t, c_tr, page-1] = trigger.strength w(c_t, c_tr) exp(-(page-1)/tau_page)``
(the trigger term of the logit; zeros when the trigger effect is off).

Optional columns (off by default; the columns above and their values do not change when they are on)
---------------------------------------------------------------------------------------------------------
* ``short_len = K > 0``: a second sequence ``short_*`` (item, category, timestamp, watch time): the most
  recent ``min(L, K)`` behaviours of the history, as a short-term sequence beside the long one.
* ``extra_features = {user: n_u, item: n_i, ctx: n_c, rows: R}``: families of extra id columns
  ``user_f00..``, ``item_f00..``, ``ctx_f00..`` (two digits, three from 100 on) with ids in 1..R-1: a user's
  and an item's are fixed per user / per target item (``default_rng([seed, 998])``), a context's drawn per
  row (``default_rng([seed, split_index, chunk_index, 77])``). They carry no effect (issue-free filler for
  wide models); ``meta.json`` gives each its table size R.

* ``feedback.disliked > 0`` (feedback enabled): ``label_dislike`` (a second label, DUMN's dislike prediction:
  ``~ Bernoulli(sigmoid(-3 + 4 [target category disliked by the user]))``) and the ground truth
  ``hist_accidental`` (list<int8>, 1 = the behaviour is an accidental click; no model input).

Output is streamed: chunks of ``row_group_size`` rows are generated (vectorised, no per-row Python) and
written as row groups, ``rows_per_file`` rows per file; files are written under a ``.tmp`` name and renamed
when complete, and ``meta.json`` is written last (a dataset is complete iff it has ``meta.json``).
"""

from __future__ import annotations

import copy
import json
import math
import numbers
import posixpath
from typing import Any, Dict, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from iopath.common.file_io import g_pathmgr
from tqdm import tqdm

from tinrec.data import format as fmt
from tinrec.data.io import PART_FILE, PartWriter, npz_bytes, remove_if_exists, write_bytes_atomic
from tinrec.data.schema import describe

EPOCH_BASE = 1_600_000_000
DAY = 86_400
# (first day, number of days) of the target timestamps of each split.
SPLIT_DAYS = {"train": (0, 21), "valid": (21, 1), "test": (22, 1)}
NUM_FAVOURITES = 4
NUM_AGES, NUM_GENDERS = 8, 2
ZIPF_EXPONENT = 1.0
SESSION_PROB, SESSION_GAP_S = 0.7, 180.0
FEEDBACK_PROBS = {fmt.FEEDBACK_CLICK: 0.6, fmt.FEEDBACK_LIKE: 0.15, fmt.FEEDBACK_DISLIKE: 0.1,
                  fmt.FEEDBACK_NON_CLICK: 0.15}
FAVOURITE_PROB_NO_FEEDBACK = 0.8
WATCH_MEDIAN_S, WATCH_SIGMA = 30.0, 0.5
DROP_PROB, DROP_FACTOR = 0.05, 0.1
PAGE_P, PAGE_MAX = 0.35, 20
DISLIKE_LABEL_BIAS, DISLIKE_LABEL_GAIN = -3.0, 4.0  # label_dislike's logit: bias + gain [target disliked]
TARGET_FROM_HISTORY, TARGET_FROM_TRIGGER = 0.5, 0.2
SEQ_LEN_SIGMA = 0.6

DEFAULT_EFFECTS: Dict[str, Any] = {
    "semantic_temporal": {"enabled": True, "strength": 1.0, "decay": "position", "tau_position": 8.0,
                          "tau_time_hours": 48.0},
    "context": {"enabled": False, "strength": 0.5, "by_activity": False, "active_factor": 1.0},
    "trigger": {"enabled": False, "strength": 1.0, "tau_page": 3.0},
    "feedback": {"enabled": False, "click_noise": 0.3, "disliked": 0, "clickbait": 0.5},
    "long_range": {"enabled": False, "strength": 1.5, "interests": 2, "share": 0.03, "min_position": 200,
                   "target_share": 0.25, "items": 0, "fading": 0.0, "fading_drop": 0.5, "fading_lag": 1},
    "field_pairs": {"enabled": False, "strength": 1.0, "pairs": 8, "rank": 4},
    "field_triples": {"enabled": False, "strength": 1.0, "triples": 8, "rank": 4},
    "bias": -2.8,
}

# key -> (kind, check) where kind is "bool", "real" or "choice"; check validates the value.
_EFFECT_RULES = {
    "enabled": ("bool", None),
    "strength": ("real", None),
    "decay": ("choice", ("position", "time")),
    "tau_position": ("real", "positive"),
    "tau_time_hours": ("real", "positive"),
    "tau_page": ("real", "positive"),
    "click_noise": ("real", "unit"),
    "disliked": ("int", "nonnegative"),
    "clickbait": ("real", "unit"),
    "interests": ("int", "positive"),
    "share": ("real", "unit"),
    "min_position": ("int", "positive"),
    "target_share": ("real", "unit"),
    "items": ("int", "nonnegative"),
    "fading": ("real", "unit"),
    "fading_drop": ("real", "unit"),
    "fading_lag": ("int", "positive"),
    "by_activity": ("bool", None),
    "active_factor": ("real", None),
    "pairs": ("int", "positive"),
    "triples": ("int", "positive"),
    "rank": ("int", "positive"),
    "bias": ("real", None),
}


def _check_value(path: str, key: str, value: Any) -> Any:
    kind, check = _EFFECT_RULES[key]
    if kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"{path}: expected true or false, got {value!r}")
        return value
    if kind == "choice":
        if value not in check:
            raise ValueError(f"{path}: expected one of {', '.join(map(repr, check))}, got {value!r}")
        return value
    if kind == "int":
        least = 0 if check == "nonnegative" else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{path}: expected an integer >= {least}, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{path}: expected a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{path}: expected a finite number, got {value!r}")
    if check == "positive" and not value > 0:
        raise ValueError(f"{path}: expected a number > 0, got {value!r}")
    if check == "unit" and not 0.0 <= value <= 1.0:
        raise ValueError(f"{path}: expected a number in [0, 1], got {value!r}")
    return value


def _long_range_truth(world: "_World", lr: dict) -> dict:
    """The long-range effect's ground truth: each user's persistent categories, and their items (``items``)."""
    if not lr["enabled"]:
        return {}
    out = {"persistent": world.persistent(int(lr["interests"]))}
    if lr["items"]:
        out["persistent_items"] = world.persistent_items(int(lr["interests"]), int(lr["items"]))
    if lr["fading"]:
        out["persistent_fading"] = world.fading(int(lr["interests"]), lr["fading"])
    return out


def _field_interactions_truth(world: "_World", params: dict) -> dict:
    """The ground truth of the planted field interactions: ``field_names`` [F] (the extra id columns); with
    ``field_pairs``, ``field_pairs`` [P, 2] (each interacting pair's names) and ``field_latent`` [F, rows, rank]
    (a pair adds ``strength <latent[a][id_a], latent[b][id_b]> / sqrt(P)`` to the logit); with
    ``field_triples``, ``field_triples`` [T, 3] and ``field_triple_latent`` [F, rows, rank] (a triple adds
    ``strength sum_k z_a,k z_b,k z_c,k / sqrt(T)``)."""
    fp, ft = params["effects"]["field_pairs"], params["effects"]["field_triples"]
    if not (fp["enabled"] or ft["enabled"]):
        return {}
    extra = _check_extra(params.get("extra_features"))
    names = [c for prefix in ("user", "item", "ctx") for c in family(prefix, extra[prefix])]
    out = {"field_names": np.array(names)}
    if fp["enabled"]:
        idx, latent = world.field_pairs(names, fp["pairs"], fp["rank"], extra["rows"])
        out.update(field_pairs=np.array(names)[idx], field_latent=latent.astype(np.float32))
    if ft["enabled"]:
        idx, latent = world.field_triples(names, ft["triples"], ft["rank"], extra["rows"])
        out.update(field_triples=np.array(names)[idx], field_triple_latent=latent.astype(np.float32))
    return out


def merge_effects(effects: Optional[dict]) -> dict:
    """``DEFAULT_EFFECTS`` updated with ``effects`` (a possibly partial nested dict), validated.

    Raises ValueError naming the key path (``effects.semantic_temporal.decay``) for an unknown key, a value
    of the wrong type or an out-of-range value.
    """
    merged = copy.deepcopy(DEFAULT_EFFECTS)
    if effects is None:
        return merged
    if not isinstance(effects, dict):
        raise ValueError(f"effects: expected a mapping, got {type(effects).__name__}")
    for name, value in effects.items():
        path = f"effects.{name}"
        if name not in DEFAULT_EFFECTS:
            raise ValueError(f"{path}: unknown key (known: {', '.join(DEFAULT_EFFECTS)})")
        if not isinstance(DEFAULT_EFFECTS[name], dict):
            merged[name] = _check_value(path, name, value)
            continue
        if not isinstance(value, dict):
            raise ValueError(f"{path}: expected a mapping, got {value!r}")
        for key, v in value.items():
            if key not in DEFAULT_EFFECTS[name]:
                raise ValueError(f"{path}.{key}: unknown key (known: {', '.join(DEFAULT_EFFECTS[name])})")
            merged[name][key] = _check_value(f"{path}.{key}", key, v)
    return merged


# ------------------------------------------------------------------------------------------------------------
# The world
# ------------------------------------------------------------------------------------------------------------


class _World:
    """Static users and items, and vectorised samplers over them."""

    def __init__(self, rng: np.random.Generator, U: int, N: int, C: int, B: int, A: int, seed: int = 0) -> None:
        self.seed, self._extra = seed, {}
        self.U, self.N, self.C = U, N, C
        # Items (index 0 = unknown, unused).
        cat = np.zeros(N + 1, np.int64)
        cat[1:] = rng.permutation(N) % C + 1
        if B >= C:
            owner = np.arange(B) % C + 1
            brands = (rng.permutation(B) + 1)[np.argsort(owner, kind="stable")]
            per_cat = np.bincount(owner, minlength=C + 1)
        else:
            brands = (rng.permutation(B) + 1)[np.arange(C) % B]
            per_cat = np.r_[0, np.ones(C, np.int64)]
        brand_start = np.cumsum(per_cat) - per_cat
        slot = np.floor(rng.random(N) * per_cat[cat[1:]]).astype(np.int64)
        brand = np.zeros(N + 1, np.int64)
        brand[1:] = brands[brand_start[cat[1:]] + np.minimum(slot, per_cat[cat[1:]] - 1)]
        author = np.zeros(N + 1, np.int64)
        author[1:] = rng.integers(1, A + 1, N)
        self.item_bias = np.r_[0.0, rng.normal(0.0, 0.3, N)]
        self.item_category, self.item_brand, self.item_author = cat, brand, author
        # Zipf popularity within category: items sorted by (category, random order); the global CDF runs
        # over [c-1, c] inside category c's segment, so one searchsorted samples any mix of categories.
        order = np.lexsort((rng.random(N), cat[1:])) + 1
        counts = np.bincount(cat[1:], minlength=C + 1)
        self.seg_start = np.cumsum(counts) - counts
        self.seg_end = self.seg_start + counts
        rank = np.arange(N) - self.seg_start[cat[order]] + 1
        weight = 1.0 / rank.astype(np.float64) ** ZIPF_EXPONENT
        cum = np.cumsum(weight)
        before = np.r_[0.0, cum][self.seg_start[cat[order]]]
        total = (np.r_[0.0, cum][self.seg_end] - np.r_[0.0, cum][self.seg_start])[cat[order]]
        cdf = (cat[order] - 1) + (cum - before) / total
        cdf[self.seg_end[1:] - 1] = np.arange(1, C + 1)  # exact segment ends
        self.sorted_items, self.cdf = order, cdf
        # Users.
        K = NUM_FAVOURITES
        fav = np.sort(np.argsort(rng.random((U, C)), axis=1)[:, :K] + 1, axis=1)
        self.fav = np.vstack([np.zeros((1, K), np.int64), fav])
        weights = rng.dirichlet(np.ones(K), U)
        self.fav_cum = np.vstack([np.ones((1, K)), np.cumsum(weights, axis=1)])
        self.age = np.r_[0, rng.integers(1, NUM_AGES + 1, U)]
        self.gender = np.r_[0, rng.integers(1, NUM_GENDERS + 1, U)]
        self.user_bias = np.r_[0.0, rng.normal(0.0, 0.3, U)]
        self.gap_mean = np.r_[0.0, np.exp(rng.normal(np.log(24 * 3600.0), 1.0, U))]

    def persistent(self, count: int) -> np.ndarray:
        """[U + 1, count] each user's persistent interests (long_range): distinct categories that are none of
        the user's favourites, from their own generator (``default_rng([seed, 996])``)."""
        if ("persistent", count) not in self._extra:
            self._extra[("persistent", count)] = self._other_categories(np.random.default_rng([self.seed, 996]), count)
        return self._extra[("persistent", count)]

    def disliked(self, count: int) -> np.ndarray:
        """[U + 1, count] each user's disliked categories (feedback ``disliked`` > 0): distinct categories that are
        none of the user's favourites, from their own generator (``default_rng([seed, 992])``)."""
        if ("disliked", count) not in self._extra:
            self._extra[("disliked", count)] = self._other_categories(np.random.default_rng([self.seed, 992]), count)
        return self._extra[("disliked", count)]

    def _other_categories(self, g: np.random.Generator, count: int) -> np.ndarray:
        """[U + 1, count] distinct categories per user, none a favourite (row 0 zeros)."""
        out = np.zeros((self.U + 1, count), np.int64)
        for j in range(count):  # rank among the categories not taken yet -> id, as non_favourite does
            taken = np.sort(np.concatenate([self.fav, out[:, :j]], axis=1), axis=1)
            x = g.integers(1, self.C - taken.shape[1] + 1, self.U + 1)
            for k in range(taken.shape[1]):
                x += x >= taken[:, k]
            out[:, j] = x
        out[0] = 0
        return out

    def persistent_items(self, count: int, per: int) -> np.ndarray:
        """[U + 1, count, per] the items of each user's persistent interests (long_range ``items`` > 0): ``per``
        items of each persistent category (a series, an author followed for years), drawn by popularity as any
        target is, so that a target's identity alone does not tell that it is someone's persistent interest;
        their own generator (``default_rng([seed, 995])``)."""
        key = ("persistent_items", count, per)
        if key not in self._extra:
            cats = np.repeat(self.persistent(count)[:, :, None], per, axis=2)
            out = self.popular_item(np.random.default_rng([self.seed, 995]), cats.reshape(-1)).reshape(cats.shape)
            out[0] = 0
            self._extra[key] = out
        return self._extra[key]

    def fading(self, count: int, share: float) -> np.ndarray:
        """[U + 1, count] bool: which persistent interests fade (long_range ``fading`` > 0): each w.p. ``share``,
        from their own generator (``default_rng([seed, 994])``)."""
        key = ("fading", count, share)
        if key not in self._extra:
            out = np.random.default_rng([self.seed, 994]).random((self.U + 1, count)) < share
            out[0] = False
            self._extra[key] = out
        return self._extra[key]

    def activity(self) -> np.ndarray:
        """[U + 1] activity bucket 1..5 of each user: quintile of its behaviour rate (1 / mean gap), 5 = most
        active (a profile feature of the lifelong data; 0 for the unknown user)."""
        rate = np.zeros_like(self.gap_mean)
        rate[1:] = 1.0 / self.gap_mean[1:]
        edges = np.quantile(rate[1:], [0.2, 0.4, 0.6, 0.8])
        out = 1 + np.searchsorted(edges, rate, side="right")
        out[0] = 0
        return out.astype(np.int64)

    def extra_ids(self, prefix: str, count: int, rows: int) -> np.ndarray:
        """[U + 1 or N + 1, count] fixed extra ids of each user or item (``extra_features``), from their own
        generator so that the rest of the world does not change."""
        key = (prefix, count, rows)
        if key not in self._extra:
            n = self.U + 1 if prefix == "user" else self.N + 1
            g = np.random.default_rng([self.seed, 998, 0 if prefix == "user" else 1])
            self._extra[key] = g.integers(1, rows, (n, count))
        return self._extra[key]

    def field_pairs(self, names: list, pairs: int, rank: int, rows: int):
        """The ``field_pairs`` effect's interacting pairs of extra fields ([P, 2] indexes into ``names``, distinct
        unordered pairs of distinct fields) and each field's latent vectors ([F, rows, rank], N(0, rank^-1/2)
        entries: the inner product of two of them has variance 1), from their own generator."""
        key = ("field_pairs", tuple(names), pairs, rank, rows)
        if key not in self._extra:
            g = np.random.default_rng([self.seed, 997])
            i, j = np.triu_indices(len(names), 1)
            pick = np.sort(g.choice(i.size, size=pairs, replace=False))
            latent = g.normal(0.0, rank ** -0.25, (len(names), rows, rank))
            latent[:, 0] = 0.0  # id 0 (missing) interacts with nothing
            self._extra[key] = (np.stack([i[pick], j[pick]], 1), latent)
        return self._extra[key]

    def field_triples(self, names: list, triples: int, rank: int, rows: int):
        """The ``field_triples`` effect's interacting triples of extra fields ([T, 3] indexes into ``names``,
        distinct triples of distinct fields) and each field's latent vectors ([F, rows, rank], N(0, rank^-1/3)
        entries: a triple's trilinear product sum_k z_a,k z_b,k z_c,k has variance 1), from their own generator
        (independent of ``field_pairs``'s)."""
        key = ("field_triples", tuple(names), triples, rank, rows)
        if key not in self._extra:
            g = np.random.default_rng([self.seed, 993])
            F = len(names)
            combos = np.array([(a, b, c) for a in range(F) for b in range(a + 1, F) for c in range(b + 1, F)])
            pick = np.sort(g.choice(len(combos), size=triples, replace=False))
            latent = g.normal(0.0, rank ** (-1.0 / 6.0), (F, rows, rank))
            latent[:, 0] = 0.0  # id 0 (missing) interacts with nothing
            self._extra[key] = (combos[pick], latent)
        return self._extra[key]

    def favourite(self, rng: np.random.Generator, users: np.ndarray) -> np.ndarray:
        k = (rng.random(users.size)[:, None] >= self.fav_cum[users]).sum(axis=1)
        return self.fav[users, np.minimum(k, NUM_FAVOURITES - 1)]

    def non_favourite(self, rng: np.random.Generator, users: np.ndarray) -> np.ndarray:
        x = rng.integers(1, self.C - NUM_FAVOURITES + 1, users.size)
        for k in range(NUM_FAVOURITES):  # skip past the sorted favourites: rank among non-favourites -> id
            x += x >= self.fav[users, k]
        return x

    def popular_item(self, rng: np.random.Generator, cats: np.ndarray) -> np.ndarray:
        idx = np.searchsorted(self.cdf, (cats - 1) + rng.random(cats.size), side="right")
        return self.sorted_items[np.clip(idx, self.seg_start[cats], self.seg_end[cats] - 1)]


def _semantic_weight(target_cat: np.ndarray, cat: np.ndarray) -> np.ndarray:
    sibling = np.where(target_cat % 2 == 1, target_cat + 1, target_cat - 1)
    return (cat == target_cat) * 1.0 + (cat == sibling) * 0.5


def _list_array(offsets: pa.Array, values: np.ndarray, typ: pa.DataType) -> pa.Array:
    return pa.ListArray.from_arrays(offsets, pa.array(values, type=typ))


# ------------------------------------------------------------------------------------------------------------
# One chunk of rows
# ------------------------------------------------------------------------------------------------------------


def family(prefix: str, count: int) -> list:
    """The column names of an extra id family: ``user_f00``, ... (three digits from 100 columns on)."""
    digits = max(2, len(str(count - 1)))
    return [f"{prefix}_f{i:0{digits}d}" for i in range(count)]


def extra_schema(short_len: int, extra: Dict[str, int]) -> list:
    """Arrow fields of the optional columns, in the order they are written."""
    fields = []
    if short_len:
        fields += [pa.field("short_item", pa.list_(pa.int64())), pa.field("short_category", pa.list_(pa.int64())),
                   pa.field("short_timestamp", pa.list_(pa.int64())), pa.field("short_watch_time", pa.list_(pa.float32()))]
    for prefix in ("user", "item", "ctx"):
        fields += [pa.field(c, pa.int64()) for c in family(prefix, extra.get(prefix, 0))]
    return fields


def feedback_schema(effects: dict) -> list:
    """Arrow fields of the feedback effect's optional columns (with ``feedback.disliked`` > 0): the second label
    ``label_dislike`` and the ground truth ``hist_accidental`` (1 = an accidental click)."""
    fb = effects["feedback"]
    if not (fb["enabled"] and fb["disliked"]):
        return []
    return [pa.field("label_dislike", pa.int8()), pa.field("hist_accidental", pa.list_(pa.int8()))]


def columns(**params) -> list:
    """The column names ``generate_dataset(**params)`` writes (without generating anything)."""
    extra = _check_extra(params.get("extra_features"))
    return (fmt.arrow_schema().names + [f.name for f in extra_schema(int(params.get("short_len", 0) or 0), extra)]
            + (["user_activity", "user_top_author"] if params.get("profile") else [])
            + [f.name for f in feedback_schema(merge_effects(params.get("effects")))])


def _check_extra(extra: Optional[dict]) -> Dict[str, int]:
    extra = dict(extra or {})
    unknown = set(extra) - {"user", "item", "ctx", "rows"}
    if unknown:
        raise ValueError(f"extra_features: unknown key(s) {sorted(unknown)} (expected user, item, ctx, rows)")
    out = {k: _check_int(f"extra_features.{k}", extra.get(k, 0), 0) for k in ("user", "item", "ctx")}
    out["rows"] = _check_int("extra_features.rows", extra.get("rows", 100), 2)
    return out


def _extras(world: _World, n: int, users: np.ndarray, target_item: np.ndarray, offsets: np.ndarray,
            cols: Dict[str, Any], short_len: int, extra: Dict[str, int], ctx_rng: np.random.Generator,
            ids: Optional[Dict[str, np.ndarray]] = None) -> None:
    """Add the optional columns of one chunk to ``cols`` (no draw from the chunk's main generator)."""
    if short_len:
        L = np.diff(offsets)
        keep = np.minimum(L, short_len)
        new_off = np.concatenate([[0], np.cumsum(keep)])
        idx = np.arange(new_off[-1]) + np.repeat(offsets[1:] - keep - new_off[:-1], keep)
        off = pa.array(new_off.astype(np.int32), type=pa.int32())
        for name, src in (("item", "hist_item"), ("category", "hist_category"), ("timestamp", fmt.HIST_TIMESTAMP),
                          ("watch_time", fmt.HIST_WATCH_TIME)):
            values = cols[src].values.to_numpy(zero_copy_only=False)[idx]
            cols[f"short_{name}"] = _list_array(off, values, cols[src].type.value_type)
    if ids is None:  # drawn here unless the label already needed them (effects.field_pairs)
        ids = _extra_ids(world, n, users, target_item, extra, ctx_rng)
    for c, column in ids.items():
        cols[c] = pa.array(column, type=pa.int64())


def _extra_ids(world: _World, n: int, users: np.ndarray, target_item: np.ndarray, extra: Dict[str, int],
               ctx_rng: np.random.Generator) -> Dict[str, np.ndarray]:
    """Each extra id column of one chunk (``extra_features``), in column order."""
    R, out = extra["rows"], {}
    for prefix, key in (("user", users), ("item", target_item)):
        names = family(prefix, extra[prefix])
        if names:
            table = world.extra_ids(prefix, len(names), R)
            for j, c in enumerate(names):
                out[c] = table[key, j]
    for c in family("ctx", extra["ctx"]):
        out[c] = ctx_rng.integers(1, R, n)
    return out


def _chunk(world: _World, rng: np.random.Generator, n: int, split: str, seq_len_mean: float, seq_len_max: int,
           eff: dict, schema: pa.Schema, short_len: int = 0, extra: Optional[Dict[str, int]] = None,
           ctx_rng: Optional[np.random.Generator] = None, lr_rng: Optional[np.random.Generator] = None,
           profile: bool = False, parts: Optional[Dict[str, np.ndarray]] = None,
           fb_rng: Optional[np.random.Generator] = None):
    """``n`` rows as an Arrow table, plus (p, dt seconds) of every behaviour for the ground-truth stats.
    ``parts``: a dict filled with each row's logit terms (:func:`logit_parts`)."""
    C = world.C
    st, ctx_eff, trig, fb = eff["semantic_temporal"], eff["context"], eff["trigger"], eff["feedback"]
    users = rng.integers(1, world.U + 1, n)
    mu = math.log(seq_len_mean) - SEQ_LEN_SIGMA ** 2 / 2
    L = np.clip(np.rint(rng.lognormal(mu, SEQ_LEN_SIGMA, n)), 1, seq_len_max).astype(np.int64)
    T = int(L.sum())
    offsets = np.zeros(n + 1, np.int64)
    offsets[1:] = np.cumsum(L)
    row = np.repeat(np.arange(n), L)
    p = offsets[1:][row] - np.arange(T)  # 1 = most recent (stored last)
    buser = users[row]
    day0, days = SPLIT_DAYS[split]
    target_ts = EPOCH_BASE + day0 * DAY + rng.integers(0, days * DAY, n)

    # Time: integer gaps, summed from the target backwards (exact in int64, so strictly monotone).
    session = rng.random(T) < SESSION_PROB
    gap = np.where(session, rng.exponential(SESSION_GAP_S, T), rng.exponential(1.0, T) * world.gap_mean[buser])
    gap = np.maximum(np.ceil(gap), 1).astype(np.int64)
    cs = np.cumsum(gap)
    dt = cs[offsets[1:] - 1][row] - cs + gap
    hist_ts = target_ts[row] - dt

    # Feedback types and categories (all draws are made whatever the flags, in a fixed order).
    u_type = rng.random(T)
    fav_c = world.favourite(rng, buser)
    nonfav_c = world.non_favourite(rng, buser)
    unif_c = rng.integers(1, C + 1, T)
    genuine = rng.random(T) >= fb["click_noise"]
    if fb["enabled"]:
        types = np.array(list(FEEDBACK_PROBS))
        cum = np.cumsum(list(FEEDBACK_PROBS.values()))
        ftype = types[np.minimum(np.searchsorted(cum, u_type, side="right"), len(types) - 1)]
        is_click, is_like = ftype == fmt.FEEDBACK_CLICK, ftype == fmt.FEEDBACK_LIKE
        is_dislike = ftype == fmt.FEEDBACK_DISLIKE
        cat = np.where(is_like, fav_c, np.where(is_dislike, nonfav_c,
                                                np.where(is_click & genuine, fav_c, unif_c)))
        g = np.where(is_like, 2.0, np.where(is_dislike, -2.0, np.where(is_click & genuine, 1.0, 0.0)))
        if fb["disliked"]:  # disliked categories: every dislike, and the clickbait share of accidental clicks
            disliked = world.disliked(fb["disliked"])
            d_cat = disliked[buser, fb_rng.integers(0, disliked.shape[1], T)]
            bait = fb_rng.random(T) < fb["clickbait"]
            cat = np.where(is_dislike | (is_click & ~genuine & bait), d_cat, cat)
    else:
        ftype = np.full(T, fmt.FEEDBACK_CLICK)
        cat = np.where(u_type < FAVOURITE_PROB_NO_FEEDBACK, fav_c, unif_c)
        g = np.ones(T)
    item = world.popular_item(rng, cat)
    lr = eff["long_range"]
    if lr["enabled"]:  # persistent interests, thinly spread far back (their own generator: nothing else moves)
        pers = world.persistent(int(lr["interests"]))
        own = world.persistent_items(pers.shape[1], int(lr["items"])) if lr["items"] else None  # each interest's items
        far = (p > lr["min_position"]) & (lr_rng.random(T) < lr["share"])
        j_T = lr_rng.integers(0, pers.shape[1], T)
        cat = np.where(far, pers[buser, j_T], cat)
        if own is not None:
            item = np.where(far, own[buser, j_T, lr_rng.integers(0, own.shape[2], T)], item)
        else:
            item = np.where(far, world.popular_item(lr_rng, cat), item)

    # Watch time and drop events (always drawn); lost interest per (row, category).
    watch = rng.lognormal(math.log(WATCH_MEDIAN_S), WATCH_SIGMA, T)
    drop = (p >= 2) & (rng.random(T) < DROP_PROB)
    fades = lr["enabled"] and lr["fading"] > 0
    lag, fade_drop = int(lr["fading_lag"]), None
    if fades:  # a fading interest's far-back behaviours are often followed by a sharp drop (CAIN's Figure 1),
        # on the fading_lag-th more recent behaviour (1: the next one)
        fading = world.fading(pers.shape[1], lr["fading"])
        fade_drop = far & fading[buser, j_T] & (p > lag) & (lr_rng.random(T) < lr["fading_drop"])
        if lag == 1:
            drop |= fade_drop
    watch[np.flatnonzero(drop) + 1] *= DROP_FACTOR
    if fade_drop is not None and lag > 1:  # the lagged drops, after the others (a behaviour may have both)
        watch[np.flatnonzero(fade_drop) + lag] *= DROP_FACTOR
        drop |= fade_drop  # lost interest counts from the behaviour itself
    key = row * (C + 1) + cat
    min_drop_p = np.full(n * (C + 1), seq_len_max + 1, np.int64)
    np.minimum.at(min_drop_p, key[drop], p[drop])
    lost = min_drop_p[key] <= p

    # Trigger, page, target.
    trigger_item = world.popular_item(rng, world.favourite(rng, users))
    trigger_cat = world.item_category[trigger_item]
    page = np.minimum(rng.geometric(PAGE_P, n), PAGE_MAX)
    u_t = rng.random(n)
    pick = offsets[:-1] + np.minimum(np.floor(rng.random(n) * L).astype(np.int64), L - 1)
    unif_t = rng.integers(1, C + 1, n)
    target_cat = np.where(u_t < TARGET_FROM_HISTORY, cat[pick],
                          np.where(u_t < TARGET_FROM_HISTORY + TARGET_FROM_TRIGGER, trigger_cat, unif_t))
    target_item = world.popular_item(rng, target_cat)
    if lr["enabled"]:  # some targets in a persistent interest
        to_pers = lr_rng.random(n) < lr["target_share"]
        j_n = lr_rng.integers(0, pers.shape[1], n)
        target_cat = np.where(to_pers, pers[users, j_n], target_cat)
        if own is not None:
            target_item = np.where(to_pers, own[users, j_n, lr_rng.integers(0, own.shape[2], n)], target_item)
        else:
            target_item = np.where(to_pers, world.popular_item(lr_rng, target_cat), target_item)

    # Label.
    logit = eff["bias"] + world.user_bias[users] + world.item_bias[target_item]
    terms = {"base": eff["bias"] + world.item_bias[target_item], "user": world.user_bias[users]}
    if st["enabled"]:
        if st["decay"] == "position":
            decay = np.exp(-(p - 1) / st["tau_position"])
        else:
            decay = np.exp(-dt / 3600.0 / st["tau_time_hours"])
        ctx = 1.0
        if ctx_eff["enabled"]:
            ctx = np.where(lost, -ctx_eff["strength"], 1.0)
            if ctx_eff["by_activity"]:  # the less active users lose interest (CAIN's motivation for PEG); the
                # active ones keep a lost interest at active_factor (1: as if never lost)
                ctx = np.where(lost & (world.activity()[buser] > 2), ctx_eff["active_factor"], ctx)
        contrib = _semantic_weight(target_cat[row], cat) * decay * g * ctx
        logit = logit + st["strength"] * np.bincount(row, weights=contrib, minlength=n)
        if parts is not None:
            terms["semantic_temporal"] = st["strength"] * np.bincount(row, weights=contrib, minlength=n)
            terms["semantic_temporal_without_context"] = st["strength"] * np.bincount(
                row, weights=_semantic_weight(target_cat[row], cat) * decay * g, minlength=n)
    if lr["enabled"]:  # the target's category is a persistent interest seen far back in this history
        in_pers = (pers[buser] == cat[:, None]).any(1) & (p > lr["min_position"]) & (cat == target_cat[row])
        far_hit = np.bincount(row, weights=in_pers.astype(np.float64), minlength=n) > 0
        terms["long_range_without_context"] = lr["strength"] * far_hit
        if fades and ctx_eff["enabled"]:  # a faded interest counts against its target, like a lost one above
            hit_j = pers[users] == target_cat[:, None]
            faded = (hit_j & fading[users]).any(1)
            factor = np.where(faded, -ctx_eff["strength"], 1.0)
            if ctx_eff["by_activity"]:  # an active user's faded interest counts active_factor (1: kept)
                factor = np.where(faded & (world.activity()[users] > 2), ctx_eff["active_factor"], factor)
            far_hit = factor * far_hit
        logit = logit + lr["strength"] * far_hit
        terms["long_range"] = lr["strength"] * far_hit
    pairs_eff, triples_eff = eff["field_pairs"], eff["field_triples"]
    extra_ids = None
    if pairs_eff["enabled"] or triples_eff["enabled"]:
        extra_ids = _extra_ids(world, n, users, target_item, extra, ctx_rng)
    if triples_eff["enabled"]:  # planted third-order interactions (what inner products of pairs cannot express)
        names = list(extra_ids)
        trip_idx, latent3 = world.field_triples(names, triples_eff["triples"], triples_eff["rank"], extra["rows"])
        s_trip = sum((latent3[a][extra_ids[names[a]]] * latent3[b][extra_ids[names[b]]]
                      * latent3[c][extra_ids[names[c]]]).sum(1) for a, b, c in trip_idx)
        term3 = triples_eff["strength"] * s_trip / math.sqrt(len(trip_idx))
        logit = logit + term3
        terms["field_triples"] = term3
    if pairs_eff["enabled"]:  # planted interactions between pairs of extra fields (FM, PNN, DCN's signal)
        names = list(extra_ids)
        pair_idx, latent = world.field_pairs(names, pairs_eff["pairs"], pairs_eff["rank"], extra["rows"])
        s_pairs = sum((latent[a][extra_ids[names[a]]] * latent[b][extra_ids[names[b]]]).sum(1) for a, b in pair_idx)
        term = pairs_eff["strength"] * s_pairs / math.sqrt(len(pair_idx))
        logit = logit + term
        terms["field_pairs"] = term
    if trig["enabled"]:
        s_trig = _semantic_weight(target_cat, trigger_cat) * np.exp(-(page - 1) / trig["tau_page"])
        logit = logit + trig["strength"] * s_trig
        terms["trigger"] = trig["strength"] * s_trig
    label = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int8)
    feedback_cols = {}
    if fb["enabled"] and fb["disliked"]:  # a second label, and the accidental clicks' ground truth
        dislike_logit = DISLIKE_LABEL_BIAS + DISLIKE_LABEL_GAIN * (disliked[users] == target_cat[:, None]).any(1)
        label_dislike = (fb_rng.random(n) < 1.0 / (1.0 + np.exp(-dislike_logit))).astype(np.int8)
        terms["label_dislike_logit"] = dislike_logit  # the second label's; not a term of the click logit
        feedback_cols = {"label_dislike": pa.array(label_dislike, type=pa.int8()),
                         "hist_accidental": _list_array(pa.array(offsets.astype(np.int32), type=pa.int32()),
                                                        (is_click & ~genuine).astype(np.int8), pa.int8())}
    if parts is not None:
        parts.update(terms, logit=logit)

    off = pa.array(offsets.astype(np.int32), type=pa.int32())
    i64 = pa.int64()
    cols = {
        fmt.LABEL: pa.array(label, type=pa.int8()),
        "user_id": pa.array(users, type=i64),
        "user_age": pa.array(world.age[users], type=i64),
        "user_gender": pa.array(world.gender[users], type=i64),
        "target_item": pa.array(target_item, type=i64),
        "target_category": pa.array(target_cat, type=i64),
        "target_brand": pa.array(world.item_brand[target_item], type=i64),
        "target_author": pa.array(world.item_author[target_item], type=i64),
        fmt.TARGET_TIMESTAMP: pa.array(target_ts, type=i64),
        "hist_item": _list_array(off, item, i64),
        "hist_category": _list_array(off, cat, i64),
        "hist_brand": _list_array(off, world.item_brand[item], i64),
        "hist_author": _list_array(off, world.item_author[item], i64),
        fmt.HIST_TIMESTAMP: _list_array(off, hist_ts, i64),
        fmt.HIST_FEEDBACK: _list_array(off, ftype.astype(np.int8), pa.int8()),
        fmt.HIST_WATCH_TIME: _list_array(off, watch.astype(np.float32), pa.float32()),
        "trigger_item": pa.array(trigger_item, type=i64),
        "trigger_category": pa.array(trigger_cat, type=i64),
        fmt.PAGE: pa.array(page.astype(np.int32), type=pa.int32()),
        **feedback_cols,
    }
    if short_len or extra:
        _extras(world, n, users, target_item, offsets, cols, short_len, extra or _check_extra(None), ctx_rng,
                extra_ids)
    if profile:  # CAIN's basic profile: the activity bucket and the history's most watched author
        cols["user_activity"] = pa.array(world.activity()[users], type=pa.int64())
        A = int(world.item_author.max())
        watched = np.bincount(row * (A + 1) + world.item_author[item], weights=watch, minlength=n * (A + 1))
        cols["user_top_author"] = pa.array(watched.reshape(n, A + 1).argmax(1), type=pa.int64())
    table = pa.Table.from_arrays([cols[f.name] for f in schema], schema=schema)
    return table, int(label.sum()), p, dt


def _check_int(name: str, value: Any, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < lo:
        raise ValueError(f"{name}: expected an integer >= {lo}, got {value!r}")
    return int(value)


# ------------------------------------------------------------------------------------------------------------
# Entry point
# ------------------------------------------------------------------------------------------------------------


MARKER = ".tinrec-generated"  # written first into a folder the generator owns


def generated_here(out_dir: str) -> bool:
    """Did tinrec's generator make ``out_dir``? (Its marker, or a meta.json the generator wrote.)"""
    if g_pathmgr.exists(posixpath.join(out_dir, MARKER)):
        return True
    meta = posixpath.join(out_dir, "meta.json")
    if g_pathmgr.exists(meta):
        try:
            with g_pathmgr.open(meta, "r") as f:
                return "generator" in json.load(f)
        except ValueError:
            return False
    return False


def claim(out_dir: str) -> None:
    """Make ``out_dir`` the generator's: refused unless it is absent, empty, or generated by tinrec."""
    if g_pathmgr.exists(out_dir):
        if not g_pathmgr.isdir(out_dir):
            raise ValueError(f"{out_dir}: exists and is not a folder; tinrec generates data only into an empty "
                             f"or absent folder")
        theirs = sorted(g_pathmgr.ls(out_dir))
        if theirs and not generated_here(out_dir):
            shown = ", ".join(theirs[:5]) + (", ..." if len(theirs) > 5 else "")
            raise ValueError(f"{out_dir}: holds files tinrec did not create ({shown}); tinrec generates data only "
                             f"into an empty or absent folder, or one it generated: choose another folder")
    g_pathmgr.mkdirs(out_dir)
    write_bytes_atomic(posixpath.join(out_dir, MARKER),
                       b"This folder was generated by tinrec (tinrec gen-data); tinrec may regenerate into it.\n")


def parameters(
    *,
    seed: int = 0,
    num_users: int = 4000,
    num_items: int = 20000,
    num_categories: int = 40,
    num_brands: int = 400,
    num_authors: int = 1000,
    train_rows: int = 80000,
    valid_rows: int = 10000,
    test_rows: int = 10000,
    seq_len_mean: float = 50.0,
    seq_len_max: int = 200,
    rows_per_file: int = 50000,
    row_group_size: int = 4096,
    gt_positions: int = 50,
    effects: Optional[dict] = None,
    short_len: int = 0,
    extra_features: Optional[dict] = None,
    profile: bool = False,
) -> dict:
    """The generator's arguments, checked (ValueError naming the argument) and normalised as ``meta.json``
    records them under ``generator``: two calls describe the same data exactly when these are equal."""
    params = {
        "seed": _check_int("seed", seed, 0),
        "num_users": _check_int("num_users", num_users, 1),
        "num_items": _check_int("num_items", num_items, 1),
        "num_categories": _check_int("num_categories", num_categories, NUM_FAVOURITES + 1),
        "num_brands": _check_int("num_brands", num_brands, 1),
        "num_authors": _check_int("num_authors", num_authors, 1),
        "train_rows": _check_int("train_rows", train_rows, 1),
        "valid_rows": _check_int("valid_rows", valid_rows, 1),
        "test_rows": _check_int("test_rows", test_rows, 1),
        "seq_len_mean": None,
        "seq_len_max": _check_int("seq_len_max", seq_len_max, 1),
        "rows_per_file": _check_int("rows_per_file", rows_per_file, 1),
        "row_group_size": _check_int("row_group_size", row_group_size, 1),
        "gt_positions": _check_int("gt_positions", gt_positions, 1),
        "effects": merge_effects(effects),
    }
    if short_len:  # only when on, so the meta.json of a default dataset does not change
        params["short_len"] = _check_int("short_len", short_len, 0)
    extra = _check_extra(extra_features)
    if extra_features:
        params["extra_features"] = extra
    fp = params["effects"]["field_pairs"]
    n_fields = extra["user"] + extra["item"] + extra["ctx"]
    if fp["enabled"] and fp["pairs"] > n_fields * (n_fields - 1) // 2:
        raise ValueError(f"effects.field_pairs.pairs: {fp['pairs']} pairs need more extra fields than the "
                         f"{n_fields} of extra_features (at most {n_fields * (n_fields - 1) // 2} pairs)")
    ft = params["effects"]["field_triples"]
    most = n_fields * (n_fields - 1) * (n_fields - 2) // 6
    if ft["enabled"] and ft["triples"] > most:
        raise ValueError(f"effects.field_triples.triples: {ft['triples']} triples need more extra fields than the "
                         f"{n_fields} of extra_features (at most {most} triples)")
    if not isinstance(profile, bool):
        raise ValueError(f"profile: expected true or false, got {profile!r}")
    if profile:
        params["profile"] = True
    if isinstance(seq_len_mean, bool) or not isinstance(seq_len_mean, numbers.Real) or not seq_len_mean > 0 \
            or not math.isfinite(seq_len_mean):
        raise ValueError(f"seq_len_mean: expected a number > 0, got {seq_len_mean!r}")
    params["seq_len_mean"] = float(seq_len_mean)
    if params["num_items"] < params["num_categories"]:
        raise ValueError(f"num_items: expected >= num_categories ({num_categories}) so that every category "
                         f"has an item, got {num_items}")
    return params


def _world_and_schema(params: dict):
    world = _World(np.random.default_rng([params["seed"], 999]), params["num_users"], params["num_items"],
                   params["num_categories"], params["num_brands"], params["num_authors"], seed=params["seed"])
    extra = _check_extra(params.get("extra_features"))
    schema = pa.schema(list(fmt.arrow_schema()) + extra_schema(params.get("short_len", 0), extra)
                       + ([pa.field("user_activity", pa.int64()), pa.field("user_top_author", pa.int64())]
                          if params.get("profile", False) else []) + feedback_schema(params["effects"]))
    return world, schema


def _chunk_at(world: _World, schema: pa.Schema, params: dict, split_index: int, chunk_index: int, n: int,
              parts: Optional[Dict[str, np.ndarray]] = None):
    """Chunk ``chunk_index`` of split ``split_index`` (``n`` rows), from its own generators."""
    seed = params["seed"]
    extra = params.get("extra_features")
    return _chunk(world, np.random.default_rng([seed, split_index, chunk_index]), n, fmt.SPLITS[split_index],
                  params["seq_len_mean"], params["seq_len_max"], params["effects"], schema, params.get("short_len", 0),
                  _check_extra(extra) if extra else None, np.random.default_rng([seed, split_index, chunk_index, 77]),
                  np.random.default_rng([seed, split_index, chunk_index, 55]), params.get("profile", False), parts,
                  np.random.default_rng([seed, split_index, chunk_index, 88]))


def logit_parts(generator: dict, split: str = "test", show_progress: bool = False) -> Dict[str, np.ndarray]:
    """Each row's logit terms in split ``split`` of the dataset that ``generator`` (a ``meta.json``'s
    ``generator``: the parameters of :func:`parameters`) describes, regenerated in memory: ``logit`` (the
    label's), ``base`` (global bias + the target item's), ``user`` (the user's bias), and each enabled effect's
    term (``semantic_temporal``, ``long_range``, ``trigger``; with the context effect's sign flips undone:
    ``*_without_context``), plus ``label``; a further label's own logit as ``<label>_logit``
    (``label_dislike_logit``), not a term of ``logit``. What a model could learn at best (``tinrec analyze effects``)."""
    params = parameters(**generator)
    world, schema = _world_and_schema(params)
    split_index = fmt.SPLITS.index(split)
    n_rows, size = params[f"{split}_rows"], params["row_group_size"]
    out: Dict[str, list] = {}
    for chunk_index, start in enumerate(tqdm(range(0, n_rows, size), desc=f"regenerate {split}", unit="chunk",
                                             disable=not show_progress)):
        parts: Dict[str, np.ndarray] = {}
        table = _chunk_at(world, schema, params, split_index, chunk_index, min(size, n_rows - start), parts)[0]
        parts["label"] = table.column(fmt.LABEL).to_numpy()
        for k, v in parts.items():
            out.setdefault(k, []).append(np.asarray(v, np.float64) if k != "label" else v)
    return {k: np.concatenate(v) for k, v in out.items()}


def generate_dataset(out_dir: str, *, show_progress: bool = True, **kwargs: Any) -> dict:
    """Generate the synthetic dataset into ``out_dir`` (any iopath path); returns the meta dict it wrote.
    ``kwargs``: the arguments of :func:`parameters` (docs/data.md).

    Deterministic: the same arguments give byte-identical files. See the module docstring / docs/data.md.
    """
    params = parameters(**kwargs)
    extra = _check_extra(params.get("extra_features"))
    profile = params.get("profile", False)
    eff = params["effects"]
    C, P = params["num_categories"], params["gt_positions"]

    claim(out_dir)
    # A previous (complete or partial) dataset here stops being "complete" before anything is rewritten.
    for name in ("meta.json", "time_bins.json", "ground_truth.npz", ".tinrec/time_bins.json", ".tinrec/check.json"):
        remove_if_exists(posixpath.join(out_dir, name))
    for split in fmt.SPLITS:
        folder = posixpath.join(out_dir, split)
        g_pathmgr.mkdirs(folder)
        for name in g_pathmgr.ls(folder):  # parts of an earlier run (maybe more of them than this one writes)
            if PART_FILE.fullmatch(name):
                g_pathmgr.rm(posixpath.join(folder, name))

    world, schema = _world_and_schema(params)
    split_rows = {"train": params["train_rows"], "valid": params["valid_rows"], "test": params["test_rows"]}
    decay_sum, decay_count = np.zeros(P), np.zeros(P)
    time_gt = eff["semantic_temporal"]["enabled"] and eff["semantic_temporal"]["decay"] == "time"
    tau_h = eff["semantic_temporal"]["tau_time_hours"]
    splits, ctr, train_behaviours = {}, {}, 0
    bar = tqdm(total=sum(split_rows.values()), unit="row", unit_scale=True, desc="gen-data",
               disable=not show_progress)
    try:
        for split_index, split in enumerate(fmt.SPLITS):
            n_rows, clicks = split_rows[split], 0
            writer = PartWriter(out_dir, split, schema, params["rows_per_file"], params["row_group_size"])
            try:
                for chunk_index, start in enumerate(range(0, n_rows, params["row_group_size"])):
                    n = min(params["row_group_size"], n_rows - start)
                    table, c, p, dt = _chunk_at(world, schema, params, split_index, chunk_index, n)
                    writer.write(table)
                    clicks += c
                    if split == "train":
                        train_behaviours += pc.sum(pc.list_value_length(table.column(fmt.HIST_ID_COLUMNS[0]))).as_py()
                    if split == "train" and time_gt:
                        m = p <= P
                        decay_sum += np.bincount(p[m] - 1, weights=np.exp(-dt[m] / 3600.0 / tau_h), minlength=P)
                        decay_count += np.bincount(p[m] - 1, minlength=P)
                    bar.update(n)
                files = writer.finish()
            except BaseException:
                writer.abort()
                raise
            splits[split] = {"rows": n_rows, "files": files}
            ctr[split] = clicks / n_rows
    finally:
        bar.close()

    # Ground truth.
    positions = np.arange(1, P + 1)
    st = eff["semantic_temporal"]
    if not st["enabled"]:
        mean_decay = np.zeros(P)
    elif st["decay"] == "position":
        mean_decay = np.exp(-(positions - 1) / st["tau_position"])
    else:
        mean_decay = np.divide(decay_sum, decay_count, out=np.zeros(P), where=decay_count > 0)
    cats = np.arange(C + 1)
    sem = _semantic_weight(cats[:, None], cats[None, :])
    sem[0, :] = sem[:, 0] = 0.0
    strength = st["strength"] if st["enabled"] else 0.0
    stc = (strength * sem[:, :, None] * mean_decay[None, None, :]).astype(np.float32)
    trig = eff["trigger"]
    pages = np.arange(1, PAGE_MAX + 1)
    trig_strength = trig["strength"] if trig["enabled"] else 0.0
    trigger_weight = (trig_strength * sem[:, :, None] * np.exp(-(pages - 1) / trig["tau_page"])[None, None, :])
    write_bytes_atomic(posixpath.join(out_dir, "ground_truth.npz"),
                       npz_bytes(stc_weight=stc, positions=positions.astype(np.int64),
                                 mean_decay=mean_decay.astype(np.float32),
                                 trigger_weight=trigger_weight.astype(np.float32),
                                 **_long_range_truth(world, eff["long_range"]),
                                 **_field_interactions_truth(world, params),
                                 **({"disliked": world.disliked(eff["feedback"]["disliked"])}
                                    if eff["feedback"]["enabled"] and eff["feedback"]["disliked"] else {})))

    meta = {
        "format_version": fmt.FORMAT_VERSION,
        "generator": params,
        "tables": {"user": params["num_users"] + 1, "item": params["num_items"] + 1, "category": C + 1,
                   "brand": params["num_brands"] + 1, "author": params["num_authors"] + 1,
                   "age": NUM_AGES + 1, "gender": NUM_GENDERS + 1, "page": PAGE_MAX + 1,
                   **{c: extra["rows"] for p in ("user", "item", "ctx") for c in family(p, extra[p])},
                   **({"activity": 6} if profile else {})},
        "columns": describe(schema),
        "splits": splits,
        "max_seq_len": params["seq_len_max"],
        "mean_history_length": train_behaviours / max(1, split_rows["train"]),  # planner pooling factors
        "ctr": ctr,
    }
    write_bytes_atomic(posixpath.join(out_dir, "meta.json"), json.dumps(meta, indent=2).encode("utf-8"))
    return meta
