#!/usr/bin/env python
"""Ask a TF Serving model server's `recommend` model for one user's list over gRPC.

    python examples/grpc_recommend.py --server localhost:8500 --user 1000 \
        --history 5461:click:1560816000,2344:purchase:1560729600

`--history` is the user's recent events, most recent first, as item:event:unix_seconds
(event: click, save or purchase); leave it out for a user with no history. Needs only
`tensorflow-serving-api` (and the TensorFlow it brings, for the tensor protos).
"""

from __future__ import annotations

import argparse
import time

import grpc
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc


def recommend_request(user_id: str, history: list[tuple[str, str, int]], now: int,
                      model: str = "recommend") -> predict_pb2.PredictRequest:
    """A PredictRequest for one user: raw features in, named tensors as the signature wants."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = "serving_default"
    items, events, stamps = (list(column) for column in zip(*history)) if history else ([""], [""], [0])
    request.inputs["user_id"].CopyFrom(tf.make_tensor_proto([user_id], dtype=tf.string))
    request.inputs["history_item_ids"].CopyFrom(tf.make_tensor_proto([items], dtype=tf.string))
    request.inputs["history_events"].CopyFrom(tf.make_tensor_proto([events], dtype=tf.string))
    request.inputs["history_timestamps"].CopyFrom(tf.make_tensor_proto([stamps], dtype=tf.int64))
    request.inputs["timestamp"].CopyFrom(tf.make_tensor_proto([now], dtype=tf.int64))
    return request


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", default="localhost:8500", help="host:port of the gRPC API")
    parser.add_argument("--user", required=True, help="the user's id (an unknown id is fine)")
    parser.add_argument("--history", default="", help="item:event:unix_seconds,... most recent first")
    parser.add_argument("--top", type=int, default=10, help="how many rows to print")
    args = parser.parse_args()
    history = [tuple(part.split(":")) for part in args.history.split(",") if part]
    history = [(item, event, int(seconds)) for item, event, seconds in history]
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(args.server))
    response = stub.Predict(recommend_request(args.user, history, int(time.time())), timeout=5.0)
    out = {name: tf.make_ndarray(proto)[0] for name, proto in response.outputs.items()}
    print(f"{'rank':>4} {'item_id':>12} {'score':>8} {'p_click':>8} {'p_save':>8} {'p_purchase':>10}")
    for rank in range(min(args.top, len(out["item_ids"]))):
        print(f"{rank + 1:>4} {out['item_ids'][rank].decode():>12} {out['scores'][rank]:>8.4f} {out['click'][rank]:>8.4f} "
              f"{out['save'][rank]:>8.4f} {out['purchase'][rank]:>10.4f}")


if __name__ == "__main__":
    main()
