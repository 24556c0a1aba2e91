"""Each query's recent items: the user's last N items strictly before the query time.

The output feeds the model's history inputs directly (``history_item_ids`` and one
``history_<attribute>`` array per item attribute), so the same function serves training
(queries = the training examples) and evaluation (queries = test users at the start of the
test period). It is vectorised: one stable sort of the events, one ``searchsorted`` for all
queries, one fancy-indexing gather. No Python loop runs over users or queries.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

HISTORY_ITEM_IDS = "history_item_ids"
HISTORY_COUNT = "history_count"
PAD = ""


def history_input_name(column: str) -> str:
    """The model-input name of the history of an item column.

    ``item_id`` -> ``history_item_ids``; any attribute ``c`` -> ``history_c``
    (e.g. ``history_category``).
    """
    return HISTORY_ITEM_IDS if column == "item_id" else f"history_{column}"


def to_utc_ns(values) -> np.ndarray:
    """Timestamps (tz-aware, naive = UTC, or strings) as int64 nanoseconds since the epoch.

    Converts to nanoseconds explicitly: pandas 3 infers microsecond resolution for many inputs,
    so ``astype("int64")`` alone would mix units between two frames.
    """
    ts = pd.to_datetime(pd.Series(values), utc=True)
    if ts.isna().any():
        raise ValueError("timestamp has missing values (NaT)")
    return ts.dt.tz_localize(None).to_numpy(dtype="datetime64[ns]").view("int64")


def to_unix_seconds(values) -> np.ndarray:
    """Timestamps as int64 unix seconds (UTC), the dtype of the model's ``timestamp`` input."""
    return to_utc_ns(values) // 1_000_000_000


def as_str(values) -> np.ndarray:
    """Values as an object array of Python str, missing (None/NaN) as "" (a new array).

    Values that already are all str are copied as they are: the general path goes through
    pandas' Arrow string dtype and back, a new Python str per value."""
    values = values.to_numpy(dtype=object) if isinstance(values, (pd.Series, pd.Index)) else \
        np.asarray(values, dtype=object)
    if values.ndim == 1 and pd.api.types.infer_dtype(values, skipna=False) == "string":
        return values.copy()
    return pd.Series(values).astype("str").fillna(PAD).to_numpy(dtype=object)


def last_items_before(
    events: pd.DataFrame,
    queries: pd.DataFrame,
    length: int,
    item_attrs: pd.DataFrame | Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """The last ``length`` items each query's user engaged with strictly before its timestamp.

    Args:
      events: ``user_id``, ``item_id``, ``timestamp`` (any event type counts). Pass only the
        events the queries may see (e.g. train + validation for test queries); events at or after
        a query's own timestamp are never used, whatever is passed.
      queries: ``user_id``, ``timestamp``; one output row per query row, in the same order.
        A user unknown to ``events`` gets an empty history.
      length: history slots (the spec's ``history_length``), > 0.
      item_attrs: item attributes to carry along with each history item, for the item-side
        history embeddings. A DataFrame (``item_id`` plus attribute columns, one row per item,
        or the attribute columns indexed by a unique ``item_id``; an item missing from it gets
        "") looks attributes up by item; a sequence of column names
        of ``events`` takes them from the event rows themselves (Taobao events carry
        ``category``); None carries ids only.

    Returns:
      ``{"history_item_ids": (n_queries, length) object array of str,
      "history_<attr>": the same for each attribute, "history_count": (n_queries,) int64}``.
      Row i holds query i's items most recent first, padded with "" after the last valid slot;
      ``history_count`` is the number of valid (non-padding) slots, at most ``length``.

    Caveats: "strictly before" is on the stored timestamps, so with day-granularity logs
    (EComm) a same-day event is not history for a same-day query. Events with equal timestamps
    keep their input order (a later row counts as more recent). Repeated items are kept: the
    history is the last ``length`` events, not the last ``length`` distinct items.
    """
    _check_history_args(events, queries, length)
    # Per-event attribute values (aligned with `events`), resolved once before the sort.
    attr_values = _attribute_values(events, item_attrs)
    valid, source, count = _history_slots(events, queries, length)

    out: dict[str, np.ndarray] = {}
    item_ids = as_str(events["item_id"])
    for col, values in (("item_id", item_ids), *attr_values.items()):
        picked = values[source] if len(values) else np.full(source.shape, PAD, dtype=object)
        out[history_input_name(col)] = np.where(valid, picked, PAD).astype(object)
    out[HISTORY_COUNT] = count.astype(np.int64)
    return out


def _check_history_args(events: pd.DataFrame, queries: pd.DataFrame, length) -> None:
    """Raises ``ValueError`` unless ``length`` is a positive int and both frames have the
    columns ``last_items_before`` reads."""
    if not isinstance(length, (int, np.integer)) or isinstance(length, bool) or length < 1:
        raise ValueError(f"length must be a positive int, got {length!r}")
    for frame, label, cols in (
        (events, "events", ("user_id", "item_id", "timestamp")),
        (queries, "queries", ("user_id", "timestamp")),
    ):
        missing = [c for c in cols if c not in frame.columns]
        if missing:
            raise ValueError(f"{label} lack column(s) {missing}; have {list(frame.columns)}")


def _attribute_values(
    events: pd.DataFrame, item_attrs: pd.DataFrame | Sequence[str] | None
) -> dict[str, np.ndarray]:
    """Each attribute's value per event row (aligned with ``events``, str, "" where unknown),
    keyed by attribute column; ``item_attrs`` as in ``last_items_before``."""
    attr_values: dict[str, np.ndarray] = {}
    if isinstance(item_attrs, pd.DataFrame):
        # Indexed by item id already (unique: the caller's catalogue), or with an item_id column.
        table = (item_attrs if item_attrs.index.name == "item_id"
                 else item_attrs.drop_duplicates("item_id").set_index("item_id"))
        position = table.index.get_indexer(events["item_id"])  # -1: item not in table
        for col in table.columns:
            values = np.append(as_str(table[col]), PAD)  # index -1 picks the trailing PAD
            attr_values[col] = values[position]
    elif item_attrs is not None:
        for col in item_attrs:
            if col not in events.columns:
                raise ValueError(f"item_attrs column {col!r} is not in events")
            attr_values[col] = as_str(events[col])
    return attr_values


def _history_slots(
    events: pd.DataFrame, queries: pd.DataFrame, length: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where each query's history slots come from.

    Returns ``(valid, source, count)``: ``valid`` (n_queries, length) bool, true for a real
    (non-padding) slot; ``source`` (n_queries, length) int, the row of ``events`` each slot
    takes, most recent first (meaningless where not valid); ``count`` (n_queries,) the valid
    slots per query.
    """
    # Users as integer codes shared by events and queries; timestamps as dense ranks over both,
    # so that (user, time) packs into one sortable int64 key: user * n_times + time_rank.
    event_user, users = pd.factorize(as_str(events["user_id"]))  # hashing, not sorting strings
    query_user = pd.Index(users).get_indexer(as_str(queries["user_id"]))  # -1: unknown user
    event_ns, query_ns = to_utc_ns(events["timestamp"]), to_utc_ns(queries["timestamp"])
    times, time_rank = np.unique(np.concatenate([event_ns, query_ns]), return_inverse=True)
    n_times = np.int64(len(times))
    event_key = event_user.astype(np.int64) * n_times + time_rank[: len(event_ns)]
    query_key = query_user.astype(np.int64) * n_times + time_rank[len(event_ns) :]

    order = np.argsort(event_key, kind="stable")  # by user, then time, then input order
    sorted_key = event_key[order]
    # end: first event of the user at or after the query time; start: the user's first event.
    end = np.searchsorted(sorted_key, query_key, side="left")
    start = np.searchsorted(sorted_key, query_user.astype(np.int64) * n_times, side="left")
    count = np.where(query_user >= 0, np.minimum(end - start, length), 0)

    slot = np.arange(length)
    valid = slot[None, :] < count[:, None]  # (n_queries, length)
    gather = np.where(valid, end[:, None] - 1 - slot[None, :], 0)  # most recent first
    source = order[gather] if len(order) else gather
    return valid, source, count
