"""Ranker settings, importable without TensorFlow (the config layer validates them early)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from shopping_mtl.errors import ConfigError

TASKS = ("click", "save", "purchase")
ARCHITECTURES = ("shared_bottom", "mmoe", "ple", "esmm")
LOSS_WEIGHTINGS = ("fixed", "uncertainty")
EARLY_STOPPING = ("holdout_ndcg@10", "val_mean_auc")


@dataclass(frozen=True)
class RankingConfig:
    """The multi-task ranker and its training.

    Args:
        architecture: shared_bottom (default), mmoe (experts and a gate per task), ple (CGC:
            shared and task-specific experts), or esmm (p_save = p_click * p(save | click), the
            same for purchase, so the probabilities stay ordered).
        bottom_layers: widths of the shared bottom MLP (shared_bottom, esmm).
        experts, expert_layers: number and widths of the experts (mmoe, ple; ple uses this
            many shared experts and one task-specific expert per task).
        tower_layers: widths of each task's tower.
        cross_layer: add a TFRS DCN cross layer before the bottom.
        dropout: dropout rate in the bottom, experts and towers.
        history_length: how many of the user's last events the user-item features read.
        loss_weights: per-task loss weight (fixed weighting).
        loss_weighting: "fixed", or "uncertainty" (learned per-task weights, Kendall et al.).
        batch_size, epochs, learning_rate, patience: training (patience: epochs without
            improvement of `early_stopping` before stopping; the best epoch's weights are kept).
        steps_per_execution: training steps run by one call into TensorFlow (Keras `compile`);
            the weights are those of one step per call. Under several workers (`TF_CONFIG`): 1.
        early_stopping: what stops training: "holdout_ndcg@10" (default; the held-out user-days'
            lists ordered by the model, scored after each epoch: what the final list is judged
            on) or "val_mean_auc" (the holdout's mean AUC over the heads; it peaks later than
            the list NDCG on Taobao, NOTES.md). Single-task comparison models always use the
            mean AUC.
        holdout_share: share of the ranking-day users held out for early stopping, calibration
            and the value-model weights.
        holdout_max_users: at most this many of them (those first in the hashed order; the rest
            train): the held-out rows are scored after every epoch and held in memory, and a few
            thousand users calibrate as well as a million. None: no cap.
        value_weights: weights of the calibrated p_click, p_save, p_purchase in the final score;
            None chooses them on the holdout's NDCG@10.
        list_size: rows per user in recommendations.parquet.
        compare_single_task: also train one single-task model per head (same size) and report
            its test AUC beside the multi-task head's.
        exclude_features: user or item features the ranker leaves out (e.g. `[user_id, item_id]`
            to rank from content and user-item features alone).
        add_missed_positives: add the ranking day's engaged items that no candidate source
            found to the training rows, so every positive is learned. Off by default: those
            rows are the only ones with no source signal, and the model learned "no signal ->
            positive" (held-out NDCG@10 0.355 with them, 0.365 without; NOTES.md).
        extra_days: also learn from this many train days before the validation day (candidates
            and features from the events before each day; no two-tower source there).
        max_training_lists: at most this many training lists (user-days) over all ranking days,
            taken from the validation day backwards: when a day has more fitting users than
            places left, a fixed pseudo-random sample of them (by hash) is kept, and days with
            no place left are not built (their candidate sources never computed). Held-out
            users are not counted. Bounds the ranker's rows and its preparation on large logs
            (the bundled datasets have about 2,700 training lists, so the cap leaves them as they
            were; 10^7 synthetic events have ~63,000 on the validation day alone); calibration is
            fitted on the held-out users' full lists, so it is unaffected. On EComm, 250 to 2,633
            lists give the same held-out NDCG@10 of the validation day (0.381-0.383; NOTES.md).
            None: no cap.
        listwise_weight: weight of a softmax loss over each user's candidates on the click
            logit, beside the pointwise losses (each head's mean cross-entropy over the batch,
            times its `loss_weights`; 0: pointwise only). 0, 1, 3 and 10 give held-out
            NDCG@10 within 0.003 of each other on the mean of EComm and Taobao (NOTES.md).
        list_features: give the model each candidate's user-item features, popularity and
            two-tower score relative to the user's other candidates (gap to the list's best and
            mean; `cross.LIST_FEATURES`). Off by default: held-out NDCG@10 tied (0.3527 with,
            0.3528 without; NOTES.md).
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
    list_features: bool = False

    def validate(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ConfigError(f"ranking.architecture is '{self.architecture}'; known: "
                              f"{', '.join(ARCHITECTURES)}")
        if self.early_stopping not in EARLY_STOPPING:
            raise ConfigError(f"ranking.early_stopping is '{self.early_stopping}'; known: "
                              f"{', '.join(EARLY_STOPPING)}")
        if self.loss_weighting not in LOSS_WEIGHTINGS:
            raise ConfigError(f"ranking.loss_weighting is '{self.loss_weighting}'; known: "
                              f"{', '.join(LOSS_WEIGHTINGS)}")
        for where, weights in (("loss_weights", self.loss_weights),
                               ("value_weights", self.value_weights or {})):
            for task in weights:
                if task not in TASKS:
                    raise ConfigError(f"ranking.{where} has unknown key '{task}'; known: {', '.join(TASKS)}")
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
