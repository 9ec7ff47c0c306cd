"""Between the wire and the models: V1 JSON and V2 tensors in, images and parameters out, and responses back.

Every way a client can get a request wrong ends here as `InvalidInput` (HTTP 400 / gRPC INVALID_ARGUMENT) whose
message names the problem.
"""

import struct
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
from google.protobuf import unknown_fields
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from predictor.images import InvalidImage, image_bytes_from_wire

IMAGE_INPUT = "image"


# Field 4 of the Open Inference Protocol's InferParameter is `double_param` (fixed64 on the wire). KServe's copy of
# the proto lacks it, so a float such as confidence_threshold=0.3 from tritonclient arrives as an unknown field.
_DOUBLE_PARAM_FIELD = 4
_FIXED64_WIRE_TYPE = 1


def _grpc_parameter_value(value: Any) -> Any:
    """gRPC parameters arrive as InferParameter messages; read whichever field is set, double_param included."""
    if not hasattr(value, "WhichOneof"):
        return value
    kind = value.WhichOneof("parameter_choice")
    if kind:
        return getattr(value, kind)
    for unknown in unknown_fields.UnknownFieldSet(value):
        if unknown.field_number == _DOUBLE_PARAM_FIELD and unknown.wire_type == _FIXED64_WIRE_TYPE:
            return struct.unpack("<d", struct.pack("<Q", unknown.data))[0]
    return None


def request_parameters(request: InferRequest) -> dict[str, Any]:
    parameters = request.parameters or {}
    return {key: _grpc_parameter_value(value) for key, value in parameters.items()}


def _decode_element(element: Any, position: int) -> bytes:
    if not isinstance(element, bytes | str):
        raise InvalidInput(f"image {position}: expected an encoded image file (bytes or base64 string)")
    try:
        return image_bytes_from_wire(element)
    except (InvalidImage, UnicodeDecodeError) as error:
        raise InvalidInput(f"image {position}: {error}") from None


def images_from_v2(request: InferRequest, max_images: int) -> list[bytes]:
    inputs = {tensor.name: tensor for tensor in request.inputs}
    if IMAGE_INPUT not in inputs:
        raise InvalidInput(f"input {IMAGE_INPUT!r} is required; got {sorted(inputs) or 'no inputs'}")
    if len(inputs) != 1:
        raise InvalidInput(f"only the input {IMAGE_INPUT!r} is accepted; got {sorted(inputs)}")
    tensor = inputs[IMAGE_INPUT]
    if tensor.datatype != "BYTES":
        raise InvalidInput(f"input {IMAGE_INPUT!r} must have datatype BYTES, got {tensor.datatype}")
    shape = list(tensor.shape)
    if len(shape) != 1:
        raise InvalidInput(f"input {IMAGE_INPUT!r} must have shape [N] (one encoded file per element), got {shape}")
    try:
        elements = tensor.as_numpy().reshape(-1)
    except (ValueError, TypeError, struct.error) as error:
        raise InvalidInput(
            f"input {IMAGE_INPUT!r} could not be read as a BYTES tensor of shape {shape}: {error}"
        ) from None
    if len(elements) != shape[0]:
        raise InvalidInput(f"input {IMAGE_INPUT!r} declares shape {shape} but holds {len(elements)} elements")
    check_image_count(len(elements), max_images)
    return [_decode_element(element, position) for position, element in enumerate(elements)]


def check_image_count(count: int, max_images: int) -> None:
    if count == 0:
        raise InvalidInput("the request holds no images")
    if count > max_images:
        raise InvalidInput(f"the request holds {count} images, over the limit of {max_images} per request")


def v1_instances(payload: Any, max_images: int) -> list[Any]:
    if not isinstance(payload, dict) or not isinstance(payload.get("instances"), list):
        raise InvalidInput('a V1 request is a JSON object with a list "instances"')
    instances = payload["instances"]
    check_image_count(len(instances), max_images)
    return instances


def v1_parameters(payload: dict) -> dict[str, Any]:
    parameters = payload.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InvalidInput('"parameters" must be a JSON object')
    return parameters


def image_from_v1_value(value: Any, position: int) -> bytes:
    """Accepts {"b64": "..."} (the V1 convention for binary data) or a plain base64 string."""
    if isinstance(value, dict) and "b64" in value:
        value = value["b64"]
    if not isinstance(value, str):
        raise InvalidInput(f'instance {position}: the image must be {{"b64": "<base64>"}} or a base64 string')
    return _decode_element(value, position)


def int_parameter(parameters: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = parameters.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidInput(f"parameter {name!r} must be an integer from {low} to {high}, got {value!r}")
    try:
        number = int(value)
    except ValueError:
        raise InvalidInput(f"parameter {name!r} must be an integer from {low} to {high}, got {value!r}") from None
    if number != float(value) or not low <= number <= high:
        raise InvalidInput(f"parameter {name!r} must be an integer from {low} to {high}, got {value!r}")
    return number


def float_parameter(parameters: dict[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = parameters.get(name, default)
    if isinstance(value, bool):
        raise InvalidInput(f"parameter {name!r} must be a number from {low} to {high}, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"parameter {name!r} must be a number from {low} to {high}, got {value!r}") from None
    if not low <= number <= high:
        raise InvalidInput(f"parameter {name!r} must be a number from {low} to {high}, got {value!r}")
    return number


def bool_parameter(parameters: dict[str, Any], name: str) -> bool:
    value = parameters.get(name, False)
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes")
    return bool(value)


def requested_output_names(request: InferRequest, known: list[str], default: list[str]) -> list[str]:
    if not request.request_outputs:
        return default
    names = [output.name for output in request.request_outputs]
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise InvalidInput(f"unknown output(s) {unknown}; this model has {known}")
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
    model_name: str, request: InferRequest, outputs: list[str], tensors: dict[str, Callable[[], np.ndarray]]
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
        infer_outputs=infer_outputs,
        response_id=request.id or str(uuid.uuid4()),
        use_binary_outputs=request.use_binary_outputs,
        requested_outputs=request.request_outputs,
    )
