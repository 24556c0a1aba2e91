"""The export stage and what it writes for TensorFlow Serving.

- `publishing`: versioned atomic publish, warmup requests and their expected answers,
  `models.config`, pruning old versions.
- `graphs`: the `ranker` and `recommend` serving graphs (raw features in, calibrated scores
  and ranked items out); `recommend` takes each candidate source's serving part from the
  candidate registry.
- `stage`: the stage itself: the retrieval, ranker and recommend exports of a run.
- `check` and `replay_warmup`: `python -m shopping_mtl check-export`, a fresh process that
  loads each export and replays its warmup requests.
"""
