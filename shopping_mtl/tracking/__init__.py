"""MLflow tracking: one run per training, child runs for tuner trials, plots, and the registry.

`store` resolves the store and its experiment, `client` writes runs (`Tracker`) and their
standard metadata (git and data tags, the dataset input of `dataset`, system metrics), `registry` logs the
exported SavedModels as pyfunc models and moves the `champion` alias, `plots` draws the
PNGs a run attaches, `views` leaves a search's view of the UI in its experiment. The names below are the ones the rest of the project uses as `tracking.<name>`.
"""

from shopping_mtl.tracking.client import (
    MAX_PARAM_VALUE,
    RUN_DIR_TAG,
    SKIPPED_METRIC,
    Tracker,
    end_abandoned_runs,
    flatten,
    metric_key,
    run_tags,
)
from shopping_mtl.tracking.dataset import dataset_input
from shopping_mtl.tracking.plots import calibration_bins, plot_calibration, plot_recall_curves
from shopping_mtl.tracking.registry import log_exports, version_model_id
from shopping_mtl.tracking.store import (
    artifact_root,
    check_reachable,
    default_tracking_uri,
    get_or_create_experiment,
)
from shopping_mtl.tracking.views import search_view, share_search_view

__all__ = [
    "MAX_PARAM_VALUE",
    "RUN_DIR_TAG",
    "SKIPPED_METRIC",
    "Tracker",
    "artifact_root",
    "calibration_bins",
    "check_reachable",
    "dataset_input",
    "default_tracking_uri",
    "end_abandoned_runs",
    "flatten",
    "get_or_create_experiment",
    "log_exports",
    "metric_key",
    "plot_calibration",
    "search_view",
    "share_search_view",
    "plot_recall_curves",
    "run_tags",
    "version_model_id",
]
