"""The embedded default world: a seeded, vectorized synthetic e-commerce log that knows its truth.

Users have latent tastes over a category tree; items have categories (``top>mid>leaf``), brands,
colours, prices, a latent vector and a quality; popularity is Zipf. Sessions hold search requests
(queries drawn from item attributes, in English or Chinese) and feed requests (no query). A logging
policy shows ``list_size`` items per request, ordered by noisy popularity; clicks follow a
position-biased examination model, then carts and purchases. Optionally the list matters too
(``satiation``, ``cascade_stop``): an item attracts less when items of its leaf category or brand are
shown above it, and the user may stop scanning after a click; :func:`expected_list_value` is then the
oracle of a whole list (expected clicks and purchases under this same user model).

The world drifts, as real logs do: some items launch inside the window (and are never shown
before), new items carry a novelty bonus that fades with age, and some items trend for a few days
(a hidden bump in appeal the logging policy does not know about). Only statistics taken over
recent windows can follow that; the all-history counts cannot.

The true relevance of any (user, query, item) is :func:`true_relevance`; the generator draws clicks
from exactly that function, so every stage can be scored against the oracle.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from rankpipe.pipeline import schema as S
from rankpipe.pipeline.datasets.config import SyntheticConfig
from rankpipe.ranking.metrics import repeats_above

LATENT_DIMS = 16

# (top, mid, leaf in English, leaf in Chinese)
CATEGORY_TREE = [
    ("clothing", "tops", "shirt", "衬衫"), ("clothing", "tops", "t-shirt", "T恤"), ("clothing", "tops", "sweater", "毛衣"),
    ("clothing", "bottoms", "jeans", "牛仔裤"), ("clothing", "bottoms", "skirt", "裙子"), ("clothing", "bottoms", "shorts", "短裤"),
    ("shoes", "casual", "sneakers", "运动鞋"), ("shoes", "casual", "sandals", "凉鞋"), ("shoes", "formal", "boots", "靴子"),
    ("electronics", "audio", "headphones", "耳机"), ("electronics", "audio", "speaker", "音箱"),
    ("electronics", "phones", "phone", "手机"), ("electronics", "phones", "charger", "充电器"), ("electronics", "phones", "phone case", "手机壳"),
    ("electronics", "computers", "laptop", "笔记本电脑"), ("electronics", "computers", "mouse", "鼠标"), ("electronics", "computers", "keyboard", "键盘"),
    ("home", "kitchen", "pan", "平底锅"), ("home", "kitchen", "knife", "菜刀"), ("home", "kitchen", "kettle", "水壶"),
    ("home", "bedding", "pillow", "枕头"), ("home", "bedding", "blanket", "毯子"), ("home", "bedding", "bed sheet", "床单"),
    ("home", "decor", "lamp", "台灯"), ("home", "decor", "vase", "花瓶"), ("home", "decor", "rug", "地毯"),
    ("beauty", "skincare", "face cream", "面霜"), ("beauty", "skincare", "serum", "精华"), ("beauty", "skincare", "cleanser", "洁面乳"),
    ("beauty", "makeup", "lipstick", "口红"), ("beauty", "makeup", "mascara", "睫毛膏"), ("beauty", "makeup", "foundation", "粉底"),
    ("sports", "fitness", "yoga mat", "瑜伽垫"), ("sports", "fitness", "dumbbell", "哑铃"), ("sports", "fitness", "resistance band", "弹力带"),
    ("sports", "outdoor", "tent", "帐篷"), ("sports", "outdoor", "backpack", "背包"), ("sports", "outdoor", "water bottle", "水杯"),
]
COLORS = [("red", "红色"), ("blue", "蓝色"), ("black", "黑色"), ("white", "白色"), ("green", "绿色"), ("pink", "粉色"), ("grey", "灰色"), ("brown", "棕色")]
STYLES = ["classic", "slim", "portable", "premium", "soft", "lightweight", "vintage", "waterproof", "wireless", "cotton"]
BRAND_SYLLABLES = ["va", "lo", "mi", "ro", "ka", "zen", "tu", "nor", "bel", "xi", "qua", "dor", "fi", "lu", "ster", "ion"]
N_BRANDS = 240

# Click model constants: examination probability (1/position)**EXAMINATION_POWER; relevance logit
# weights. Kept module-level so tests and docs can refer to the generator's truth.
EXAMINATION_POWER = 0.8
# A click becomes a cart with probability sigmoid(logit - CART_OFFSET), a cart a purchase with PURCHASE_GIVEN_CART.
CART_OFFSET, PURCHASE_GIVEN_CART = 1.5, 0.45
W_TASTE, W_QUALITY, W_COLOR, W_BRAND, W_LEAF_MISS, BIAS = 3.0, 0.6, 1.2, 1.2, 4.0, -2.3
# Drift: novelty fades with time constant FRESH_DAYS; trend bumps are Gaussian in time with a width
# (standard deviation) and height (logit) drawn from these ranges.
FRESH_DAYS = 7.0
TREND_WIDTH_DAYS = (1.0, 4.0)
TREND_HEIGHT = (0.5, 2.0)
DAY_S = 86_400.0


@dataclass(frozen=True)
class World:
    """Tables of the data contract plus the oracle tables that hold the truth."""

    items: pd.DataFrame
    users: pd.DataFrame
    events: pd.DataFrame
    oracle_items: pd.DataFrame
    oracle_users: pd.DataFrame
    oracle_queries: pd.DataFrame


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True).clip(1e-9)


def _ids(prefix: str, n: int, width: int) -> np.ndarray:
    return np.char.add(prefix, np.char.zfill(np.arange(n).astype(str), width)).astype(object)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def relevance_logit(taste: np.ndarray, vec: np.ndarray, quality: np.ndarray, is_search: np.ndarray,
                    leaf_match: np.ndarray, color_match: np.ndarray, brand_match: np.ndarray,
                    drift: np.ndarray | float = 0.0) -> np.ndarray:
    """The world's true relevance logit for aligned rows of (user taste, item vector, query match flags).

    Shapes: taste, vec (N, D); the rest (N,). For feed requests (is_search False) the match flags are
    ignored. ``drift`` is the item's time-dependent appeal at the request's time (:func:`item_drift`).
    """
    affinity = np.einsum("nd,nd->n", taste, vec)  # (N,)
    query_term = is_search * (W_COLOR * color_match + W_BRAND * brand_match - W_LEAF_MISS * (1 - leaf_match))
    return W_TASTE * affinity + W_QUALITY * quality + query_term + BIAS + drift


def item_drift(age_s: np.ndarray, from_peak_s: np.ndarray, trend_width_days: np.ndarray, trend_height: np.ndarray,
               freshness: np.ndarray | float) -> np.ndarray:
    """Time-dependent appeal (logit) of items at request times: novelty plus trend bump.

    Args:
        age_s: seconds since the item launched (>= 0 where it exists).
        from_peak_s: seconds from the item's trend peak.
        trend_width_days / trend_height: the bump's standard deviation and height (0: no trend).
        freshness: logit weight of novelty, ``freshness * exp(-age / FRESH_DAYS)``.
    """
    novelty = freshness * np.exp(-np.maximum(age_s, 0.0) / (FRESH_DAYS * DAY_S))
    trend = trend_height * np.exp(-0.5 * (from_peak_s / (trend_width_days * DAY_S)) ** 2)
    return novelty + trend


def _pair_truth(oracle_users: pd.DataFrame, oracle_items: pd.DataFrame, oracle_queries: pd.DataFrame,
                pairs: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(relevance logit, known, launched, item leaf, item brand) of each (user_id, item_id, query, ts) row of ``pairs``."""
    if S.TS not in pairs:
        raise ValueError(f"true_relevance: pairs need column {S.TS!r} (the request time); got columns {list(pairs.columns)}")
    users = oracle_users.set_index(S.USER_ID)
    items = oracle_items.set_index(S.ITEM_ID)
    queries = oracle_queries.set_index(S.QUERY)
    u = users.index.get_indexer(pairs[S.USER_ID])
    i = items.index.get_indexer(pairs[S.ITEM_ID])
    q = queries.index.get_indexer(pairs[S.QUERY].fillna("\x00"))
    known = (u >= 0) & (i >= 0)
    rows = np.where(known, i, 0)  # item rows; unknown pairs read row 0 and are masked by the callers
    taste = np.stack(users["taste"].to_numpy())[np.where(known, u, 0)]
    vec = np.stack(items["vec"].to_numpy())[rows]
    item_leaf, item_color, item_brand = (items[c].to_numpy()[rows] for c in ("leaf", "color", "brand"))
    is_search = (q >= 0).astype(np.float64)
    qi = np.where(q >= 0, q, 0)
    q_leaf, q_color, q_brand = (queries[c].to_numpy()[qi] for c in ("leaf", "color", "brand"))
    t_s = _seconds(pairs[S.TS])
    age_s = t_s - _seconds(items["created_at"].to_numpy()[rows])
    drift = item_drift(age_s, t_s - _seconds(items["trend_peak"].to_numpy()[rows]), items["trend_width_days"].to_numpy()[rows],
                       items["trend_height"].to_numpy()[rows], items["freshness"].to_numpy()[rows])
    logit = relevance_logit(
        taste, vec, items["quality"].to_numpy()[rows], is_search,
        (q_leaf == item_leaf).astype(float), ((q_color >= 0) & (q_color == item_color)).astype(float),
        ((q_brand >= 0) & (q_brand == item_brand)).astype(float), drift,
    )
    return logit, known, age_s >= 0, item_leaf, item_brand


def true_relevance(oracle_users: pd.DataFrame, oracle_items: pd.DataFrame, oracle_queries: pd.DataFrame,
                   pairs: pd.DataFrame) -> np.ndarray:
    """Probability that the user clicks the item if she examines it (alone, out of any list), for each row of ``pairs``.

    Args:
        oracle_*: the oracle tables of a synthetic world (as produced by :func:`generate`).
        pairs: columns user_id, item_id, query (null for feed requests) and ts (the request time:
            the world drifts, so relevance depends on when).

    Returns:
        float64 array (len(pairs),) in [0, 1); 0 for an item not yet launched at ts; unknown users
        or items get NaN.
    """
    logit, known, launched, _, _ = _pair_truth(oracle_users, oracle_items, oracle_queries, pairs)
    return np.where(known, np.where(launched, _sigmoid(logit), 0.0), np.nan)


def examination(position: np.ndarray) -> np.ndarray:
    """Probability that the user examines the slot at 1-based ``position`` (once she has reached it)."""
    return (1.0 / np.asarray(position, dtype=np.float64)) ** EXAMINATION_POWER


def satiation_penalty(lists: np.ndarray, position: np.ndarray, leaf: np.ndarray, brand: np.ndarray, satiation: float) -> np.ndarray:
    """The logit each slot loses to the items above it: ``satiation`` per item of its leaf category and per item of its brand."""
    if not satiation:
        return np.zeros(len(lists))
    return satiation * (repeats_above(lists, position, leaf) + repeats_above(lists, position, brand))


def _exclusive_cumsum(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Sum of the values before each element within its list; elements sorted by list, ``starts`` the first index of each one's list."""
    total = np.cumsum(values)
    return (total - values) - (total[starts] - values[starts])


def expected_list_value(oracle_users: pd.DataFrame, oracle_items: pd.DataFrame, oracle_queries: pd.DataFrame, lists: pd.DataFrame,
                        satiation: float = 0.0, cascade_stop: float = 0.0) -> pd.DataFrame:
    """Expected clicks and purchases of each ranked list under the world's own user model, exactly.

    The model is the generator's: the user reaches a slot unless she stopped after a click above it
    (probability ``cascade_stop`` per click), examines it with :func:`examination`, and clicks with
    the item's relevance after :func:`satiation_penalty`; a click becomes a purchase as in the log.
    So ``P(click at p) = reach_p · e_p · a_p`` with ``reach_p = Π_{q<p} (1 − cascade_stop · e_q · a_q)``.

    Args:
        oracle_*: the world's oracle tables; satiation / cascade_stop: the world's list-context settings.
        lists: request_id, user_id, query, ts, item_id, position (1-based, as shown). An unknown item
            or one not launched yet fills its slot but is never clicked.

    Returns:
        request_id, expected_clicks, expected_purchases: one row per list, in order of first appearance.
    """
    missing = [c for c in (S.REQUEST_ID, S.USER_ID, S.QUERY, S.TS, S.ITEM_ID, S.POSITION) if c not in lists]
    if missing:
        raise ValueError(f"expected_list_value: lists need column {missing[0]!r}; got columns {list(lists.columns)}")
    codes, request_ids = pd.factorize(lists[S.REQUEST_ID])
    position = lists[S.POSITION].to_numpy(dtype=np.float64)
    order = np.lexsort((position, codes))
    codes, position = codes[order], position[order]
    logit, known, launched, leaf, brand = _pair_truth(oracle_users, oracle_items, oracle_queries, lists.iloc[order])
    unknown_key = -1 - np.arange(len(order))  # an unknown item repeats nothing
    leaf, brand = np.where(known, leaf, unknown_key), np.where(known, brand, unknown_key)
    logit = logit - satiation_penalty(codes, position, leaf, brand, satiation)
    attract = np.where(known & launched, _sigmoid(logit), 0.0)
    click_if_reached = examination(position) * attract
    starts = np.searchsorted(codes, codes, side="left")
    reach = np.exp(_exclusive_cumsum(np.log1p(-cascade_stop * click_if_reached), starts)) if cascade_stop else 1.0
    clicks = reach * click_if_reached
    purchases = clicks * _sigmoid(logit - CART_OFFSET) * PURCHASE_GIVEN_CART
    n = len(request_ids)
    return pd.DataFrame({S.REQUEST_ID: request_ids, "expected_clicks": np.bincount(codes, clicks, minlength=n),
                         "expected_purchases": np.bincount(codes, purchases, minlength=n)})


def _seconds(ts) -> np.ndarray:
    """Timestamps as float seconds since the epoch."""
    return np.asarray(ts, dtype="datetime64[us]").astype(np.int64) / 1e6


def _brand_names(rng: np.random.Generator) -> np.ndarray:
    syl = np.array(BRAND_SYLLABLES, dtype=object)
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < N_BRANDS:  # a few hundred draws at most, once per world
        parts = rng.choice(syl, size=rng.integers(2, 4))
        name = "".join(parts)
        if name not in seen:
            seen.add(name)
            names.append(name)
    return np.array(names, dtype=object)


def _sample_within(groups: np.ndarray, cum_start: np.ndarray, cum_end: np.ndarray, cumw: np.ndarray,
                   rng: np.random.Generator) -> np.ndarray:
    """Draw one element per entry of ``groups``, weighted, among the elements of that group.

    Elements are laid out sorted by group with cumulative weights ``cumw``; group g spans the
    cumulative range [cum_start[g], cum_end[g]). One searchsorted draws all samples at once.
    """
    u = cum_start[groups] + rng.random(groups.shape) * (cum_end[groups] - cum_start[groups])
    return np.minimum(np.searchsorted(cumw, u, side="right"), len(cumw) - 1)


def generate(config: SyntheticConfig = SyntheticConfig(), seed: int = 42) -> World:
    """Generate the world. Deterministic for a given (config, seed).

    Returns:
        A :class:`World` whose ``items``, ``users`` and ``events`` follow the data contract.
    """
    for name in ("launch_share", "trend_share", "cascade_stop"):
        if not 0.0 <= getattr(config, name) <= 1.0:
            raise ValueError(f"dataset.synthetic.{name} must be in [0, 1]. Got {getattr(config, name)} instead.")
    for name in ("freshness", "satiation"):
        if getattr(config, name) < 0:
            raise ValueError(f"dataset.synthetic.{name} must be >= 0. Got {getattr(config, name)} instead.")
    rng = np.random.default_rng(seed)
    # Drift draws come from their own stream, so a stationary config (all drift 0) is the same world
    # as before drift existed, and the drift knobs don't reshuffle everything else.
    drift_rng = np.random.default_rng([seed, 1])
    list_rng = np.random.default_rng([seed, 2])  # the cascade's stop draws, for the same reason
    n_leaves = len(CATEGORY_TREE)
    tops = sorted({t for t, _, _, _ in CATEGORY_TREE})
    leaf_top = np.array([tops.index(t) for t, _, _, _ in CATEGORY_TREE])
    top_centroids = _normalize(rng.normal(size=(len(tops), LATENT_DIMS)))
    leaf_centroids = _normalize(top_centroids[leaf_top] + 0.8 * _normalize(rng.normal(size=(n_leaves, LATENT_DIMS))))
    leaf_weight = rng.dirichlet(np.full(n_leaves, 2.0))

    # --- brands: each belongs to one top category
    brand_names = _brand_names(rng)
    brand_top = np.arange(N_BRANDS) % len(tops)
    brand_order = np.argsort(brand_top, kind="stable")
    brands_per_top = np.bincount(brand_top, minlength=len(tops))
    brand_offset = np.concatenate([[0], np.cumsum(brands_per_top)[:-1]])
    brand_vecs = _normalize(rng.normal(size=(N_BRANDS, LATENT_DIMS)))

    # --- items
    n_items = config.n_items
    leaf = rng.choice(n_leaves, size=n_items, p=leaf_weight)
    top = leaf_top[leaf]
    brand = brand_order[brand_offset[top] + rng.integers(0, 1 << 30, n_items) % brands_per_top[top]]
    color = rng.integers(0, len(COLORS), n_items)
    style = rng.integers(0, len(STYLES), n_items)
    vec = _normalize(leaf_centroids[leaf] + 0.4 * brand_vecs[brand] + 0.5 * _normalize(rng.normal(size=(n_items, LATENT_DIMS))))
    quality = rng.normal(size=n_items)
    zipf_rank = rng.permutation(n_items) + 1
    popularity = (1.0 / zipf_rank**1.05) * np.exp(0.5 * quality)
    leaf_log_price = rng.uniform(np.log(8), np.log(400), n_leaves)
    price = np.round(np.exp(leaf_log_price[leaf] + 0.35 * rng.normal(size=n_items)), 2)
    start = pd.Timestamp(config.start)
    created_s = -np.floor(rng.uniform(0, 365 * DAY_S, n_items))  # seconds from start
    launched = drift_rng.random(n_items) < config.launch_share
    created_s = np.where(launched, np.floor(drift_rng.uniform(0, config.days * DAY_S, n_items)), created_s)
    created_at = start + pd.to_timedelta(created_s.astype(np.int64), unit="s")
    trend_height = np.where(drift_rng.random(n_items) < config.trend_share, drift_rng.uniform(*TREND_HEIGHT, n_items), 0.0)
    trend_width_days = drift_rng.uniform(*TREND_WIDTH_DAYS, n_items)
    trend_peak_s = np.floor(drift_rng.uniform(-5 * DAY_S, (config.days + 5) * DAY_S, n_items))

    cat_path = np.array([f"{t}>{m}>{l}" for t, m, l, _ in CATEGORY_TREE], dtype=object)
    leaf_en = np.array([l for _, _, l, _ in CATEGORY_TREE], dtype=object)
    leaf_zh = np.array([z for _, _, _, z in CATEGORY_TREE], dtype=object)
    color_en = np.array([c for c, _ in COLORS], dtype=object)
    color_zh = np.array([z for _, z in COLORS], dtype=object)
    styles = np.array(STYLES, dtype=object)
    title = brand_names[brand] + " " + color_en[color] + " " + styles[style] + " " + leaf_en[leaf] + " " + color_zh[color] + leaf_zh[leaf]
    item_ids = _ids("i", n_items, 6)
    items = pd.DataFrame({
        S.ITEM_ID: item_ids, S.TITLE: title, S.CATEGORY: cat_path[leaf], S.BRAND: brand_names[brand],
        S.PRICE: price, S.CREATED_AT: created_at.astype("datetime64[us]"), "color": color_en[color],
    })
    for column in (S.ITEM_ID, S.TITLE, S.CATEGORY, S.BRAND, "color"):
        items[column] = items[column].astype("str")

    # Items laid out by leaf with cumulative popularity, for weighted draws within a leaf.
    by_leaf = np.argsort(leaf, kind="stable")
    cumw = np.cumsum(popularity[by_leaf])
    leaf_counts = np.bincount(leaf, minlength=n_leaves)
    leaf_end_idx = np.cumsum(leaf_counts)
    leaf_cum_end = cumw[leaf_end_idx - 1]
    leaf_cum_start = np.concatenate([[0.0], leaf_cum_end[:-1]])
    global_cum = np.cumsum(popularity)

    # --- users: two taste leaves each
    n_users = config.n_users
    taste_leaves = rng.choice(n_leaves, size=(n_users, 2), p=leaf_weight)
    taste = _normalize(leaf_centroids[taste_leaves[:, 0]] + 0.6 * leaf_centroids[taste_leaves[:, 1]]
                       + 0.5 * _normalize(rng.normal(size=(n_users, LATENT_DIMS))))
    activity = rng.lognormal(0.0, 1.0, n_users)
    user_ids = _ids("u", n_users, 6)
    users = pd.DataFrame({S.USER_ID: user_ids, "segment": rng.choice(np.array(["new", "regular", "loyal"], dtype=object), n_users, p=[0.3, 0.5, 0.2])})
    users[S.USER_ID] = users[S.USER_ID].astype("str")
    users["segment"] = users["segment"].astype("str")

    # --- sessions
    n_sessions = config.n_sessions
    s_user = rng.choice(n_users, size=n_sessions, p=activity / activity.sum())
    s_start = np.sort(rng.uniform(0, config.days * 86400.0, n_sessions))
    s_len = np.minimum(rng.geometric(0.35, n_sessions), 12)
    s_intent = np.where(rng.random(n_sessions) < 0.85, taste_leaves[s_user, rng.integers(0, 2, n_sessions)],
                        rng.choice(n_leaves, size=n_sessions, p=leaf_weight))

    # --- requests
    r_session = np.repeat(np.arange(n_sessions), s_len)
    n_requests = len(r_session)
    gaps = rng.exponential(90.0, n_requests)
    cum_gaps = np.cumsum(gaps)
    first = np.concatenate([[0], np.cumsum(s_len)[:-1]])
    r_offset = cum_gaps - np.repeat(cum_gaps[first] - gaps[first], s_len) - gaps  # 0 for a session's first request
    r_time = s_start[r_session] + r_offset
    r_user = s_user[r_session]
    r_search = rng.random(n_requests) < config.search_share
    r_leaf = np.where(rng.random(n_requests) < 0.85, s_intent[r_session], taste_leaves[r_user, rng.integers(0, 2, n_requests)])

    # Queries come from a popular item of the intended leaf: "shirt", "red shirt", "vexo shirt", "衬衫", "红色衬衫".
    seed_item = by_leaf[_sample_within(r_leaf, leaf_cum_start, leaf_cum_end, cumw, rng)]
    form = rng.choice(5, size=n_requests, p=[0.3, 0.2, 0.2, 0.15, 0.15])
    q_color = np.where((form == 1) | (form == 4), color[seed_item], -1)
    q_brand = np.where(form == 2, brand[seed_item], -1)
    q_text = np.select(
        [form == 0, form == 1, form == 2, form == 3],
        [leaf_en[r_leaf], color_en[color[seed_item]] + " " + leaf_en[r_leaf], brand_names[brand[seed_item]] + " " + leaf_en[r_leaf], leaf_zh[r_leaf]],
        color_zh[color[seed_item]] + leaf_zh[r_leaf],
    ).astype(object)
    q_text = np.where(r_search, q_text, None)

    # --- the logging policy: list_size slots per request
    k = config.list_size
    slot_req = np.repeat(np.arange(n_requests), k)
    slot_search = r_search[slot_req]
    feed_from_taste = rng.random(n_requests * k) < 0.5
    slot_leaf = np.where(slot_search, r_leaf[slot_req], taste_leaves[r_user[slot_req], rng.integers(0, 2, n_requests * k)])
    within_leaf = by_leaf[_sample_within(slot_leaf, leaf_cum_start, leaf_cum_end, cumw, rng)]
    global_draw = np.minimum(np.searchsorted(global_cum, rng.random(n_requests * k) * global_cum[-1], side="right"), n_items - 1)
    slot_item = np.where(slot_search | feed_from_taste, within_leaf, global_draw)
    # An item not launched yet cannot be shown: its slot stays empty (the list is shorter).
    exists = created_s[slot_item] <= r_time[slot_req]
    slot_req, slot_item = slot_req[exists], slot_item[exists]
    # A request shows an item once; drop repeats.
    key = slot_req.astype(np.int64) * n_items + slot_item
    _, keep = np.unique(key, return_index=True)
    keep.sort()
    slot_req, slot_item = slot_req[keep], slot_item[keep]
    production_score = np.log(popularity[slot_item]) + rng.normal(size=len(slot_req))
    order = np.lexsort((-production_score, slot_req))
    slot_req, slot_item = slot_req[order], slot_item[order]
    starts = np.searchsorted(slot_req, slot_req, side="left")
    position = (np.arange(len(slot_req)) - starts + 1).astype(np.int32)

    # --- clicks, carts, purchases
    is_search = r_search[slot_req].astype(np.float64)
    slot_q_color, slot_q_brand = q_color[slot_req], q_brand[slot_req]
    logit = relevance_logit(
        taste[r_user[slot_req]], vec[slot_item], quality[slot_item], is_search,
        (leaf[slot_item] == r_leaf[slot_req]).astype(float),
        ((slot_q_color >= 0) & (slot_q_color == color[slot_item])).astype(float),
        ((slot_q_brand >= 0) & (slot_q_brand == brand[slot_item])).astype(float),
        item_drift(r_time[slot_req] - created_s[slot_item], r_time[slot_req] - trend_peak_s[slot_item],
                   trend_width_days[slot_item], trend_height[slot_item], config.freshness),
    )
    logit = logit - satiation_penalty(slot_req, position, leaf[slot_item], brand[slot_item], config.satiation)
    attract = _sigmoid(logit)
    examined = rng.random(len(slot_req)) < examination(position)
    clicked = examined & (rng.random(len(slot_req)) < attract)
    if config.cascade_stop:
        # The user may stop scanning after a click: nothing below her first stop is examined. Before
        # that stop every slot was reached, so the first drawn stop is the real one.
        stops = clicked & (list_rng.random(len(slot_req)) < config.cascade_stop)
        clicked &= _exclusive_cumsum(stops.astype(np.int64), starts) == 0
    carted = clicked & (rng.random(len(slot_req)) < _sigmoid(logit - CART_OFFSET))
    bought = carted & (rng.random(len(slot_req)) < PURCHASE_GIVEN_CART)

    base_ts = r_time[slot_req]
    click_ts = base_ts + 3.0 + position + rng.exponential(20.0, len(slot_req))
    cart_ts = click_ts + rng.exponential(40.0, len(slot_req))
    buy_ts = cart_ts + rng.exponential(90.0, len(slot_req))

    parts = []
    for kind, mask, ts in (("impression", slice(None), base_ts), ("click", clicked, click_ts), ("cart", carted, cart_ts), ("purchase", bought, buy_ts)):
        idx = np.arange(len(slot_req))[mask]
        parts.append((np.full(len(idx), kind, dtype=object), idx, ts[idx]))
    kinds = np.concatenate([p[0] for p in parts])
    rows = np.concatenate([p[1] for p in parts])
    ts = np.concatenate([p[2] for p in parts])
    order = np.argsort(ts, kind="stable")
    kinds, rows, ts = kinds[order], rows[order], ts[order]
    req = slot_req[rows]
    item = slot_item[rows]
    session_ids = _ids("s", n_sessions, 6)
    request_ids = _ids("r", n_requests, 7)
    events = pd.DataFrame({
        S.TS: (start + pd.to_timedelta((ts * 1e6).astype(np.int64), unit="us")).astype("datetime64[us]"),
        S.USER_ID: user_ids[r_user[req]],
        S.SESSION_ID: session_ids[r_session[req]],
        S.ITEM_ID: item_ids[item],
        S.EVENT: kinds,
        S.VALUE: np.where(kinds == "purchase", price[item], np.nan),
        S.REQUEST_ID: request_ids[req],
        S.QUERY: q_text[req],
        S.POSITION: position[rows],
    })
    for column in (S.USER_ID, S.SESSION_ID, S.ITEM_ID, S.EVENT, S.REQUEST_ID, S.QUERY):
        events[column] = events[column].astype("str")
    events[S.POSITION] = events[S.POSITION].astype("Int32")

    oracle_items = pd.DataFrame({S.ITEM_ID: items[S.ITEM_ID], "leaf": leaf, "color": color, "brand": brand,
                                 "quality": quality, "vec": list(vec.astype(np.float32)),
                                 "created_at": items[S.CREATED_AT],
                                 "trend_peak": (start + pd.to_timedelta(trend_peak_s.astype(np.int64), unit="s")).astype("datetime64[us]"),
                                 "trend_width_days": trend_width_days, "trend_height": trend_height,
                                 "freshness": np.full(n_items, config.freshness)})
    oracle_users = pd.DataFrame({S.USER_ID: users[S.USER_ID], "taste": list(taste.astype(np.float32))})
    queries = pd.DataFrame({S.QUERY: q_text[r_search], "leaf": r_leaf[r_search], "color": q_color[r_search], "brand": q_brand[r_search]})
    # One query string maps to one intent: "shirt" always means any shirt, whatever seed item drew it.
    oracle_queries = queries.drop_duplicates(S.QUERY).reset_index(drop=True)
    oracle_queries[S.QUERY] = oracle_queries[S.QUERY].astype("str")
    return World(items, users, events, oracle_items, oracle_users, oracle_queries)
