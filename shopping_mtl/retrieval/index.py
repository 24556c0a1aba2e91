"""The candidate index: brute-force top-K over the whole catalogue, and its serving export.

The index (TFRS `BruteForce`: one matmul and `top_k`, stock TensorFlow ops only, so TF Serving
loads it) holds every catalogue item's candidate vector. Items unknown to the training
vocabulary are embedded from their content (their id hidden, as id dropout trained for).

Offline lists over a large catalogue (the validation and test users against millions of items)
may come from an approximate index instead (faiss IVF, `ivf_top_k`): brute force costs users x
items, which grows with the square of the log, and at 2.5M items a query's exact top 300 takes
5-8 ms on two cores. The export stays brute force.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
import tensorflow as tf
import tensorflow_recommenders as tfrs

from shopping_mtl.export.publishing import save_atomic
from shopping_mtl.features import FeatureSet
from shopping_mtl.scale.batches import as_tensor, compiled, infer
from shopping_mtl.serving_ops import pad_columns

log = logging.getLogger(__name__)


def embed_items(candidate_model: tf.keras.Model, arrays: Mapping[str, np.ndarray],
                batch_size: int = 8192) -> np.ndarray:
    """Candidate vectors of item-tower inputs, in batches: (n_items, dim)."""
    return _embed(candidate_model, arrays, batch_size)


def _embed(tower: tf.keras.Model, arrays: Mapping[str, np.ndarray], batch_size: int) -> np.ndarray:
    """A tower's vectors of the rows of `arrays` (the tower's inputs taken, others ignored), in
    batches through one traced call: (rows, dim)."""
    out = [vectors.numpy() for vectors in infer(tower, arrays, batch_size)]
    return np.concatenate(out) if out else np.zeros((0, tower.output_shape[-1]), np.float32)


class AppendConstant(tf.keras.layers.Layer):
    """(batch, dim) -> (batch, dim + 1) with `value` in the last column: the query's weight on the
    candidates' popularity column."""

    def __init__(self, value: float, scale: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.value, self.scale = float(value), float(scale)

    def call(self, vectors):
        column = tf.fill([tf.shape(vectors)[0], 1], tf.constant(self.value, vectors.dtype))
        return tf.concat([vectors * self.scale, column], axis=-1)

    def get_config(self):
        return {**super().get_config(), "value": self.value, "scale": self.scale}


def with_popularity_prior(query_model: tf.keras.Model, item_vectors: np.ndarray, item_counts: np.ndarray,
                          weight: float, temperature: float) -> tuple[tf.keras.Model, np.ndarray]:
    """Add `weight * log(1 + count)` to every score, inside the index's one matmul.

    The towers are trained with the logQ correction, which takes popularity out of the scores;
    at retrieval time some of it belongs back in. Scores become
    `query . item / temperature + weight * log(1 + count)`, with an extra query column (`weight`)
    and an extra item column (`log(1 + count)`), so the export stays one matmul plus top_k.
    """
    inputs = {name: tf.keras.Input(shape=t.shape[1:], dtype=t.dtype, name=name)
              for name, t in zip(query_model.input_names, query_model.inputs)}
    augmented = AppendConstant(weight, 1.0 / temperature, name="popularity_prior")(query_model(inputs))
    model = tf.keras.Model(inputs, augmented, name="query_tower_with_prior")
    column = np.log1p(np.asarray(item_counts, dtype=np.float32))[:, None]
    return model, np.concatenate([item_vectors.astype(np.float32), column], axis=1)


def build_index(query_model: tf.keras.Model, item_ids, item_vectors: np.ndarray, k: int,
                rows: int = 1 << 18) -> tfrs.layers.factorized_top_k.BruteForce:
    """A BruteForce index over the catalogue: query features -> (scores, item ids), top k.

    The layer's own `index()` takes whole tensors: a constant copy of every vector besides its
    variable (1.3 GB at 2.5M items, and TensorFlow's CPU pool keeps what it held at most). Its
    variables are made the same way here (same names, shapes and dtypes), then filled `rows`
    items at a time. `item_ids` may be a Series of Arrow strings, `item_vectors` a memory map.
    """
    item_ids = np.asarray(item_ids, dtype=object)
    n, dim = len(item_ids), int(item_vectors.shape[1])
    if len(item_vectors) != n:
        raise ValueError(f"{len(item_vectors)} candidate vectors for {n} item ids")
    index = tfrs.layers.factorized_top_k.BruteForce(query_model, k=min(k, n))
    index._identifiers = index.add_weight(name="identifiers", dtype=tf.string, shape=(n,),
                                          initializer=tf.keras.initializers.Constant(""), trainable=False)
    index._candidates = index.add_weight(name="candidates", dtype=tf.float32, shape=(n, dim),
                                         initializer=tf.keras.initializers.Zeros(), trainable=False)
    # The raw op writes into the variable's buffer: `variable[a:b].assign` reads the variable
    # first, and while that read lives the next assign copies the whole buffer.
    for start in range(0, n, rows):
        end = min(start + rows, n)
        tf.raw_ops.ResourceStridedSliceAssign(ref=index._identifiers.handle, begin=[start], end=[end], strides=[1],
                                              value=tf.constant(item_ids[start:end].astype(str)))
        tf.raw_ops.ResourceStridedSliceAssign(ref=index._candidates.handle, begin=[start, 0], end=[end, dim],
                                              strides=[1, 1],
                                              value=tf.constant(np.asarray(item_vectors[start:end], np.float32)))
    index._reset_tf_function_cache()
    return index


@dataclass
class IndexParts:
    """What the exported BruteForce index is built from, kept instead of the index between its
    builds (each export builds its own): its vectors stay out of TensorFlow's CPU pool, which
    never shrinks, and may wait on disk (`spill`) while the candidate sources and the ranker need
    the memory (2.5M x 64 floats, 0.65 GB at 10^7 events)."""

    query_model: tf.keras.Model  # the query tower, with the popularity prior where configured
    item_ids: object  # (n_items,) ids: an array or a Series
    vectors: np.ndarray | Path  # (n_items, dim) float32, or an .npy file of them
    k: int

    def build(self) -> tfrs.layers.factorized_top_k.BruteForce:
        vectors = np.load(self.vectors, mmap_mode="r") if isinstance(self.vectors, Path) else self.vectors
        return build_index(self.query_model, self.item_ids, vectors, self.k)

    def spill(self, path: Path) -> None:
        """Move the vectors to `path` (.npy, written whole before it is named) and free them."""
        if isinstance(self.vectors, Path):
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        with open(partial, "wb") as handle:
            np.save(handle, np.asarray(self.vectors, np.float32))
        partial.replace(path)
        self.vectors = path


def _tensors(arrays: Mapping[str, np.ndarray], names) -> dict[str, tf.Tensor]:
    return {k: as_tensor(arrays[k]) for k in names}


# Scores one query batch may hold: 2**26 float32 scores are 256 MB.
MAX_BATCH_SCORES = 2**26


def query_batch_size(n_items: int, max_scores: int | None = None, most: int = 1024) -> int:
    """Queries per index call so that its (batch, n_items) score matrix holds at most
    `max_scores` scores (None: MAX_BATCH_SCORES): 1024 up to 65k items, 126 at 529k (1024 were
    2.2 GB there)."""
    max_scores = MAX_BATCH_SCORES if max_scores is None else max_scores
    return max(1, min(most, max_scores // max(int(n_items), 1)))


def retrieve(index, query_model: tf.keras.Model, users: np.ndarray, arrays: Mapping[str, np.ndarray],
             k: int, batch_size: int | None = None) -> pd.DataFrame:
    """Top-k candidates per query row: `user_id, rank, item_id, score` (k rows per user).

    Args:
        batch_size: queries per index call; None sizes batches by the catalogue
            (`query_batch_size`), since the index scores a batch against every item at once.
    """
    if batch_size is None:
        batch_size = query_batch_size(index._candidates.shape[0])
    frames = []
    n = len(users)
    top = compiled(lambda queries: index(queries, k=k))
    for start in range(0, n, batch_size):
        batch = {name: value[start:start + batch_size] for name, value in arrays.items()}
        scores, ids = top(_tensors(batch, query_model.input_names))  # (batch, k) each
        scores, ids = scores.numpy(), ids.numpy().astype(str)
        frames.append(lists_frame(users[start:start + len(scores)], ids, scores))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["user_id", "rank", "item_id", "score"])


def embed_queries(query_model: tf.keras.Model, arrays: Mapping[str, np.ndarray],
                  batch_size: int = 8192) -> np.ndarray:
    """Query vectors of query-tower inputs, in batches: (n_queries, dim)."""
    return _embed(query_model, arrays, batch_size)


@dataclass(frozen=True)
class IvfSettings:
    """An inverted-file index (faiss `IndexIVFFlat`, inner product): the catalogue clustered into
    `lists` cells by k-means on a sample; a query scans the `probe` nearest cells only.

    Args:
        lists: cells; None: sqrt(items), at least 1.
        probe: cells scanned per query.
        train_per_list: k-means sample size per cell (faiss asks for at least 39).
        seed: k-means initialisation and sample.
        fp16: the cells hold the vectors as 16-bit floats (`IndexIVFScalarQuantizer`): a scan
            reads half the bytes (it is bound by them: ~40% faster at 2.5M items); the items
            found are then scored exactly in float32 and ordered by that score.
    """

    lists: int | None = None
    probe: int = 64
    train_per_list: int = 64
    seed: int = 0
    fp16: bool = True


def ivf_top_k(query_vectors: np.ndarray, item_vectors: np.ndarray, k: int,
              settings: IvfSettings = IvfSettings(), batch_size: int = 4096,
              ) -> tuple[np.ndarray, np.ndarray]:
    """Approximate top k by inner product: (scores, item positions), each (queries, k), best
    first; a position is -1 where the probed cells held fewer than k items."""
    import faiss  # noqa: PLC0415  (only runs that ask for it pay for the import)

    items = np.ascontiguousarray(item_vectors, dtype=np.float32)
    n_items, dim = items.shape
    lists = settings.lists or max(1, int(round(np.sqrt(n_items))))
    lists = min(lists, n_items)
    quantizer = faiss.IndexFlatIP(dim)
    if settings.fp16:
        index = faiss.IndexIVFScalarQuantizer(quantizer, dim, lists, faiss.ScalarQuantizer.QT_fp16,
                                              faiss.METRIC_INNER_PRODUCT)
    else:
        index = faiss.IndexIVFFlat(quantizer, dim, lists, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = settings.seed
    index.cp.max_points_per_centroid = settings.train_per_list
    sample = min(n_items, lists * settings.train_per_list)
    rng = np.random.default_rng(settings.seed)
    index.train(items[np.sort(rng.choice(n_items, sample, replace=False))] if sample < n_items else items)
    index.add(items)
    index.nprobe = min(settings.probe, lists)
    k = min(k, n_items)
    queries = np.ascontiguousarray(query_vectors, dtype=np.float32)
    scores = np.empty((len(queries), k), np.float32)
    positions = np.empty((len(queries), k), np.int64)
    for start in range(0, len(queries), batch_size):
        batch = slice(start, start + batch_size)
        scores[batch], positions[batch] = index.search(queries[batch], k)
        if settings.fp16:
            scores[batch], positions[batch] = _rescored(queries[batch], items, positions[batch])
    return scores, positions


def _rescored(queries: np.ndarray, items: np.ndarray, positions: np.ndarray, rows: int = 512):
    """The float32 inner products of the items at `positions` (-1: none, scored -inf and kept
    last), best first (stable: equal scores keep the index's order), `rows` queries at a time."""
    scores = np.full(positions.shape, -np.inf, np.float32)
    for start in range(0, len(queries), rows):
        part = positions[start:start + rows]
        exact = np.einsum("qd,qkd->qk", queries[start:start + rows], items[np.maximum(part, 0)])
        scores[start:start + rows] = np.where(part >= 0, exact, -np.inf)
    order = np.argsort(-scores, axis=1, kind="stable")
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(positions, order, axis=1)


def exact_top_k(query_vectors: np.ndarray, item_vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top k by inner product: (scores, item positions), each (queries, k), best first.
    The exported `BruteForce` index's matmul and top_k (its lists, without the id gather), in
    query batches sized by the catalogue (`query_batch_size`)."""
    k = min(k, len(item_vectors))
    items = tf.constant(item_vectors, tf.float32)
    batch = query_batch_size(len(item_vectors))
    top = compiled(lambda q: tf.math.top_k(tf.matmul(q, items, transpose_b=True), k=k))
    found = [top(tf.constant(query_vectors[s:s + batch], tf.float32)) for s in range(0, len(query_vectors), batch)]
    if not found:
        return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
    return (np.concatenate([f.values.numpy() for f in found]),
            np.concatenate([f.indices.numpy() for f in found]).astype(np.int64))


def recall_of_exact(query_vectors: np.ndarray, item_vectors: np.ndarray, positions: np.ndarray) -> float:
    """Share of the exact top k that an approximate top k (`positions`, (queries, k), -1 =
    none) found, ties counted as found: an item whose exact score reaches the k-th best exact
    score is as good as any other there (items with the same content share a vector)."""
    if not len(query_vectors):
        return 1.0
    kth = exact_kth_scores(query_vectors, item_vectors, positions.shape[1])[:, None]
    scores = np.einsum("qd,qkd->qk", query_vectors, item_vectors[np.maximum(positions, 0)])
    found = (positions >= 0) & (scores >= kth - 1e-5 * np.maximum(1.0, np.abs(kth)))
    return float(found.sum() / positions.size)


def exact_kth_scores(query_vectors: np.ndarray, item_vectors: np.ndarray, k: int) -> np.ndarray:
    """The k-th best exact inner product of each query over all items: (queries,).

    In numpy, a few queries' scores at a time, not in TensorFlow: TensorFlow's CPU allocator
    keeps the largest amount it ever held, and this check is the only place that scores
    against every item of a catalogue that an approximate index serves (at 2.5M items, a copy
    of the vectors and the score batches stayed resident, 1.5 GB, for the rest of the run)."""
    k = min(k, len(item_vectors))
    items = np.ascontiguousarray(item_vectors, dtype=np.float32)
    queries = np.asarray(query_vectors, dtype=np.float32)
    batch = query_batch_size(len(items))
    out = np.empty(len(queries), np.float32)
    for start in range(0, len(queries), batch):
        scores = queries[start:start + batch] @ items.T
        out[start:start + batch] = np.partition(scores, len(items) - k, axis=1)[:, len(items) - k]
    return out


def lists_frame(users: np.ndarray, item_ids: np.ndarray, scores: np.ndarray) -> pd.DataFrame:
    """(queries, k) item ids and scores -> `user_id, rank, item_id, score`, k rows per user in
    score order ("" ids, where an approximate index found fewer than k items, left out)."""
    rows, k = item_ids.shape
    frame = pd.DataFrame({
        "user_id": np.repeat(np.asarray(users, dtype=object), k),
        "rank": np.tile(np.arange(1, k + 1), rows),
        "item_id": item_ids.reshape(-1).astype(object),
        "score": scores.reshape(-1).astype(float),
    })
    return frame[frame["item_id"] != ""].reset_index(drop=True) if (item_ids == "").any() else frame


class RetrievalServing(tf.Module):
    """What TF Serving loads: raw query features in, `item_ids` and `scores` (top k) out.

    History inputs (`history_*`, most recent first) may hold any number of events: padded with
    "" to the model's `history_length` inside the graph, or cut to the most recent ones. With
    `exclude_seen`, items in the request's `history_item_ids` are left out (the index returns
    k + history length, the seen ones are masked, the best k kept), as offline.
    """

    def __init__(self, index, features: FeatureSet, input_names, k: int, exclude_seen: bool = False):
        super().__init__()
        self.index = index
        n_items = int(index._candidates.shape[0])
        self.k = min(k, n_items)
        self.exclude_seen = exclude_seen and "history_item_ids" in input_names
        history = features.spec.history_length if self.exclude_seen else 0
        self.depth = min(self.k + history, n_items)
        self.history_length = features.spec.history_length
        signature = features.input_signature("user", "history", "context")
        self.history_names = [name for name in features.input_signature("history") if name in input_names]
        self.signature = {name: (tf.TensorSpec([None, None], signature[name].dtype, name)
                                 if name in self.history_names else signature[name]) for name in input_names}
        self.serve = tf.function(self._serve, input_signature=[self.signature])

    def _serve(self, features):
        features = {name: (pad_columns(value, self.history_length, "") if name in self.history_names else value)
                    for name, value in features.items()}
        scores, ids = self.index(features, k=self.depth)  # (batch, depth) each
        if self.exclude_seen:
            history = features["history_item_ids"]  # (batch, history_length)
            seen = tf.reduce_any(tf.equal(ids[:, :, None], history[:, None, :]), axis=-1)
            scores = tf.where(seen, tf.constant(-np.inf, scores.dtype), scores)
            scores, position = tf.math.top_k(scores, k=self.k)
            ids = tf.gather(ids, position, batch_dims=1)
        return {"item_ids": tf.identity(ids, name="item_ids"), "scores": tf.identity(scores, name="scores")}


def export_retrieval(index, query_model: tf.keras.Model, features: FeatureSet, k: int,
                     target: Path, exclude_seen: bool = False) -> Path:
    """Export the retrieval model in TF Serving's layout: `target` is `<base>/retrieval/<version>`."""
    module = RetrievalServing(index, features, query_model.input_names, k, exclude_seen)
    concrete = module.serve.get_concrete_function()
    return save_atomic(module, {"serving_default": concrete}, target)
