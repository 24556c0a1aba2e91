"""Memory and speed machinery behind plain functions: the stage and model code reads as model
logic and calls these.

- `groups`: ids as integer codes, runs of equal codes in sorted rows (ranks within lists).
- `shards`: training examples written as Parquet shards and streamed; list frames spilled to
  disk between stages.
- `batches`: tf.data inputs from example tables in memory or on disk (whole lists for the
  within-list loss), and batch-wise inference.
- `covisit_table`: the co-visitation table on integer codes, built a range of items at a time.
- `merge_codes`: the candidate merge's priority order and de-duplication on integer codes.
- `top_lists`: each user's top k rows by a score, on integer codes a slice of users at a time.
"""
