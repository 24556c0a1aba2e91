"""Plain readers of the raw samples that `fit` measures (fitting only, not the project's readers).

Both return canonical events: `user_id`, `item_id`, `event` (click/save/purchase) and a UTC
`timestamp`.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

ECOMM_BEHAVIORS = {"1": "click", "2": "save", "3": "save", "4": "purchase"}
TAOBAO_BEHAVIORS = {"pv": "click", "fav": "save", "cart": "save", "buy": "purchase"}


def read_ecomm_sample(folder: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Canonical events and items of the Alibaba CIKM 2019 EComm sample (training edges).

    Behaviour 1 -> click, 2 (collect) and 3 (cart) -> save, 4 -> purchase; the date is
    midnight UTC (the sample has days only). Items: `category` is `cate_id`, `brand` is
    `brand_id` (0 = unknown).

    Args:
        folder: the sample's folder, holding ecomm_edge_train.txt.gz and
            ecomm_item_feature.txt.gz.

    Returns:
        (events, items): canonical events, and items with `item_id`, `category`, `brand`,
        `price`.

    Raises:
        ValueError: a file is missing or has an unknown behaviour code.
    """
    folder = Path(folder)
    events_path = folder / "ecomm_edge_train.txt.gz"
    items_path = folder / "ecomm_item_feature.txt.gz"
    for path in (events_path, items_path):
        if not path.is_file():
            raise ValueError(f"EComm sample file not found: {path}")
    raw = pd.read_csv(
        events_path, sep="\t", header=None, names=["user_id", "item_id", "behavior", "date"],
        dtype=str,
    )
    bad = sorted(set(raw["behavior"]) - set(ECOMM_BEHAVIORS))
    if bad:
        raise ValueError(f"{events_path}: unknown behaviour code(s) {bad}; known: 1, 2, 3, 4")
    events = pd.DataFrame(
        {
            "user_id": raw["user_id"],
            "item_id": raw["item_id"],
            "event": raw["behavior"].map(ECOMM_BEHAVIORS),
            "timestamp": pd.to_datetime(raw["date"], format="%Y%m%d", utc=True),
        }
    )
    items = pd.read_csv(
        items_path, sep="\t", header=None,
        names=["item_id", "cate_1_id", "category", "brand", "price"], dtype=str,
    )
    items["price"] = pd.to_numeric(items["price"])
    return events, items[["item_id", "category", "brand", "price"]]


def read_taobao_sample(path: str | Path) -> pd.DataFrame:
    """Canonical events (with `category`) of a Taobao UserBehavior CSV piece.

    Rows without a timestamp (the head piece ends in a truncated line) are dropped.

    Args:
        path: a UserBehavior CSV (optionally gzipped) without header: user, item, category,
            behaviour (pv/fav/cart/buy), unix seconds.

    Returns:
        Canonical events with a `category` column; rows with an unknown behaviour are dropped.
    """
    raw = pd.read_csv(
        path, header=None, names=["user_id", "item_id", "category", "behavior", "timestamp"],
        dtype=str,
    ).dropna()
    return pd.DataFrame(
        {
            "user_id": raw["user_id"],
            "item_id": raw["item_id"],
            "event": raw["behavior"].map(TAOBAO_BEHAVIORS),
            "timestamp": pd.to_datetime(pd.to_numeric(raw["timestamp"]), unit="s", utc=True),
            "category": raw["category"],
        }
    ).dropna()
