"""SYNTHETIC shopping event logs of any size, calibrated to the statistics of a real sample.

Scale tests need logs far larger than the real samples. This package measures a
`SyntheticProfile` from a real log (`fit_profile`) and draws logs of any size from it
(`generate`), writing Parquet shards user block by user block, so memory depends on the block
size and the number of categories, never on the number of events or items. Every output says
it is synthetic: the README, `synthetic: true` in the dataset spec and `synthetic=true` in the
schema metadata of every Parquet file.

The model, per user (users are independent, so blocks of users are drawn in one go):

* the number of events is lognormal (rounded, at least 1, capped at the largest real user);
* each event either repeats an item of the user's own history (probability `repeat_prob`,
  the earlier event chosen uniformly, so items the user touched often come back more), or
  touches a new item: its category is, with probability `category_stickiness`, the category
  of an earlier event of the user (category affinity), else a draw from the category
  popularity; the item is then a Zipf draw within that category;
* the behaviour (click/save/purchase) is drawn from the real shares of first touches or of
  repeats, according to whether the user had touched that item before;
* timestamps fall on a few active days of the span, at hours drawn from the real hour-of-day
  curve, in time order along the history.

Item popularity is Zipf over the catalogue; category popularity is Zipf over categories. The
catalogue grows with the number of events as Heaps' law measured on the real sample (distinct
items against events while users are added in random order; caveat: inside a small sample
this growth is nearly linear, and extrapolating it far overstates a real catalogue's growth,
see the notes of `profile.yaml`); categories grow as a power of items. The generator's own
parameters (`GeneratorParams`) are calibrated by simulation so that a synthetic log of the
real sample's size reproduces its observed repeat share, category affinity, popularity slopes
and number of distinct items.

Modules: `profile` (the profile dataclasses and YAML), `stats` (statistics of a log),
`fitting` (`fit_profile`), `calibration` (`calibrate`), `world` (the event simulation),
`writers` (Parquet shards, items, spec and README), `generator` (`generate`), `readers` (the
raw samples, for fitting) and `__main__` (the command line).

Examples, from the repository root (DATA is the folder that holds the raw samples):
  python -m tools.synthetic generate --events 1000000 --out synth-1m
  python -m tools.synthetic fit \
      --ecomm-dir DATA/alibaba_ecomm_cikm2019_sample \
      --hours-from DATA/taobao_userbehavior_sample/UserBehavior_head_users1-100370.csv.gz \
      --out tools/synthetic/profile.yaml
"""

from tools.synthetic.calibration import CALIBRATION_EVENTS, calibrate
from tools.synthetic.fitting import fit_profile
from tools.synthetic.generator import generate
from tools.synthetic.profile import (
    BEHAVIORS,
    DEFAULT_PROFILE_PATH,
    UNKNOWN_BRAND,
    ActivityProfile,
    BehaviorProfile,
    BehaviorShares,
    CatalogProfile,
    EngagementProfile,
    GeneratorParams,
    PopularityProfile,
    ScaleProfile,
    SyntheticProfile,
    default_profile,
    load_profile,
    save_profile,
)
from tools.synthetic.readers import (
    ECOMM_BEHAVIORS,
    TAOBAO_BEHAVIORS,
    read_ecomm_sample,
    read_taobao_sample,
)
from tools.synthetic.stats import rank_frequency_exponent
from tools.synthetic.world import USERS_PER_BLOCK, catalog_size
from tools.synthetic.writers import (
    EVENTS_SCHEMA,
    GENERATOR_VERSION,
    ITEMS_PER_SLICE,
    ITEMS_SCHEMA,
    SCHEMA_METADATA_KEY,
)

__all__ = [
    "ActivityProfile",
    "BEHAVIORS",
    "BehaviorProfile",
    "BehaviorShares",
    "CALIBRATION_EVENTS",
    "CatalogProfile",
    "DEFAULT_PROFILE_PATH",
    "ECOMM_BEHAVIORS",
    "EVENTS_SCHEMA",
    "EngagementProfile",
    "GENERATOR_VERSION",
    "GeneratorParams",
    "ITEMS_PER_SLICE",
    "ITEMS_SCHEMA",
    "PopularityProfile",
    "SCHEMA_METADATA_KEY",
    "ScaleProfile",
    "SyntheticProfile",
    "TAOBAO_BEHAVIORS",
    "UNKNOWN_BRAND",
    "USERS_PER_BLOCK",
    "calibrate",
    "catalog_size",
    "default_profile",
    "fit_profile",
    "generate",
    "load_profile",
    "rank_frequency_exponent",
    "read_ecomm_sample",
    "read_taobao_sample",
    "save_profile",
]
