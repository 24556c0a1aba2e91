"""User-item features computed from the user's recent events, in TensorFlow ops.

The same function serves offline (training and scoring rows, in batches) and the exported
`recommend` graph (a request's history against its candidates), so the ranker never sees a
feature computed one way in training and another way in serving.

For a candidate item c and the user's last L events (item, category, event type, age in days):
has the user touched c, how often per event type, how recently, a recency-weighted engagement
score; and the same for c's category; and how much history there is.
"""

from __future__ import annotations

import tensorflow as tf

CROSS_FEATURES = (
    "ui_clicks", "ui_saves", "ui_purchases", "ui_recency", "ui_engagement",
    "uc_events", "uc_recency", "history_size",
)
EVENT_WEIGHTS = {"click": 1.0, "save": 2.0, "purchase": 4.0}
HALF_LIFE_DAYS = 1.0
# `ui_engagement` again at other half-lives (`ranking.engagement_features`): 0.25 and 2 days are
# the user_history baseline's on EComm and Taobao (`baselines.history_half_life_days`), 7 a slow
# one. Computed with the cross features (the same masks), returned as extra columns.
ENGAGEMENT_HALF_LIVES = (0.25, 2.0, 7.0)
ENGAGEMENT_FEATURES = tuple(f"ui_engagement_{h:g}d" for h in ENGAGEMENT_HALF_LIVES)


def _codes(ids: tf.Tensor) -> tf.Tensor:
    return tf.strings.to_hash_bucket_fast(ids, 2**62)


def _matches(candidates: tf.Tensor, history: tf.Tensor) -> tf.Tensor:
    """(batch, C) and (batch, L) ids -> (batch, C, L) bool: candidate c is history slot l.
    Ids are compared as 62-bit fingerprints: the comparisons are 12x faster on integers than on
    strings, and two different ids of one user's history and candidates share a fingerprint
    with odds of about 1 in 10^14."""
    return tf.equal(_codes(candidates)[:, :, None], _codes(history)[:, None, :])


def _log_count(mask: tf.Tensor) -> tf.Tensor:
    """log1p of the true slots of (..., L) -> (...)."""
    return tf.math.log1p(tf.reduce_sum(tf.cast(mask, tf.float32), axis=-1))


def _recency(mask: tf.Tensor, ages: tf.Tensor) -> tf.Tensor:
    """exp(-age in days) of the most recent slot of (..., L) `mask` (ages broadcast to it), 0
    when none is true."""
    nearest = tf.reduce_min(tf.where(mask, ages, 1e9), axis=-1)
    return tf.exp(-tf.minimum(nearest, 50.0)) * tf.cast(tf.reduce_any(mask, -1), tf.float32)


def cross_features(history_items, history_categories, history_events, history_ages,
                   candidate_items, candidate_categories, half_lives=()) -> tf.Tensor:
    """User-item features of each candidate against its user's history.

    Args:
        history_items, history_categories, history_events: (batch, L) strings, "" = padding.
        history_ages: (batch, L) float days between each event and the prediction time.
        candidate_items, candidate_categories: (batch, C) strings.
        half_lives: also `ui_engagement` at each of these half-lives (days), as extra columns
            after `CROSS_FEATURES` (`ENGAGEMENT_HALF_LIVES` for `ENGAGEMENT_FEATURES`).

    Returns:
        (batch, C, len(CROSS_FEATURES) + len(half_lives)) float32, every value in [0, ~6]
        (log1p counts, recencies in (0, 1]).
    """
    valid = tf.not_equal(history_items, "")[:, None, :]  # (batch, 1, L)
    ages = tf.cast(history_ages, tf.float32)[:, None, :]
    known_category = tf.not_equal(candidate_categories, "")[:, :, None]
    same_item = _matches(candidate_items, history_items) & valid  # (b, C, L)
    same_category = _matches(candidate_categories, history_categories) & valid & known_category
    events = history_events[:, None, :]
    weights = tf.zeros_like(ages)
    for event, weight in EVENT_WEIGHTS.items():
        weights += weight * tf.cast(tf.equal(events, event), tf.float32)
    touched = tf.cast(same_item, tf.float32)

    def engagement_at(half_life):
        decayed = weights * tf.pow(0.5, tf.maximum(ages, 0.0) / half_life)
        return tf.math.log1p(tf.reduce_sum(decayed * touched, -1))

    engagement = engagement_at(HALF_LIFE_DAYS)
    size = _log_count(tf.broadcast_to(valid, tf.shape(same_item)))
    columns = [
        _log_count(same_item & tf.equal(events, "click")),
        _log_count(same_item & tf.equal(events, "save")),
        _log_count(same_item & tf.equal(events, "purchase")),
        _recency(same_item, ages),
        engagement,
        _log_count(same_category),
        _recency(same_category, ages),
        size,
    ] + [engagement_at(float(h)) for h in half_lives]
    return tf.stack(columns, axis=-1)


# Target attention (`ranking.target_attention`, DIN-style): the user's last `ATTENTION_LENGTH`
# events, each described against the candidate, for a learned weighting of the history.
ATTENTION_LENGTH = 20
SEQUENCE_FEATURES = ("same_item", "same_category", "click", "save", "purchase", "log_age", "present")


def sequence_features(history_items, history_categories, history_events, history_ages,
                      candidate_items, candidate_categories, length: int = ATTENTION_LENGTH) -> tf.Tensor:
    """Each of the user's last `length` events described against each candidate.

    Args: as `cross_features` (history most recent first, "" = padding).

    Returns:
        (batch, C, length, len(SEQUENCE_FEATURES)) float32: per slot, whether the event's item
        is the candidate and whether its category is the candidate's (0/1), its event type one-hot,
        log1p of its age in days, and 1 for a real event (0 for padding, whose other values
        are 0 too). A history shorter than `length` is padded.
    """
    def first(values, fill):
        width = tf.shape(values)[1]
        values = tf.pad(values[:, :length], [[0, 0], [0, tf.maximum(length - width, 0)]], constant_values=fill)
        return tf.reshape(values, [-1, length])

    items, categories = first(history_items, ""), first(history_categories, "")
    events, ages = first(history_events, ""), first(tf.cast(history_ages, tf.float32), 0.0)
    present = tf.not_equal(items, "")[:, None, :]  # (batch, 1, length)
    known_category = tf.not_equal(candidate_categories, "")[:, :, None]
    same_item = _matches(candidate_items, items) & present
    same_category = _matches(candidate_categories, categories) & present & known_category
    shape = tf.shape(same_item)

    def per_slot(values):  # (batch, length) -> (batch, C, length)
        return tf.broadcast_to(values[:, None, :], shape)

    columns = [tf.cast(same_item, tf.float32), tf.cast(same_category, tf.float32)]
    columns += [per_slot(tf.cast(tf.equal(events, event), tf.float32)) for event in ("click", "save", "purchase")]
    columns.append(per_slot(tf.where(present[:, 0], tf.math.log1p(tf.maximum(ages, 0.0)), 0.0)))
    columns.append(per_slot(tf.cast(present[:, 0], tf.float32)))
    return tf.stack(columns, axis=-1)



# The user's current session (`session` role of the spec): the session of the user's latest
# event. What a shopper does within one visit says more about the next click than the same
# events spread over days; without a session role these are not computed.
SESSION_FEATURES = ("ui_session_events", "uc_session_events", "session_events")


def session_features(history_items, history_categories, history_sessions, candidate_items,
                     candidate_categories) -> tf.Tensor:
    """Each candidate against the user's latest session.

    Args:
        history_items, history_categories: (batch, L) strings, most recent first, "" = padding.
        history_sessions: (batch, L) strings, each event's session id; "" = unknown, never part
            of the latest session (so a request without sessions gets 0s, not one long session).
        candidate_items, candidate_categories: (batch, C) strings.

    Returns:
        (batch, C, len(SESSION_FEATURES)) float32: log1p of the number of events of the latest
        session on the candidate, on its category, and in all.
    """
    latest = history_sessions[:, :1]  # (batch, 1): the most recent event's session
    in_session = (tf.equal(history_sessions, latest) & tf.not_equal(history_sessions, "")
                  & tf.not_equal(history_items, ""))[:, None, :]  # (batch, 1, L)
    known_category = tf.not_equal(candidate_categories, "")[:, :, None]
    same_item = _matches(candidate_items, history_items)
    same_category = _matches(candidate_categories, history_categories)
    everything = tf.broadcast_to(in_session, tf.shape(same_item))
    return tf.stack([_log_count(same_item & in_session), _log_count(same_category & in_session & known_category),
                     _log_count(everything)], axis=-1)


# What the cross features leave out (`ranking.activity_features`): how recently the user saved
# or bought the candidate in particular (`ui_recency` counts any event), and how active the user
# has been over the last day and week (of the history's events).
ACTIVITY_FEATURES = ("ui_save_recency", "ui_purchase_recency", "user_events_1d", "user_events_7d")


def user_item_activity(history_items, history_events, history_ages, candidate_items) -> tf.Tensor:
    """Args as `cross_features`. Returns (batch, C, len(ACTIVITY_FEATURES)) float32:
    exp(-age in days) of the user's latest save and latest purchase of the candidate (0 when
    none), and log1p of the user's events in the last 1 and 7 days (the same for every
    candidate of a user)."""
    valid = tf.not_equal(history_items, "")
    ages = tf.cast(history_ages, tf.float32)
    same_item = _matches(candidate_items, history_items) & valid[:, None, :]

    def recency(event):
        return _recency(same_item & tf.equal(history_events, event)[:, None, :], ages[:, None, :])

    def recent_events(days):  # (batch,) -> (batch, C)
        return tf.broadcast_to(_log_count(valid & (ages < days))[:, None], tf.shape(same_item)[:2])

    return tf.stack([recency("save"), recency("purchase"), recent_events(1.0), recent_events(7.0)], axis=-1)


# Features of a candidate relative to the user's other candidates: for each of these values,
# its gap to the list's best and to the list's mean. A candidate's engagement means little on its
# own; what orders a list is how it compares with the rest of that list.
LIST_SOURCES = ("ui_engagement", "ui_recency", "uc_events", "uc_recency", "item_popularity", "two_tower_score")
LIST_FEATURES = tuple(f"{name}_{kind}" for kind in ("gap_to_best", "gap_to_mean") for name in LIST_SOURCES)


def list_values(cross, item_popularity, two_tower_score) -> tf.Tensor:
    """(..., len(LIST_SOURCES)) from the cross features (..., len(CROSS_FEATURES)) and two scalars."""
    picked = [cross[..., CROSS_FEATURES.index(name)] for name in LIST_SOURCES[:4]]
    return tf.stack(picked + [tf.cast(item_popularity, tf.float32), tf.cast(two_tower_score, tf.float32)], -1)


def list_features(values, mask) -> tf.Tensor:
    """(batch, C, S) values of each list's candidates, (batch, C) mask of real candidates ->
    (batch, C, 2 S): value - the list's max, value - the list's mean (0 on padding)."""
    mask = tf.cast(mask, tf.float32)[..., None]
    best = tf.reduce_max(values * mask - 1e9 * (1.0 - mask), axis=1, keepdims=True)
    mean = tf.reduce_sum(values * mask, axis=1, keepdims=True) / tf.maximum(
        tf.reduce_sum(mask, axis=1, keepdims=True), 1.0)
    return tf.concat([values - best, values - mean], axis=-1) * mask


# Where a candidate came from (`ranking.source_features`): besides the source itself (an index
# into `examples.source_vocabulary()`, 0 = none, one-hot in the model), these values of its
# rank in that source's own list (`source_rank`), its position in the merged candidate set
# (`rank`) and that source's score (`score`). 0 for a candidate no source brought (a missed
# positive, source_rank 0). The same function offline and in the serving graphs.
PROVENANCE_FEATURES = ("inverse_source_rank", "log_source_rank", "log_rank", "source_score")


def provenance_features(source_rank, rank, score) -> tf.Tensor:
    """(...,) source ranks (1 = the source's best, 0 = no source), merged positions (1 =
    first) and source scores -> (..., len(PROVENANCE_FEATURES)) float32: 1 / source_rank,
    log1p(source_rank), log1p(rank), sign(score) log1p(|score|), all 0 without a source."""
    source_rank = tf.cast(source_rank, tf.float32)
    rank = tf.cast(rank, tf.float32)
    score = tf.cast(score, tf.float32)
    known = source_rank > 0
    zero = tf.zeros_like(source_rank)
    columns = [
        tf.where(known, 1.0 / tf.maximum(source_rank, 1.0), zero),
        tf.where(known, tf.math.log1p(tf.maximum(source_rank, 0.0)), zero),
        tf.where(known, tf.math.log1p(tf.maximum(rank, 0.0)), zero),
        tf.where(known, tf.sign(score) * tf.math.log1p(tf.abs(score)), zero),
    ]
    return tf.stack(columns, axis=-1)
