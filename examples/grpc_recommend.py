#!/usr/bin/env python
"""Ask a TF Serving model server's `recommend` model for one user's list over gRPC.

    python examples/grpc_recommend.py --server localhost:8500 --user 1000 \\
        --history 5461:click:1560816000,2344:purchase:1560729600 --feature gender=1

The request is built from the model's own signature (`GetModelMetadata`): `--history` is the
user's recent events, most recent first, as item:event:unix_seconds (event: click, save or
purchase; leave it out for a user with no history), `--feature name=value` gives a user
feature (one flag each); a feature not given is sent as missing. Needs only
`tensorflow-serving-api` (and the TensorFlow it brings, for the tensor protos).
"""

from __future__ import annotations

import argparse
import sys
import time

import grpc
import tensorflow as tf
from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2, prediction_service_pb2_grpc

from recommend_request import (RequestError, add_arguments, parse_features, parse_history, print_list,
                               request_inputs)

SIGNATURE = "serving_default"


def signature_inputs(stub, model: str, timeout: float) -> dict[str, str]:
    """The model's `serving_default` inputs, name -> dtype name ("string", "float32", ...)."""
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = model
    response = stub.GetModelMetadata(request, timeout=timeout)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signatures)
    inputs = signatures.signature_def[SIGNATURE].inputs
    return {name: tf.dtypes.as_dtype(info.dtype).name for name, info in inputs.items()}


def predict_request(model: str, inputs: dict[str, list], signature: dict[str, str]) -> predict_pb2.PredictRequest:
    """A PredictRequest holding `inputs` (`request_inputs`) as tensors of the signature's dtypes."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = SIGNATURE
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value, dtype=tf.dtypes.as_dtype(signature[name])))
    return request


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser, "localhost:8500", "host:port of the gRPC API")
    args = parser.parse_args(argv)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(args.server))
    try:
        signature = signature_inputs(stub, args.model, args.timeout)
        inputs = request_inputs(signature, args.user, parse_history(args.history), int(time.time()),
                                parse_features(args.feature))
        response = stub.Predict(predict_request(args.model, inputs, signature), timeout=args.timeout)
    except RequestError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except grpc.RpcError as err:
        if err.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            print(f"error: no model server answers at {args.server} ({err.code().name}); start "
                  "tensorflow_model_server with --port on that address (README, Serving)", file=sys.stderr)
        else:
            print(f"error: the server at {args.server} refused the request: {err.code().name}: {err.details()}",
                  file=sys.stderr)
        return 2
    out = {name: tf.make_ndarray(proto)[0] for name, proto in response.outputs.items()}
    out["item_ids"] = [item.decode() for item in out["item_ids"]]
    print_list(out, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
