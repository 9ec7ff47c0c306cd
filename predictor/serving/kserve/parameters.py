"""Request parameters at the protocol's edge: read as plain values whichever transport brought them, and checked
against what the model accepts.

KServe's copy of the protocol lacks `InferParameter.double_param`, so a float such as `min_score=0.5` from
tritonclient arrives over gRPC as an unknown protobuf field; `request_parameters` reads it.

A model declares its parameters once, in `metadata_parameters()` (what `GET /v2/models/<name>` shows): every entry
whose value is an object (`{"type": ...}`) is a parameter. Any other parameter in a request is refused, so a typo
such as `topk` fails loudly instead of returning plain results. The exceptions are the parameters that the protocol
and its clients send on their own: `PROTOCOL_PARAMETERS`, listed here and nowhere else.
"""

import struct
from collections.abc import Mapping
from typing import Any

from google.protobuf import unknown_fields
from kserve.protocol.infer_type import InferRequest

from predictor.errors import InvalidRequest

__all__ = ["PROTOCOL_PARAMETERS", "check_request_parameters", "declared_parameters", "request_parameters"]

# Field 4 of the Open Inference Protocol's InferParameter is `double_param` (fixed64 on the wire).
_DOUBLE_PARAM_FIELD = 4
_FIXED64_WIRE_TYPE = 1


def _parameter_value(value: Any) -> Any:
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
    """A V2 request's parameters as plain values, whichever transport brought them."""
    parameters = request.parameters or {}
    return {key: _parameter_value(value) for key, value in parameters.items()}


PROTOCOL_PARAMETERS = frozenset(
    {
        # The binary data extension (tritonclient, KServe's InferRequest, perf_analyzer).
        "binary_data_output",
        "binary_data",
        "binary_data_size",
        # What tritonclient's infer() and perf_analyzer add for Triton's scheduler options.
        "sequence_id",
        "sequence_start",
        "sequence_end",
        "priority",
        "timeout",
        # Triton's streaming option, which tritonclient's stream_infer() sends.
        "triton_enable_empty_final_response",
    }
)


def declared_parameters(model: Any) -> set[str]:
    """The parameters `model` declares in its metadata."""
    declared = model.metadata_parameters() if hasattr(model, "metadata_parameters") else {}
    return {name for name, described in (declared or {}).items() if isinstance(described, Mapping)}


def check_request_parameters(model: Any, parameters: Mapping[str, Any] | None) -> None:
    """Refuse a request parameter that neither `model` nor the protocol knows, naming it and listing the known."""
    if not parameters or not isinstance(parameters, Mapping):
        return
    declared = declared_parameters(model)
    unknown = sorted(name for name in parameters if name not in declared and name not in PROTOCOL_PARAMETERS)
    if unknown:
        names = ", ".join(repr(name) for name in unknown)
        raise InvalidRequest(
            f"unknown parameter{'s' if len(unknown) > 1 else ''} {names} for model {model.name}; "
            f"it takes {', '.join(sorted(declared)) or 'no parameters'}"
        )
