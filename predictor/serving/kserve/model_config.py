"""Triton's model configuration extension: each served model described as a Triton `ModelConfig`.

perf_analyzer and Model Analyzer read it before anything else. `dims` are the tensors' whole shapes, as the model
metadata gives them (`image` is BYTES [-1], one encoded file per element), so `max_batch_size` is 0: in Triton's
terms the batch dimension is not one the client leaves out but part of each tensor. (Triton's form for a batched
scalar, dims [1] under a batch dimension, would make every request [N, 1]; perf_analyzer refuses dims [].) How many
queries a request may carry (`--max-images`) is the parameter `max_queries_per_request`. Inputs that are
alternatives (a search takes one of image, embedding, id) are `optional`. `dynamic_batching` is what the server's
micro-batcher does with images from concurrent requests: forward passes of up to `--max-batch-size` images, waiting
at most `--max-batch-delay-ms` for company (and not at all while waiting has not paid).
"""

from typing import Any

from google.protobuf import json_format

from predictor.serving.kserve import triton_messages

__all__ = ["BACKEND", "model_config", "model_config_message"]

BACKEND = "image-search"


def _data_type(datatype: str) -> str:
    return "TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}"


def _tensors(described: list[dict[str, Any]], optional: bool) -> list[dict[str, Any]]:
    tensors = []
    for tensor in described:
        entry = {"name": tensor["name"], "data_type": _data_type(tensor["datatype"]), "dims": list(tensor["shape"])}
        if optional:
            entry["optional"] = True
        tensors.append(entry)
    return tensors


def model_config(model: Any) -> dict[str, Any]:
    """The model's configuration in Triton's JSON form (`GET /v2/models/<name>/config`)."""
    settings = model.settings
    inputs = model.get_input_types()
    device = getattr(getattr(model, "backbone", None), "device", None)
    kind = "KIND_GPU" if device is not None and device.type == "cuda" else "KIND_CPU"
    return {
        "name": model.name,
        "platform": "",
        "backend": BACKEND,
        "max_batch_size": 0,
        "input": [{**entry, "format": "FORMAT_NONE"} for entry in _tensors(inputs, optional=len(inputs) > 1)],
        "output": _tensors(model.get_output_types(), optional=False),
        "instance_group": [{"name": model.name, "kind": kind, "count": 1}],
        "dynamic_batching": {
            "preferred_batch_size": [settings.max_batch_size],
            "max_queue_delay_microseconds": round(settings.max_batch_delay_ms * 1000),
        },
        "parameters": {"max_queries_per_request": {"string_value": str(settings.limits.max_images)}},
    }


def model_config_message(model: Any) -> Any:
    """The same configuration as the gRPC `ModelConfigResponse`."""
    config = model_config(model)
    message = triton_messages.ModelConfigResponse()
    config_message = message.config
    config_message.name, config_message.platform, config_message.backend = config["name"], "", BACKEND
    config_message.max_batch_size = config["max_batch_size"]
    for entry in config["input"]:
        config_message.input.add(
            name=entry["name"],
            data_type=triton_messages.DATA_TYPES[_wire_type(entry)],
            dims=entry["dims"],
            optional=entry.get("optional", False),
        )
    for entry in config["output"]:
        config_message.output.add(
            name=entry["name"], data_type=triton_messages.DATA_TYPES[_wire_type(entry)], dims=entry["dims"]
        )
    for group in config["instance_group"]:
        config_message.instance_group.add(
            name=group["name"], kind=triton_messages.INSTANCE_KINDS[group["kind"]], count=group["count"]
        )
    json_format.ParseDict(config["dynamic_batching"], config_message.dynamic_batching)
    for name, value in config["parameters"].items():
        config_message.parameters[name].string_value = value["string_value"]
    return message


def _wire_type(entry: dict[str, Any]) -> str:
    name = entry["data_type"].removeprefix("TYPE_")
    return "BYTES" if name == "STRING" else name
