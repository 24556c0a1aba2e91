#!/usr/bin/env bash
# A screenshot of the MLflow UI, taken in headless Chromium (Debian's `chromium` package).
#
# usage: tools/ui_screenshot.sh STORE_URI OUT.png ADDRESS
#   ADDRESS: a UI address as train.py prints it, e.g. the search's view
#   ("MLflow: the search's runs, best first: http://127.0.0.1:5000/#/experiments/1/runs?...");
#   the UI is started on its own port for the screenshot and stopped after.
#   e.g. tools/ui_screenshot.sh sqlite:///$PWD/mlflow.db docs/mlflow_ui_search.png "$address"
set -euo pipefail
store=$1 out=$2 address=$3
port=5077
here=$(cd "$(dirname "$0")/.." && pwd)
"$here/.venv/bin/mlflow" ui --backend-store-uri "$store" --host 127.0.0.1 --port "$port" >/dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 60); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 1; done
page="http://127.0.0.1:$port/${address#http*://*/}"
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1920,800 \
  --virtual-time-budget=30000 --screenshot="$out" "$page" 2>/dev/null
echo "$out: $page"
