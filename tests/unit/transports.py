"""One search request, sent over each transport of the in-process server; answers read back the same way."""

import base64
import json
import struct
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.infer_type import InferResponse

TRANSPORTS = ["rest-v1", "rest-v2-json", "rest-v2-binary", "grpc"]
_DOUBLE_PARAM_TAG = b"\x21"  # field 4 (double_param), wire type 1 (fixed64)


@dataclass(frozen=True)
class Answer:
    status: int | str  # HTTP status, or the gRPC status code's name
    error: str | None
    body: Any = None

    @property
    def ok(self) -> bool:
        return self.status in (200, "OK")


def grpc_parameter(value: Any) -> pb.InferParameter:
    if isinstance(value, bool):
        return pb.InferParameter(bool_param=value)
    if isinstance(value, int):
        return pb.InferParameter(int64_param=value)
    if isinstance(value, float):
        # What tritonclient sends for a float: double_param, which KServe's copy of the proto does not know.
        return pb.InferParameter.FromString(_DOUBLE_PARAM_TAG + struct.pack("<d", value))
    return pb.InferParameter(string_param=value)


def _v2_body(name: str, elements: list, datatype: str, shape: list[int], parameters: dict, binary: bool) -> dict:
    if binary:
        tensor = {"name": name, "datatype": datatype, "shape": shape, "parameters": {}}
    else:
        data = [base64.b64encode(e).decode() if isinstance(e, bytes) and name == "image" else e for e in elements]
        tensor = {"name": name, "datatype": datatype, "shape": shape, "data": data}
    return {"inputs": [tensor], "parameters": parameters}


def _bytes_payload(elements: list) -> bytes:
    encoded = [e if isinstance(e, bytes) else str(e).encode() for e in elements]
    return b"".join(struct.pack("<I", len(e)) + e for e in encoded)


def ask(
    server: Any,
    transport: str,
    name: str,
    elements: list,
    parameters: dict | None = None,
    *,
    model: str = "image-search",
    version: str | None = None,
    headers: dict[str, str] | None = None,
    outputs: list[str] | None = None,
    grpc_timeout: float | None = None,
) -> Answer:
    """Send one query input (`image` bytes, `id` strings or `embedding` rows) with `parameters`."""
    parameters = parameters or {}
    headers = headers or {}
    datatype = "FP32" if name == "embedding" else "BYTES"
    shape = [len(elements), len(elements[0])] if name == "embedding" else [len(elements)]
    if transport == "grpc":
        request = pb.ModelInferRequest(model_name=model, model_version=version or "")
        tensor = request.inputs.add(name=name, datatype=datatype, shape=shape)
        if name == "embedding":
            tensor.contents.fp32_contents.extend([x for row in elements for x in row])
        else:
            tensor.contents.bytes_contents.extend([e if isinstance(e, bytes) else e.encode() for e in elements])
        for key, value in parameters.items():
            request.parameters[key].CopyFrom(grpc_parameter(value))
        for output in outputs or []:
            request.outputs.add(name=output)
        try:
            return Answer("OK", None, server.grpc("ModelInfer", request, tuple(headers.items()), grpc_timeout))
        except grpc.aio.AioRpcError as error:
            return Answer(error.code().name, error.details())
    if transport == "rest-v1":
        key = "image" if name == "image" else name
        instances = [{key: {"b64": base64.b64encode(e).decode()} if name == "image" else e} for e in elements]
        response = server.post(
            f"/v1/models/{model}:predict", json={"instances": instances, "parameters": parameters}, headers=headers
        )
    else:
        binary = transport == "rest-v2-binary"
        body = _v2_body(name, elements, datatype, shape, parameters, binary)
        if outputs:
            body["outputs"] = [{"name": output} for output in outputs]
        path = f"/v2/models/{model}/versions/{version}/infer" if version else f"/v2/models/{model}/infer"
        if binary:
            payload = (
                _bytes_payload(elements)
                if datatype == "BYTES"
                else struct.pack(f"<{shape[0] * shape[1]}f", *[x for row in elements for x in row])
            )
            body["inputs"][0]["parameters"]["binary_data_size"] = len(payload)
            header = json.dumps(body).encode()
            response = server.post(
                path,
                content=header + payload,
                headers={**headers, "Inference-Header-Content-Length": str(len(header))},
            )
        else:
            response = server.post(path, json=body, headers=headers)
    body = response.json()
    return Answer(response.status_code, body.get("error") if response.status_code != 200 else None, body)


def tensors(answer: Answer) -> dict[str, np.ndarray]:
    """Every output of a successful V2 answer as an array, whichever transport it came over."""
    if isinstance(answer.body, pb.ModelInferResponse):
        response = InferResponse.from_grpc(answer.body)
    else:
        response = InferResponse.from_rest(answer.body)
    arrays = {}
    for tensor in response.outputs:
        array = tensor.as_numpy()
        if array.dtype == np.object_:
            array = np.vectorize(lambda v: v.decode() if isinstance(v, bytes) else v, otypes=[object])(array)
        arrays[tensor.name] = array
    return arrays


def model_version(answer: Answer) -> str | None:
    if isinstance(answer.body, pb.ModelInferResponse):
        return answer.body.model_version
    return answer.body.get("model_version")
