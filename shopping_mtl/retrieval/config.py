"""Retrieval settings, importable without TensorFlow (the config layer validates them early)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from shopping_mtl.errors import ConfigError

SOURCES = ("two_tower", "user_history", "covisit", "popularity")
INDEXES = ("auto", "brute_force", "ivf")


@dataclass(frozen=True)
class RetrievalConfig:
    """Settings of the two-tower model and its training.

    Args:
        embedding_dim: size of the query and candidate vectors.
        tower_layers: hidden layer widths of each tower's MLP (none: a linear projection,
            which found new items best on the EComm validation day).
        temperature: softmax temperature over cosine similarities.
        logq_correction: subtract log q(item) from logits (in-batch negatives oversample popular items).
        remove_accidental_hits: drop in-batch negatives that are the positive item itself.
        hard_negatives: keep only the N hardest in-batch negatives (None: all).
        id_dropout: share of training pairs whose item id is hidden, so the candidate tower
            learns to embed an item from its content alone (as for items unseen in training).
        event_weights: sample weight per event type (purchase above save above click).
        batch_size, epochs, learning_rate: training; Adam that updates only the embedding rows a
            batch touches (shopping_mtl.optimizers.LazyAdam).
        steps_per_execution: training steps run by one call into TensorFlow (Keras `compile`):
            a step of 1,024 pairs takes ~20 ms, and Keras's own work between calls about as
            much again. The weights are those of one step per call (same ops, same order).
        patience: epochs without validation-loss improvement before stopping (best weights kept).
        top_k: candidates per user.
        exclude_seen: leave the user's own items out of the retrieved list: retrieval is for
            discovery, and the user-history source keeps the repeats in the candidate set.
        first_touch_only: train only on a user's first engagement with each item (discovery
            pairs), not on repeats.
        early_stopping: what stops training: "val_loss", or a validation list metric such as
            "new_gt/recall@100" or "recall@100" (scored on the validation day after each epoch).
        popularity_prior: at retrieval, add this times log(1 + item count before the period) to
            the scores, putting back some of the popularity the logQ correction took out.
        index: how the offline lists (validation and test users) are retrieved: "brute_force"
            (exact, the exported index), "ivf" (faiss inverted file, approximate; its recall of
            the exact top k on `ivf_check_queries` queries is a metric of the run) or "auto"
            (ivf above `ivf_above_items` catalogue items). The export is brute force always.
        ivf_lists, ivf_probe: the inverted file's cells (null: sqrt(items)) and cells scanned
            per query.
        ivf_fp16: the cells hold 16-bit vectors (half the bytes to scan); the items found are
            scored exactly (float32) and ordered by that score.
    """

    embedding_dim: int = 64
    tower_layers: tuple[int, ...] = ()
    temperature: float = 0.2
    logq_correction: bool = True
    remove_accidental_hits: bool = True
    hard_negatives: int | None = None
    id_dropout: float = 0.3
    event_weights: Mapping[str, float] = field(
        default_factory=lambda: {"click": 1.0, "save": 2.0, "purchase": 4.0})
    batch_size: int = 1024
    epochs: int = 20
    learning_rate: float = 0.003
    steps_per_execution: int = 8
    patience: int = 2
    top_k: int = 100
    exclude_seen: bool = True
    first_touch_only: bool = False
    early_stopping: str = "new_gt/recall@100"
    popularity_prior: float = 0.0
    index: str = "auto"
    ivf_above_items: int = 1_000_000
    ivf_lists: int | None = None
    ivf_probe: int = 64
    ivf_fp16: bool = True
    ivf_check_queries: int = 256

    def uses_ivf(self, n_items: int) -> bool:
        return self.index == "ivf" or (self.index == "auto" and n_items > self.ivf_above_items)

    def validate(self) -> None:
        if self.index not in INDEXES:
            raise ConfigError(f"retrieval.index is '{self.index}'; known: {', '.join(INDEXES)}")
        if self.ivf_lists is not None and self.ivf_lists <= 0:
            raise ConfigError(f"retrieval.ivf_lists must be positive or null, got {self.ivf_lists}")
        if self.ivf_check_queries < 0:
            raise ConfigError(f"retrieval.ivf_check_queries must be >= 0, got {self.ivf_check_queries}")
        positive = {"embedding_dim": self.embedding_dim, "batch_size": self.batch_size,
                    "epochs": self.epochs, "top_k": self.top_k, "patience": self.patience,
                    "ivf_above_items": self.ivf_above_items, "ivf_probe": self.ivf_probe,
                    "steps_per_execution": self.steps_per_execution}
        for key, value in positive.items():
            if value <= 0:
                raise ConfigError(f"retrieval.{key} must be positive, got {value}")
        if self.temperature <= 0:
            raise ConfigError(f"retrieval.temperature must be positive, got {self.temperature}")
        if not 0 <= self.id_dropout < 1:
            raise ConfigError(f"retrieval.id_dropout must be in [0, 1), got {self.id_dropout}")
        if self.learning_rate <= 0:
            raise ConfigError(f"retrieval.learning_rate must be positive, got {self.learning_rate}")
        if self.hard_negatives is not None and self.hard_negatives <= 0:
            raise ConfigError(f"retrieval.hard_negatives must be positive or null, got {self.hard_negatives}")
        for event in self.event_weights:
            if event not in ("click", "save", "purchase"):
                raise ConfigError(
                    f"retrieval.event_weights has unknown key '{event}'; known: click, save, purchase")


@dataclass(frozen=True)
class CandidateConfig:
    """The merged candidate set: per-source quotas, in priority order (see retrieval.sources).

    Args:
        quotas: source -> the most items it adds per user; a source with quota 0 is left out.
    """

    quotas: Mapping[str, int] = field(default_factory=lambda: {
        "two_tower": 100, "user_history": 200, "covisit": 200, "popularity": 20})

    def validate(self) -> None:
        for name, quota in self.quotas.items():
            if name not in SOURCES:
                raise ConfigError(
                    f"candidates.quotas has unknown key '{name}'; known: {', '.join(SOURCES)}")
            if quota < 0:
                raise ConfigError(f"candidates.quotas.{name} must be >= 0, got {quota}")

    @property
    def size(self) -> int:
        return sum(self.quotas.values())
