"""Retrieval settings, importable without TensorFlow (the config layer validates them early)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from shopping_mtl.errors import ConfigError

INDEXES = ("auto", "brute_force", "ivf")


@dataclass(frozen=True)
class RetrievalConfig:
    """Settings of the two-tower model, its training and the offline index.

    `validate` checks every range given here. Defaults are chosen on the validation day (new_gt
    recall@100): see docs/DECISIONS.md, Retrieval; Taobao's spec overrides some in its
    `defaults:`.

    Args:
        embedding_dim: size of the query and candidate vectors (> 0, checked).
        tower_layers: hidden layer widths (units, each > 0, checked) of each tower's MLP; empty
            (the default): a linear projection.
        temperature: softmax temperature over cosine similarities (> 0, checked); the setting
            that matters most.
        logq_correction: subtract log q(item) from the logits, because in-batch negatives
            oversample popular items.
        remove_accidental_hits: drop in-batch negatives that are the positive item itself.
        hard_negatives: keep only the N hardest in-batch negatives per query (> 0, checked);
            None: all.
        id_dropout: share of training pairs whose item id is hidden, in [0, 1) (checked), so the
            candidate tower learns to embed an item from its content alone (as for items unseen
            in training).
        event_weights: event type -> sample weight of its training pairs (keys click, save,
            purchase, weights >= 0 and not all three 0, checked; a type left out weighs 1.0).
            Weights are normalised to mean 1 over the pairs, so only their ratios matter.
        batch_size: training pairs per step (> 0, checked); also the in-batch negatives per
            query (divided among workers when there are several).
        epochs: most epochs (> 0, checked).
        learning_rate: step size (> 0, checked) of Adam that updates only the embedding rows a
            batch touches (`shopping_mtl.optimizers.LazyAdam`).
        steps_per_execution: training steps run by one call into TensorFlow (Keras `compile`;
            > 0, checked): fewer calls save Keras's per-call work. The weights are those of one
            step per call (same ops, same order).
        patience: epochs without improvement of `early_stopping` before stopping (> 0,
            checked); the best epoch's weights are kept.
        top_k: two-tower items per user in candidates.parquet and in the exported index's
            answer, and the depth of the lists `early_stopping` scores (> 0, checked). The
            candidate set reads the two-tower lists as deep as its own quota.
        exclude_seen: leave the user's own items out of the retrieved list: retrieval is for
            discovery, and the user-history source keeps the repeats in the candidate set.
        first_touch_only: train only on a user's first engagement with each item (discovery
            pairs), not on repeats.
        early_stopping: what stops training: "val_loss" (the validation pairs' loss; for a TFRS
            model a last-batch figure), or a validation list metric scored on the validation
            day after each epoch, such as "new_gt/recall@100" (the default) or "recall@100"; a
            metric the scorer does not produce counts as 0.
        popularity_prior: at retrieval, add this times log(1 + the item's event count before
            the period) to the scores (unit: score per log-count, on the temperature-scaled
            scale), putting back some of the popularity the logQ correction took out. 0 (the
            default): off.
        index: how the offline lists (validation and test users) are retrieved, one of
            `INDEXES` (checked): "brute_force" (exact, as the exported index), "ivf" (faiss
            inverted file, approximate; its recall of the exact top k on `ivf_check_queries`
            queries is a metric of the run) or "auto" (ivf above `ivf_above_items` catalogue
            items). The export is brute force always.
        ivf_above_items: catalogue size (items) above which "auto" uses ivf (> 0, checked).
        ivf_lists: the inverted file's cells (> 0, checked); None: sqrt(items).
        ivf_probe: cells scanned per query (> 0, checked); more is slower and closer to exact.
        ivf_fp16: the cells hold 16-bit vectors (half the bytes to scan); the items found are
            rescored exactly (float32) and ordered by that score.
        ivf_check_queries: queries whose approximate lists are compared with the exact ones
            (>= 0, checked; 0: no check).
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
        for width in self.tower_layers:
            if width <= 0:
                raise ConfigError(f"retrieval.tower_layers must be positive widths, got {list(self.tower_layers)}")
        # `not x > 0`: also false for NaN, which a dataclass built in code may hold.
        if not self.temperature > 0:
            raise ConfigError(f"retrieval.temperature must be positive, got {self.temperature}")
        if not 0 <= self.id_dropout < 1:
            raise ConfigError(f"retrieval.id_dropout must be in [0, 1), got {self.id_dropout}")
        if not self.learning_rate > 0:
            raise ConfigError(f"retrieval.learning_rate must be positive, got {self.learning_rate}")
        if self.hard_negatives is not None and self.hard_negatives <= 0:
            raise ConfigError(f"retrieval.hard_negatives must be positive or null, got {self.hard_negatives}")
        for event, weight in self.event_weights.items():
            if event not in ("click", "save", "purchase"):
                raise ConfigError(
                    f"retrieval.event_weights has unknown key '{event}'; known: click, save, purchase")
            if not weight >= 0:
                raise ConfigError(f"retrieval.event_weights.{event} must be >= 0, got {weight}")
        if not any(self.event_weights.get(event, 1.0) > 0 for event in ("click", "save", "purchase")):
            raise ConfigError(f"retrieval.event_weights must give some event type a weight > 0 (all pairs "
                              f"would weigh 0), got {dict(self.event_weights)}")
