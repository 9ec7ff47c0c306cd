"""Between the wire and the models: V1 JSON and V2 tensors in, images, ids, vectors and parameters out; responses back.

Every way a client can get a request wrong ends here as `InvalidRequest` (HTTP 400 / gRPC INVALID_ARGUMENT) whose
message names the problem.
"""

import struct
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from kserve.protocol.infer_type import InferInput, InferOutput, InferRequest, InferResponse

from predictor.errors import InvalidRequest
from predictor.imaging.decoding import InvalidImage, image_bytes_from_wire

IMAGE_INPUT = "image"
_TRUE = ("1", "true", "yes")
_FALSE = ("0", "false", "no")


def _decode_element(element: Any, position: int) -> bytes:
    if not isinstance(element, bytes | str):
        raise InvalidRequest(f"image {position}: expected an encoded image file (bytes or base64 string)")
    try:
        return image_bytes_from_wire(element)
    except (InvalidImage, UnicodeDecodeError) as error:
        raise InvalidRequest(f"image {position}: {error}") from None


def v2_inputs(request: InferRequest, accepted: list[str]) -> tuple[str, InferInput]:
    """The request's one input, which must be one of `accepted`."""
    inputs = {tensor.name: tensor for tensor in request.inputs}
    unknown = sorted(set(inputs) - set(accepted))
    if unknown:
        raise InvalidRequest(f"unknown input(s) {unknown}; this model takes one of {accepted}")
    if len(inputs) != 1:
        found = sorted(inputs) or "no inputs"
        raise InvalidRequest(f"send exactly one input, one of {accepted}; got {found}")
    name = next(iter(inputs))
    return name, inputs[name]


def tensor_array(tensor: InferInput, datatype: str, rank: int, layout: str) -> np.ndarray:
    """The tensor's data, after checking its datatype, its rank and that its shape matches what it holds."""
    if tensor.datatype != datatype:
        raise InvalidRequest(f"input {tensor.name!r} must have datatype {datatype}, got {tensor.datatype}")
    shape = list(tensor.shape)
    if len(shape) != rank:
        raise InvalidRequest(f"input {tensor.name!r} must have shape {layout}, got {shape}")
    try:
        array = tensor.as_numpy()
    except struct.error:
        raise InvalidRequest(
            f"input {tensor.name!r}: its binary data is not BYTES elements; in the binary format each element is a "
            "4-byte little-endian length followed by that many bytes"
        ) from None
    except (ValueError, TypeError) as error:
        raise InvalidRequest(
            f"input {tensor.name!r} could not be read as {datatype} of shape {shape}: {error}"
        ) from None
    if list(array.shape) != shape:
        raise InvalidRequest(f"input {tensor.name!r} declares shape {shape} but holds {list(array.shape)}")
    return array


def images_from_tensor(tensor: InferInput, max_images: int) -> list[bytes]:
    elements = tensor_array(tensor, "BYTES", 1, "[N] (one encoded file per element)").reshape(-1)
    check_count(len(elements), max_images)
    return [_decode_element(element, position) for position, element in enumerate(elements)]


def check_count(count: int, max_images: int, what: str = "images") -> None:
    if count == 0:
        raise InvalidRequest(f"the request holds no {what}")
    if count > max_images:
        raise InvalidRequest(f"the request holds {count} {what}, over the limit of {max_images} per request")


def v1_instances(payload: Any, max_images: int) -> list[Any]:
    if not isinstance(payload, dict) or not isinstance(payload.get("instances"), list):
        raise InvalidRequest('a V1 request is a JSON object with a list "instances"')
    instances = payload["instances"]
    check_count(len(instances), max_images, "instances")
    return instances


def v1_parameters(payload: Any) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise InvalidRequest('a V1 request is a JSON object with a list "instances"')
    parameters = payload.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InvalidRequest('"parameters" must be a JSON object')
    return parameters


def image_from_v1_value(value: Any, position: int) -> bytes:
    """Accepts {"b64": "..."} (the V1 convention for binary data) or a plain base64 string."""
    if isinstance(value, dict) and "b64" in value:
        value = value["b64"]
    if not isinstance(value, str):
        raise InvalidRequest(f'instance {position}: the image must be {{"b64": "<base64>"}} or a base64 string')
    return _decode_element(value, position)


def int_parameter(
    parameters: Mapping[str, Any], name: str, default: int | None, low: int, high: int, why: str = ""
) -> int:
    """`why` says where the bounds come from, in the message of a value outside them."""
    value = parameters.get(name, default)
    problem = f"parameter {name!r} must be an integer from {low} to {high}{' ' + why if why else ''}, got {value!r}"
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidRequest(problem)
    try:
        number = int(value)
        exact = number == float(value)
    except (ValueError, OverflowError):
        raise InvalidRequest(problem) from None
    if not exact or not low <= number <= high:
        raise InvalidRequest(problem)
    return number


def float_parameter(parameters: Mapping[str, Any], name: str, default: float | None, low: float, high: float) -> float:
    value = parameters.get(name, default)
    problem = f"parameter {name!r} must be a number from {low} to {high}, got {value!r}"
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidRequest(problem)
    try:
        number = float(value)
    except ValueError:
        raise InvalidRequest(problem) from None
    if not low <= number <= high:
        raise InvalidRequest(problem)
    return number


def bool_parameter(parameters: Mapping[str, Any], name: str) -> bool:
    value = parameters.get(name, False)
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise InvalidRequest(f"parameter {name!r} must be true or false, got {value!r}")


def string_parameter(parameters: Mapping[str, Any], name: str) -> str | None:
    value = parameters.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"parameter {name!r} must be a string, got {value!r}")
    return value


def requested_output_names(request: InferRequest, known: list[str], default: list[str]) -> list[str]:
    if not request.request_outputs:
        return default
    names = [output.name for output in request.request_outputs]
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise InvalidRequest(f"unknown output(s) {unknown}; this model has {known}")
    return names


def text_tensor(rows: list[list[str]], width: int) -> np.ndarray:
    array = np.full((len(rows), width), b"", dtype=np.object_)
    for row_index, row in enumerate(rows):
        for column, value in enumerate(row):
            array[row_index, column] = value.encode("utf-8")
    return array


def number_tensor(rows: list[list[float]], width: int) -> np.ndarray:
    array = np.zeros((len(rows), width), dtype=np.float32)
    for row_index, row in enumerate(rows):
        array[row_index, : len(row)] = row
    return array


def v2_response(
    model_name: str,
    model_version: str,
    request: InferRequest,
    outputs: list[str],
    tensors: dict[str, Callable[[], np.ndarray]],
) -> InferResponse:
    """Build only the outputs asked for; BYTES travel as text in JSON and raw in binary/gRPC."""
    infer_outputs = []
    for name in outputs:
        array = tensors[name]()
        datatype = "BYTES" if array.dtype == np.object_ else "FP32"
        output = InferOutput(name=name, shape=list(array.shape), datatype=datatype)
        output.set_data_from_numpy(array, binary_data=request.use_binary_outputs)
        infer_outputs.append(output)
    return InferResponse(
        model_name=model_name,
        model_version=model_version,
        infer_outputs=infer_outputs,
        response_id=request.id or str(uuid.uuid4()),
        use_binary_outputs=request.use_binary_outputs,
        requested_outputs=request.request_outputs,
    )
