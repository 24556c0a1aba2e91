"""AutoML-style search over the ranker's or the two-tower model's settings with Keras Tuner.

A study (`tuning/<name>.yaml`) names the model it tunes, the objective (a validation figure,
never a test one), the oracle (random, Bayesian or Hyperband, from Keras Tuner), the budget, the
search space and the fixed values:

    name: ranker
    model: ranking                       # ranking | retrieval
    objective: {metric: ranker/holdout_ndcg@10, direction: max}
    oracle: {type: hyperband, max_epochs: 9, factor: 3, seed: 0}
    budget: {max_trials: 20}             # at most this many trials, every oracle
    space:
      ranking.architecture: {values: [shared_bottom, mmoe, ple, esmm], role: scientific}
      ranking.learning_rate: {min: 0.0003, max: 0.01, sampling: log, role: nuisance}
    fixed:
      ranking.compare_single_task: false

Every space entry is a config key (`--set` syntax) or one of the shorthands of `DERIVED`
(`ranking.bottom_depth` and `ranking.bottom_width` make `ranking.bottom_layers`). `build`
maps a trial's hyperparameters to config overrides and nothing else (the models never see `hp`).

`ShoppingTuner` subclasses Keras Tuner's `BaseTuner`, not its `Tuner`: `Tuner` builds a model
from a hypermodel and accepts only Keras 3 models, while the models here are tf-keras ones
trained by the project's own stages. Each trial trains on data prepared once for the whole
search; with Hyperband a promoted trial continues from its earlier round's ranker weights. A
trial that raises is marked failed with its error, and a search with no completed trial ends
with an error naming the failures, never with a best score of None. The oracle's state lives in
`<run folder>/tuning/`, so a search run again with the same run folder goes on where it
stopped: finished trials are kept.
"""

from shopping_mtl.tuning.search import SearchResult, run_search, run_worker, summarize, table
from shopping_mtl.tuning.study import Param, Study, build, load_study, make_oracle
from shopping_mtl.tuning.tuner import ShoppingTuner

__all__ = ["Param", "SearchResult", "ShoppingTuner", "Study", "build", "load_study", "make_oracle", "run_search",
           "run_worker", "summarize", "table"]
