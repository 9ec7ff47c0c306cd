"""The protobuf messages of Triton's model configuration and statistics extensions, built at import time.

KServe's copy of the Open Inference Protocol has neither `ModelConfig` nor `ModelStatistics`, and Triton's own
generated code (tritonclient) is a client dependency the server does not carry. Only the fields this server fills are
declared; their numbers and wire types are Triton's (`model_config.proto`, `grpc_service.proto`), so tritonclient,
perf_analyzer and Model Analyzer read these messages as Triton's. Enums travel as varints, declared here as int32.

The package is not Triton's `inference`, so these messages can share a process with tritonclient's or KServe's.
"""

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

__all__ = [
    "DATA_TYPES",
    "INSTANCE_KINDS",
    "ModelConfigRequest",
    "ModelConfigResponse",
    "ModelStatisticsRequest",
    "ModelStatisticsResponse",
]

_PACKAGE = "image_search.triton"
_F = descriptor_pb2.FieldDescriptorProto
_SCALARS = {"string": _F.TYPE_STRING, "int32": _F.TYPE_INT32, "int64": _F.TYPE_INT64, "uint64": _F.TYPE_UINT64}
_SCALARS["bool"] = _F.TYPE_BOOL

# Triton's DataType enum, by the protocol's datatype names.
DATA_TYPES = {
    "BOOL": 1, "UINT8": 2, "UINT16": 3, "UINT32": 4, "UINT64": 5, "INT8": 6, "INT16": 7, "INT32": 8, "INT64": 9,
    "FP16": 10, "FP32": 11, "FP64": 12, "BYTES": 13, "BF16": 14,
}  # fmt: skip
INSTANCE_KINDS = {"KIND_AUTO": 0, "KIND_GPU": 1, "KIND_CPU": 2, "KIND_MODEL": 3}

# message -> [(field, number, type, repeated)]; a type that is not a scalar names another message here.
_MESSAGES: dict[str, list[tuple[str, int, str, bool]]] = {
    "ModelInput": [
        ("name", 1, "string", False),
        ("data_type", 2, "int32", False),
        ("dims", 4, "int64", True),
        ("optional", 8, "bool", False),
    ],
    "ModelOutput": [("name", 1, "string", False), ("data_type", 2, "int32", False), ("dims", 3, "int64", True)],
    "ModelDynamicBatching": [
        ("preferred_batch_size", 1, "int32", True),
        ("max_queue_delay_microseconds", 2, "uint64", False),
    ],
    "ModelInstanceGroup": [("name", 1, "string", False), ("count", 2, "int32", False), ("kind", 4, "int32", False)],
    "ModelParameter": [("string_value", 1, "string", False)],
    "ModelConfig": [
        ("name", 1, "string", False),
        ("platform", 2, "string", False),
        ("max_batch_size", 4, "int32", False),
        ("input", 5, "ModelInput", True),
        ("output", 6, "ModelOutput", True),
        ("instance_group", 7, "ModelInstanceGroup", True),
        ("dynamic_batching", 11, "ModelDynamicBatching", False),
        ("parameters", 14, "map<ModelParameter>", True),
        ("backend", 17, "string", False),
    ],
    "ModelConfigRequest": [("name", 1, "string", False), ("version", 2, "string", False)],
    "ModelConfigResponse": [("config", 1, "ModelConfig", False)],
    "StatisticDuration": [("count", 1, "uint64", False), ("ns", 2, "uint64", False)],
    "InferStatistics": [
        (name, number, "StatisticDuration", False)
        for number, name in enumerate(
            ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output"), start=1
        )
    ],
    "InferBatchStatistics": [
        ("batch_size", 1, "uint64", False),
        ("compute_input", 2, "StatisticDuration", False),
        ("compute_infer", 3, "StatisticDuration", False),
        ("compute_output", 4, "StatisticDuration", False),
    ],
    "ModelStatistics": [
        ("name", 1, "string", False),
        ("version", 2, "string", False),
        ("last_inference", 3, "uint64", False),
        ("inference_count", 4, "uint64", False),
        ("execution_count", 5, "uint64", False),
        ("inference_stats", 6, "InferStatistics", False),
        ("batch_stats", 7, "InferBatchStatistics", True),
    ],
    "ModelStatisticsRequest": [("name", 1, "string", False), ("version", 2, "string", False)],
    "ModelStatisticsResponse": [("model_stats", 1, "ModelStatistics", True)],
}


def _build() -> dict[str, Any]:
    file = descriptor_pb2.FileDescriptorProto(name="image_search/triton_extensions.proto", package=_PACKAGE)
    file.syntax = "proto3"
    for message_name, fields in _MESSAGES.items():
        message = file.message_type.add(name=message_name)
        for name, number, kind, repeated in fields:
            field = message.field.add(name=name, number=number, json_name=name)
            field.label = _F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL
            if kind in _SCALARS:
                field.type = _SCALARS[kind]
            elif kind.startswith("map<"):
                entry = message.nested_type.add(name=f"{name.title()}Entry")
                entry.options.map_entry = True
                entry.field.add(name="key", number=1, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL, json_name="key")
                value_type = f".{_PACKAGE}.{kind[4:-1]}"
                entry.field.add(
                    name="value", number=2, type=_F.TYPE_MESSAGE, type_name=value_type, label=_F.LABEL_OPTIONAL
                )
                field.type, field.type_name = _F.TYPE_MESSAGE, f".{_PACKAGE}.{message_name}.{entry.name}"
            else:
                field.type, field.type_name = _F.TYPE_MESSAGE, f".{_PACKAGE}.{kind}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{name}")) for name in _MESSAGES
    }


_CLASSES = _build()
ModelConfigRequest = _CLASSES["ModelConfigRequest"]
ModelConfigResponse = _CLASSES["ModelConfigResponse"]
ModelStatisticsRequest = _CLASSES["ModelStatisticsRequest"]
ModelStatisticsResponse = _CLASSES["ModelStatisticsResponse"]
