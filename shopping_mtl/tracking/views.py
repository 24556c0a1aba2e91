"""Views of the MLflow UI that a search leaves in its experiment, opened by an address it prints.

MLflow 3.17's UI keeps the runs table's columns and expanded rows in the browser, and opens in
its GenAI mode: a person who opens the UI sees a search collapsed into one row and no metric
column. It also reads a *shared view* from an experiment tag (`mlflow.sharedViewState.<key>`,
a JSON object of the table's search and column settings) when the address names the key
(`viewStateShareKey=<key>`); this is what its "Share" button writes. `share_search_view` writes
one for a search, so the address it returns shows the search's runs best first, with the
objective, the winner's tag and the searched settings as columns.
"""

from __future__ import annotations

import json
from typing import Sequence
from urllib.parse import quote

from mlflow import MlflowClient

from shopping_mtl.tracking.client import children_filter, metric_key

SHARED_VIEW_TAG = "mlflow.sharedViewState."  # + the share key, as MLflow 3.17's UI reads it
UI_ADDRESS = "http://127.0.0.1:5000"  # `make ui`


def column(kind: str, key: str) -> str:
    """A runs-table column as the UI names it: kind "metrics", "params", "tags" or
    "attributes" (e.g. "Dataset"), e.g. "metrics.`ranker/holdout_ndcg_at_10`"."""
    return f"{kind}.`{key}`"


def search_view(parent_run_id: str, objective: str, settings: Sequence[str]) -> dict:
    """The view of one search's runs: its trials and final run (the children of
    `parent_run_id`), best `objective` first, with the objective, the `best_trial` tag and each
    searched setting (`settings`, config keys) as columns. A filtered, metric-sorted table is
    flat, so the trials are rows of their own rather than hidden under the search's row."""
    objective_column = column("metrics", metric_key(objective))
    return {
        "searchFilter": children_filter(parent_run_id),
        "orderByKey": objective_column,
        "orderByAsc": False,
        "selectedColumns": [objective_column, column("tags", "best_trial"),
                            *(column("params", name) for name in settings)],
    }


def share_search_view(client: MlflowClient, experiment_id: str, parent_run_id: str, objective: str,
                      settings: Sequence[str], ui_address: str = UI_ADDRESS) -> str:
    """Write the search's view (`search_view`) as a shared view of its experiment, keyed by the
    search's run id, and return the UI address that opens it in model-training mode."""
    client.set_experiment_tag(experiment_id, SHARED_VIEW_TAG + parent_run_id,
                              json.dumps(search_view(parent_run_id, objective, settings)))
    return (f"{ui_address}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
            f"&viewStateShareKey={quote(parent_run_id)}")
