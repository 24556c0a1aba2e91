"""Ranker settings, importable without TensorFlow (the config layer validates them early)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from shopping_mtl.errors import ConfigError

TASKS = ("click", "save", "purchase")
ARCHITECTURES = ("shared_bottom", "mmoe", "ple", "esmm")
LOSS_WEIGHTINGS = ("fixed", "uncertainty")
EARLY_STOPPING = ("holdout_ndcg@10", "val_mean_auc")
ORDER_LOSSES = ("softmax", "lambda")


# Settings that add model inputs to the prepared rows. Data prepared once for a search covers
# every one a trial may turn on; a model reads only the inputs its own settings name.
INPUT_SETTINGS = ("list_features", "source_features", "engagement_features", "target_attention",
                  "activity_features")


@dataclass(frozen=True)
class RankingConfig:
    """The multi-task ranker (click, save and purchase heads) and its training.

    `validate` checks every range given here. Defaults are chosen on validation data (held-out
    users): see docs/DECISIONS.md, Ranking.

    Args:
        architecture: one of `ARCHITECTURES` (checked): shared_bottom (default), mmoe (experts
            and a gate per task), ple (CGC: shared and task-specific experts), or esmm
            (p_save = p_click * p(save | click), the same for purchase, so the probabilities
            stay ordered).
        bottom_layers: widths (units, each > 0, checked) of the shared bottom MLP (shared_bottom,
            esmm).
        experts, expert_layers: number of experts (> 0, checked) and their widths (units, each
            > 0, checked), for mmoe and ple; ple uses this many shared experts and one
            task-specific expert per task.
        tower_layers: widths (units, each > 0, checked) of each task's tower.
        cross_layer: add a TFRS DCN cross layer before the bottom.
        dropout: dropout rate in the bottom, experts and towers, in [0, 1) (checked).
        history_length: how many of the user's last events the user-item features read (> 0,
            checked); changing it rebuilds the ranking rows.
        loss_weights: task -> weight of its cross-entropy (keys from `TASKS`, weights >= 0,
            checked; a task left out weighs 1.0). Used only with `loss_weighting="fixed"`.
        loss_weighting: "fixed" (`loss_weights`) or "uncertainty" (learned per-task weights,
            Kendall et al.; `loss_weights` is then ignored), checked.
        batch_size: rows per step (> 0, checked); list batches hold as many whole lists as fit
            this many rows on average.
        epochs: most epochs (> 0, checked).
        learning_rate: LazyAdam's step size (> 0, checked).
        patience: epochs without improvement of `early_stopping` before stopping (> 0,
            checked); the best epoch's weights are kept.
        steps_per_execution: training steps run by one call into TensorFlow (Keras `compile`;
            > 0, checked); the weights are those of one step per call. Under several workers
            (`TF_CONFIG`) 1 is used whatever this says.
        early_stopping: what stops training, one of `EARLY_STOPPING` (checked):
            "holdout_ndcg@10" (default; the held-out user-days' lists ordered by the model,
            scored after each epoch: what the final list is judged on) or "val_mean_auc" (the
            held-out rows' mean AUC over the heads). Single-task comparison models always use
            the mean AUC.
        holdout_share: share of the ranking-day users held out for early stopping, calibration
            and the value weights, in (0, 1) (checked). Held-out users never train.
        holdout_max_users: at most this many held-out users (the first in the hashed order; the
            rest of the share trains), >= 1 or None for no cap (checked). The held-out rows are
            held in memory and scored after every epoch; Platt scaling fits two numbers per
            head, so a few thousand users are enough.
        value_weights: task -> weight of its calibrated probability in the final score (keys
            from `TASKS`, weights >= 0 and at least one > 0, checked; a task left out weighs 0).
            None: chosen on the held-out users' NDCG@10 over `ranking.value.VALUE_GRID`, never
            on test.
        list_size: items per user in recommendations.parquet (> 0, checked).
        compare_single_task: also train one single-task model per head (same size) and report
            its test AUC beside the multi-task head's (costs three more fits).
        exclude_features: names of user or item features the ranker leaves out (e.g.
            `[user_id, item_id]` to rank from content and user-item features alone); names the
            spec does not have are ignored.
        add_missed_positives: add the ranking day's engaged items that no candidate source
            found to the training rows. Off by default: those are the only rows with no source
            signal, so the model learns "no signal -> positive", which hurts at test.
        extra_days: also learn from this many train days before the validation day (>= 0,
            checked; candidates and features from the events before each day; no two-tower
            source there). A "day" is a validation period (`Split.period`): a calendar day on a
            daily log, the validation part's length on a log split at quantiles.
        max_training_lists: at most this many training lists (user-days) over all ranking
            days, >= 1 or None for no cap (checked). Filled from the validation day backwards:
            a day with more fitting users than places left keeps a fixed pseudo-random sample
            (by hash), and days with no place left are not built (their candidate sources never
            computed). Held-out users are not counted, so calibration still sees their full
            lists. Bounds the ranker's rows and preparation on large logs; the bundled datasets
            stay under the cap.
        listwise_weight: weight (>= 0, checked) of the order loss (`order_loss`) over each
            user's candidates on the click logit, added to the pointwise losses (each head's
            mean cross-entropy per row, times its `loss_weights`); 0: pointwise only.
        order_loss: the within-list loss that `listwise_weight` weighs, one of `ORDER_LOSSES`
            (checked): "softmax" (cross-entropy of each engaged item against a softmax over
            its list) or "lambda" (LambdaRank: a pairwise logistic loss over each pair of a
            more and a less relevant candidate of a list, weighted by the change in the list's
            NDCG that swapping the two would make; relevance is the number of the row's
            positive labels, so a purchase outranks a click).
        list_features: also give the model each candidate's user-item features, popularity and
            two-tower score relative to the user's other candidates (gap to the list's best and
            mean; `cross.LIST_FEATURES`). Off by default: the held-out days do not support it.
        source_features: also give the model where each candidate came from: its source
            (one-hot over the registered sources, plus "none" for a missed positive), its rank
            in that source's list, its position in the merged candidate set and the source's
            score (`cross.PROVENANCE_FEATURES`), computed alike offline (from the candidate
            set's columns) and in the `recommend` graph (from the sources' serving parts); the
            `ranker` export then takes `source`, `source_rank` and `source_score` per candidate.
        engagement_features: also give the model `ui_engagement` at the half-lives of
            `cross.ENGAGEMENT_HALF_LIVES` (0.25, 2 and 7 days; the cross features' own is 1).
        target_attention: also give the model the user's last `cross.ATTENTION_LENGTH` events,
            each described against the candidate (`cross.sequence_features`: same item, same
            category, event type, age), pooled by a learned weight per event that depends on
            that description (DIN's activation unit, `model.TargetAttention`). Computed alike
            offline and in the serving graphs; the ranker's rows grow by ~0.5 KB each, so at
            10^7 events it costs ~10 GB more: leave it off there.
        activity_features: also give the model how recently the user saved and bought the
            candidate, the user's events in the last day and week (`cross.ACTIVITY_FEATURES`)
            and the item's events in the day before the prediction time
            (`item_recent_popularity`), alike offline and in the serving graphs. On by
            default: chosen on the selection day (docs/DECISIONS.md, Ranking).
    """

    architecture: str = "shared_bottom"
    bottom_layers: tuple[int, ...] = (256, 128)
    experts: int = 4
    expert_layers: tuple[int, ...] = (128,)
    tower_layers: tuple[int, ...] = (64,)
    cross_layer: bool = False
    dropout: float = 0.1
    history_length: int = 150
    loss_weights: Mapping[str, float] = field(
        default_factory=lambda: {"click": 1.0, "save": 1.0, "purchase": 1.0})
    loss_weighting: str = "fixed"
    batch_size: int = 1024
    epochs: int = 10
    learning_rate: float = 0.002
    steps_per_execution: int = 8
    patience: int = 2
    early_stopping: str = "holdout_ndcg@10"
    holdout_share: float = 0.2
    holdout_max_users: int | None = 5000
    value_weights: Mapping[str, float] | None = None
    list_size: int = 100
    compare_single_task: bool = True
    exclude_features: tuple[str, ...] = ()
    add_missed_positives: bool = False
    extra_days: int = 4
    max_training_lists: int | None = 25_000
    listwise_weight: float = 1.0
    order_loss: str = "softmax"
    list_features: bool = False
    source_features: bool = False
    engagement_features: bool = False
    target_attention: bool = False
    activity_features: bool = True

    def validate(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ConfigError(f"ranking.architecture is '{self.architecture}'; known: "
                              f"{', '.join(ARCHITECTURES)}")
        if self.early_stopping not in EARLY_STOPPING:
            raise ConfigError(f"ranking.early_stopping is '{self.early_stopping}'; known: "
                              f"{', '.join(EARLY_STOPPING)}")
        if self.order_loss not in ORDER_LOSSES:
            raise ConfigError(f"ranking.order_loss is '{self.order_loss}'; known: {', '.join(ORDER_LOSSES)}")
        if self.listwise_weight < 0:
            raise ConfigError(f"ranking.listwise_weight must be >= 0, got {self.listwise_weight}")
        if self.loss_weighting not in LOSS_WEIGHTINGS:
            raise ConfigError(f"ranking.loss_weighting is '{self.loss_weighting}'; known: "
                              f"{', '.join(LOSS_WEIGHTINGS)}")
        for where, weights in (("loss_weights", self.loss_weights),
                               ("value_weights", self.value_weights or {})):
            for task, weight in weights.items():
                if task not in TASKS:
                    raise ConfigError(f"ranking.{where} has unknown key '{task}'; known: {', '.join(TASKS)}")
                if not weight >= 0:
                    raise ConfigError(f"ranking.{where}.{task} must be >= 0, got {weight}")
        if self.value_weights is not None and not any(w > 0 for w in self.value_weights.values()):
            raise ConfigError(f"ranking.value_weights must give some task a weight > 0 (or be null: chosen "
                              f"on the held-out users), got {dict(self.value_weights)}")
        # `not x > 0`: also false for NaN, which a dataclass built in code may hold.
        if not self.learning_rate > 0:
            raise ConfigError(f"ranking.learning_rate must be > 0, got {self.learning_rate}")
        for key in ("bottom_layers", "expert_layers", "tower_layers"):
            if any(width <= 0 for width in getattr(self, key)):
                raise ConfigError(f"ranking.{key} must be positive widths, got {list(getattr(self, key))}")
        if self.extra_days < 0:
            raise ConfigError(f"ranking.extra_days must be >= 0, got {self.extra_days}")
        for key in ("experts", "batch_size", "epochs", "patience", "history_length", "list_size",
                    "steps_per_execution"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"ranking.{key} must be positive, got {getattr(self, key)}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"ranking.dropout must be in [0, 1), got {self.dropout}")
        if not 0 < self.holdout_share < 1:
            raise ConfigError(f"ranking.holdout_share must be in (0, 1), got {self.holdout_share}")
        if self.max_training_lists is not None and self.max_training_lists < 1:
            raise ConfigError(f"ranking.max_training_lists must be positive (or null: no cap), "
                              f"got {self.max_training_lists}")
        if self.holdout_max_users is not None and self.holdout_max_users < 1:
            raise ConfigError(f"ranking.holdout_max_users must be positive (or null: no cap), "
                              f"got {self.holdout_max_users}")
