#!/usr/bin/env bash
# A screenshot of the MLflow UI's runs of an experiment, taken in headless Chromium (Debian's
# `chromium` package): in model-training mode (MLflow 3.17 opens in GenAI mode unless the URL
# says workflowType=machine_learning), a search's trials (tags.study) best objective first.
#
# usage: tools/ui_screenshot.sh STORE_URI OUT.png [EXPERIMENT_NAME]
#   e.g. tools/ui_screenshot.sh sqlite:///$PWD/mlflow.db docs/mlflow_ui_search.png
set -euo pipefail
store=$1 out=$2 experiment=${3:-shopping_mtl}
port=5077
here=$(cd "$(dirname "$0")/.." && pwd)
"$here/.venv/bin/mlflow" ui --backend-store-uri "$store" --host 127.0.0.1 --port "$port" >/dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 60); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 1; done
id=$(curl -sf "http://127.0.0.1:$port/api/2.0/mlflow/experiments/get-by-name?experiment_name=$experiment" \
     | "$here/.venv/bin/python" -c "import json, sys; print(json.load(sys.stdin)['experiment']['experiment_id'])")
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1600,900 \
  --virtual-time-budget=30000 --screenshot="$out" "http://127.0.0.1:$port/#/experiments/$id/runs?workflowType=machine_learning&searchFilter=tags.study%20%3D%20%27ranker%27&orderByKey=metrics.%60ranker%2Fholdout_ndcg_at_10%60&orderByAsc=false" 2>/dev/null
echo "$out: experiment $experiment ($id)"
