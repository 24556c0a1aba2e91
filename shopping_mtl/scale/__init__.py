"""Memory and speed machinery behind plain functions: the stage and model code reads as model
logic and calls these.

- `groups`: ids as integer codes, runs of equal codes in sorted rows (ranks within lists).
- `shards`: training examples written as Parquet shards and streamed; list frames spilled to
  disk between stages.
- `covisit_table`: the co-visitation table on integer codes, built a range of items at a time.
- `merge_codes`: the candidate merge's priority order and de-duplication on integer codes.
"""
