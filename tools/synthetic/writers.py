"""The files of a generated log: Parquet shards of events, items.parquet, spec.yaml, README.md.

Every file says it is SYNTHETIC: `synthetic=true` in the schema metadata of each Parquet file,
`synthetic: true` in the dataset spec, and the README.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tools.synthetic.profile import BEHAVIORS, UNKNOWN_BRAND, SyntheticProfile
from tools.synthetic.world import _World

GENERATOR_VERSION = "1.0"
# Rows per slice when writing items.parquet; fixed, like world.USERS_PER_BLOCK, so item
# attributes do not depend on it.
ITEMS_PER_SLICE = 1 << 17

SCHEMA_METADATA_KEY = b"synthetic"
EVENTS_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("item_id", pa.string()),
        ("behavior", pa.string()),
        ("timestamp", pa.int64()),
        ("category", pa.string()),
    ]
)
ITEMS_SCHEMA = pa.schema(
    [
        ("item_id", pa.string()),
        ("category", pa.string()),
        ("brand", pa.string()),
        ("price", pa.float64()),
    ]
)


def _id_strings(prefix: str, numbers: np.ndarray) -> pa.Array:
    """String ids `prefix` + decimal number, e.g. "i42", as a pyarrow string array."""
    text = pc.cast(pa.array(numbers, pa.int64()), pa.string())
    return pc.binary_join_element_wise(prefix, text, "")


def _schema_metadata(seed: int, n_events: int) -> dict[bytes, bytes]:
    """Parquet schema metadata of every file: the synthetic flag and the generator's settings."""
    # "tools.synthetic" is the generator's recorded name (also in the README and the spec).
    return {
        SCHEMA_METADATA_KEY: b"true",
        b"shopping_mtl.synthetic": json.dumps(
            {
                "generator": "tools.synthetic",
                "version": GENERATOR_VERSION,
                "seed": seed,
                "n_events": n_events,
            },
            sort_keys=True,
        ).encode(),
    }



def _write_events(world: _World, out: Path, chunk_events: int, metadata, progress) -> int:
    """Write `world`'s events as `out/events-NNNNN.parquet` shards of `chunk_events` rows.

    Args:
        world: the log to draw.
        out: the output folder (exists).
        chunk_events: rows per shard (the last may have fewer).
        metadata: Parquet schema metadata (see `_schema_metadata`).
        progress: None, or called as progress(events_written, n_events) after each block.

    Returns:
        The number of users in the log.
    """
    schema = EVENTS_SCHEMA.with_metadata(metadata)
    behavior_names = pa.array(BEHAVIORS, pa.string())
    category_names = _id_strings("c", np.arange(world.n_categories))
    writer, shard, in_shard, written, n_users = None, 0, 0, 0, 0
    try:
        for block in world.blocks():
            table = pa.Table.from_arrays(
                [
                    _id_strings("u", block.user + block.first_user),
                    _id_strings("i", world.item_number(block.position)),
                    behavior_names.take(pa.array(block.behavior)),
                    pa.array(block.timestamp, pa.int64()),
                    category_names.take(pa.array(block.category)),
                ],
                schema=schema,
            )
            n_users = block.first_user + int(block.user[-1]) + 1
            offset = 0
            while offset < table.num_rows:
                if writer is None:
                    writer = pq.ParquetWriter(out / f"events-{shard:05d}.parquet", schema)
                take = min(chunk_events - in_shard, table.num_rows - offset)
                writer.write_table(table.slice(offset, take))
                offset += take
                in_shard += take
                if in_shard == chunk_events:
                    writer.close()
                    writer, shard, in_shard = None, shard + 1, 0
            written += table.num_rows
            if progress is not None:
                progress(written, world.n_events)
    finally:
        if writer is not None:
            writer.close()
    return n_users


def _write_items(world: _World, out: Path, metadata) -> None:
    """items.parquet in id order, slice by slice; attributes depend on the position's category."""
    cat = world.profile.catalog
    rng = np.random.default_rng([world.seed, 2])
    between = cat.price_log_sigma * math.sqrt(cat.price_category_share)
    within = cat.price_log_sigma * math.sqrt(1.0 - cat.price_category_share)
    cat_price = cat.price_log_mu + between * rng.standard_normal(world.n_categories)
    n_known = cat.brand_known_share * world.n_items
    n_brands = max(1, int(round(cat.brands_per_known_item * n_known)))
    category_names = _id_strings("c", np.arange(world.n_categories))
    schema = ITEMS_SCHEMA.with_metadata(metadata)
    with pq.ParquetWriter(out / "items.parquet", schema) as writer:
        for index, lo in enumerate(range(0, world.n_items, ITEMS_PER_SLICE)):
            rng = np.random.default_rng([world.seed, 3, index])
            number = np.arange(lo, min(lo + ITEMS_PER_SLICE, world.n_items), dtype=np.int64)
            category = np.searchsorted(world.cat_start, world.position_of(number), side="right") - 1
            price = np.exp(cat_price[category] + within * rng.standard_normal(len(number)))
            price = np.maximum(np.round(price, 2), 0.01)
            known = rng.random(len(number)) < cat.brand_known_share
            brand = pc.if_else(
                pa.array(known),
                _id_strings("b", rng.integers(0, n_brands, len(number))),
                pa.scalar(UNKNOWN_BRAND),
            )
            writer.write_table(
                pa.Table.from_arrays(
                    [
                        _id_strings("i", number),
                        category_names.take(pa.array(category)),
                        brand,
                        pa.array(price),
                    ],
                    schema=schema,
                )
            )


def _spec_yaml(n_events: int, seed: int, profile: SyntheticProfile) -> str:
    """Text of the dataset spec (`synthetic: true`) that reads the folder's files."""
    description = json.dumps(
        f"SYNTHETIC events from tools.synthetic (seed {seed}), {n_events:,} events "
        f"calibrated to {profile.source or 'a profile'}; not real user data"
    )
    return f"""\
name: synthetic-{n_events}
description: {description}
synthetic: true
root: .                 # relative to this spec file
events:
  paths: ["events-*.parquet"]
  format: parquet
  user_id: user_id
  item_id: item_id
  behavior: behavior
  timestamp: timestamp
  timestamp_format: unix
  timestamp_unit: s
  timezone: UTC
  behaviors: {{click: click, save: save, purchase: purchase}}
  item_columns: {{category: string}}
items:
  paths: [items.parquet]
  format: parquet
  key: item_id
  types: {{category: string, brand: string, price: float}}
features:
  history_length: 20
  user:
    user_id: {{type: id}}
  item:
    item_id: {{type: id}}
    category: {{type: categorical}}
    brand: {{type: categorical}}
    price: {{type: numeric, transform: log1p, buckets: 10}}
  context: [hour, weekday]
"""


def _readme(world: _World, command: str, n_users: int, n_shards: int, chunk_events: int) -> str:
    """Text of the folder's README: the SYNTHETIC warning, settings, `command` and the profile."""
    profile = world.profile
    return f"""\
# SYNTHETIC shopping events — not real user data

This folder was generated by `tools.synthetic`, generator version
{GENERATOR_VERSION}. Every user, item, price and timestamp here is **SYNTHETIC**: drawn at
random from a statistical profile of a real sample. It is for scale and pipeline tests; do
not report results on it as results on real data. `spec.yaml` says `synthetic: true` and
every Parquet file carries `synthetic=true` in its schema metadata.

| | |
| --- | --- |
| generator version | {GENERATOR_VERSION} |
| seed | {world.seed} |
| events | {world.n_events:,} in {n_shards} shard(s) of at most {chunk_events:,} rows |
| users | {n_users:,} |
| items in catalogue | {world.n_items:,} |
| categories | {world.n_categories:,} |
| days | {world.n_days} from {profile.activity.start_date} (UTC) |
| profile source | {profile.source or "(not given)"} |

Command:

```
{command}
```

Files: `events-*.parquet` (`user_id`, `item_id`, `behavior` click/save/purchase, `timestamp`
unix seconds UTC, `category`; users contiguous, each user's events in time order),
`items.parquet` (`item_id`, `category`, `brand`, `price`), `spec.yaml` (dataset spec).

What is modelled: lognormal events per user; repeats of the user's own items; category
affinity; Zipf item and category popularity; behaviour shares of first touches and of
repeats; active days and an hour-of-day curve; lognormal prices with a category effect.
What is not: sessions within a day, trends over days, weekday effects, price effects on
behaviour, cross-user co-occurrence beyond shared popularity and categories.

## Profile

```yaml
{profile.to_yaml().rstrip()}
```
"""
