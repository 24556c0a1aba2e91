"""Candidate sources, their merge with quotas, and the candidate set of any day.

- `registry`: `Source`, `SourceDay`, the serving context, `register`; `builtin` registers the
  built-in sources (two_tower, user_history, covisit, popularity, one module each).
- `candidate_set`: `build_candidate_set` (any day) and `baseline_list` (a source's list as a
  baseline); `merge`: the merge with quotas; `lists`: the list frame's helpers.
- `config`: the sources' and the set's settings; `stage`: the candidates stage.

This file imports nothing, so the settings load without TensorFlow.
"""
