#!/usr/bin/env python
"""Ask a TF Serving model server's `recommend` model for one user's list over REST.

    python examples/rest_recommend.py --server http://localhost:8501 --user 1000 \\
        --history 5461:click:1560816000,2344:purchase:1560729600 --feature gender=1

The request is built from the model's own signature (`GET /v1/models/<model>/metadata`), as
`grpc_recommend.py` builds it; the arguments are the same. Plain Python (the standard
library): no TensorFlow needed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request

from recommend_request import (RequestError, add_arguments, parse_features, parse_history, print_list,
                               request_inputs)

SIGNATURE = "serving_default"
# TF Serving's dtype names in the metadata -> the names `request_inputs` reads.
DTYPES = {"DT_STRING": "string", "DT_FLOAT": "float32", "DT_DOUBLE": "float64", "DT_INT64": "int64",
          "DT_INT32": "int32"}


def call(url: str, body: dict | None, timeout: float) -> dict:
    """GET `url` (no body) or POST `body` as JSON; the answer's JSON."""
    data = None if body is None else json.dumps(body).encode()
    with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=timeout) as answer:
        return json.loads(answer.read())


def signature_inputs(server: str, model: str, timeout: float) -> dict[str, str]:
    """The model's `serving_default` inputs, name -> dtype name ("string", "float32", ...)."""
    metadata = call(f"{server}/v1/models/{model}/metadata", None, timeout)
    inputs = metadata["metadata"]["signature_def"]["signature_def"][SIGNATURE]["inputs"]
    return {name: DTYPES.get(info["dtype"], "string") for name, info in inputs.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser, "http://localhost:8501", "the REST API's address")
    args = parser.parse_args(argv)
    server = args.server.rstrip("/")
    try:
        signature = signature_inputs(server, args.model, args.timeout)
        inputs = request_inputs(signature, args.user, parse_history(args.history), int(time.time()),
                                parse_features(args.feature))
        # TF Serving's REST API reads NaN (a missing number) as JSON's extension allows.
        out = call(f"{server}/v1/models/{args.model}:predict", {"signature_name": SIGNATURE, "inputs": inputs},
                   args.timeout)["outputs"]
    except RequestError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except urllib.error.HTTPError as err:
        print(f"error: the server at {server} refused the request: HTTP {err.code}: {err.read().decode()[:500]}",
              file=sys.stderr)
        return 2
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        print(f"error: no model server answers at {server} ({reason}); start tensorflow_model_server with "
              "--rest_api_port on that address (README, Serving)", file=sys.stderr)
        return 2
    out = {name: values[0] for name, values in out.items()}
    print_list(out, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
