"""A stand-in for tensorflow_model_server's two APIs over one export (no server binary can be
installed here): gRPC `Predict` and `GetModelMetadata`, REST `:predict` (columnar `inputs`) and
`/metadata`, each answering from the SavedModel's `serving_default` as the server would.

    python tests/serving_stand_in.py EXPORT_VERSION_DIR MODEL_NAME

prints "GRPC_PORT REST_PORT" once both listen, then serves until killed.
"""

import json
import sys
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2, prediction_service_pb2_grpc

SIGNATURE = "serving_default"
export, model = sys.argv[1], sys.argv[2]
serve = tf.saved_model.load(export).signatures[SIGNATURE]
specs = serve.structured_input_signature[1]


def answer(inputs: dict) -> dict:
    """The signature's outputs for `inputs` (name -> array-like), as numpy arrays."""
    missing = sorted(set(specs) - set(inputs))
    if missing or set(inputs) - set(specs):
        raise ValueError(f"inputs differ from the signature: missing {missing}, "
                         f"unknown {sorted(set(inputs) - set(specs))}")
    return {k: v.numpy() for k, v in serve(**{k: tf.constant(v, dtype=specs[k].dtype) for k, v in inputs.items()}).items()}


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def Predict(self, request, context):
        if request.model_spec.name != model or request.model_spec.signature_name not in ("", SIGNATURE):
            context.abort(grpc.StatusCode.NOT_FOUND, f"no model {request.model_spec.name}")
        try:
            outputs = answer({name: tf.make_ndarray(proto) for name, proto in request.inputs.items()})
        except ValueError as err:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        response = predict_pb2.PredictResponse()
        for name, value in outputs.items():
            response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
        return response

    def GetModelMetadata(self, request, context):
        signature = meta_graph_pb2.SignatureDef()
        for name, spec in specs.items():
            signature.inputs[name].CopyFrom(meta_graph_pb2.TensorInfo(
                name=name, dtype=spec.dtype.as_datatype_enum, tensor_shape=spec.shape.as_proto()))
        signatures = get_model_metadata_pb2.SignatureDefMap()
        signatures.signature_def[SIGNATURE].CopyFrom(signature)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = model
        response.metadata["signature_def"].Pack(signatures)
        return response


def plain(value):
    if isinstance(value, np.ndarray):
        return [plain(v) for v in value]
    return value.decode() if isinstance(value, bytes) else value.item() if isinstance(value, np.generic) else value


class Rest(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path != f"/v1/models/{model}/metadata":
            return self.reply(404, {"error": f"no such path {self.path}"})
        inputs = {name: {"dtype": types_pb2.DataType.Name(spec.dtype.as_datatype_enum), "name": name}
                  for name, spec in specs.items()}
        self.reply(200, {"model_spec": {"name": model},
                         "metadata": {"signature_def": {"signature_def": {SIGNATURE: {"inputs": inputs}}}}})

    def do_POST(self):
        if self.path != f"/v1/models/{model}:predict":
            return self.reply(404, {"error": f"no such path {self.path}"})
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        try:
            outputs = answer(body["inputs"])
        except ValueError as err:
            return self.reply(400, {"error": str(err)})
        self.reply(200, {"outputs": {name: plain(value) for name, value in outputs.items()}})


server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(), server)
grpc_port = server.add_insecure_port("127.0.0.1:0")
server.start()
rest = ThreadingHTTPServer(("127.0.0.1", 0), Rest)
threading.Thread(target=rest.serve_forever, daemon=True).start()
print(grpc_port, rest.server_address[1], flush=True)
server.wait_for_termination()
