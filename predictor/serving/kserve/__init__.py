"""Every place this project works around or extends KServe's own behaviour, written for KServe 0.21.0.

- **Errors**: one mapping for every transport. A `predictor.errors.ServiceError` answers REST (V1 and V2) with its
  `status.http` and `{"error": message}`, and gRPC with its `status.grpc` and the message. KServe's own gRPC
  interceptor turns any exception it does not know into `INTERNAL "Internal server error"`, and it knows only
  `grpc_interceptor`'s `GrpcException` of the kinds a model may raise, so errors become one at the servicer.
  KServe's own client errors (a body that is not JSON, an unknown model, a body FastAPI's schema refuses) become
  typed errors too.
- **Error logs**: KServe logs every error it answers at ERROR with a traceback, a 400 or a readiness 503 alike. Here a
  refused request is one line of the request log (`image_search.requests`, at INFO for a client's error, WARNING for
  the server's), without a traceback, and a KServe line about an error it answered loses its traceback too.
- **Deadlines**: a gRPC client's deadline is recorded for the request (serving/deadlines.py), so the server gives up
  when the client has.
- **gRPC server**: KServe reads the gRPC message limits from its module-level parsed arguments and keeps the server
  it starts private (`ModelServer._grpc_server`); `follow_request_limit_on_grpc` and `grpc_stopper` reach them.
- **Binary BYTES**: KServe's parser of the REST binary data extension decodes BYTES elements as UTF-8 text, which breaks
  on encoded image files; `infer_request_from_binary` keeps them as bytes.
- **Float parameters over gRPC**: KServe's copy of the protocol lacks `InferParameter.double_param`, so a float such
  as `min_score=0.5` from tritonclient arrives as an unknown protobuf field; `request_parameters` reads it.
- **Readiness**: KServe's server readiness is True once the port is open, and its model readiness gives no reason;
  here the server is ready when every model is, and an unready model says why. KServe's gRPC `ModelInfer` calls
  `load()` on an unready model, on the event loop; here it answers UNAVAILABLE instead.
- **Registering before start**: `ModelServer.start` registers only models that are ready, and the search model may
  still be waiting for its index.
- **Versions**: KServe answers 501 on every `/versions/<v>/` path and ignores the version in gRPC requests; here the
  version being served works on both, any other is 404 / NOT_FOUND, and model metadata lists the version.
- **Server metadata** names this project and its version, not only KServe, and the extensions served.
- **Triton's model configuration and statistics extensions** (which perf_analyzer and Model Analyzer ask for first):
  `GET /v2/models/<m>[/versions/<v>]/config` and `/stats`, and gRPC `ModelConfig` and `ModelStatistics`, which
  KServe's servicer lacks; `grpc_service.register_triton_methods` adds them to KServe's gRPC service.
- **Error bodies**: every REST error is `{"error": message}`, unknown routes and methods included (FastAPI answers
  `{"detail": ...}`); an unknown model is 404 before its body is looked at.
- **Inference responses**: KServe's REST infer route writes absent `parameters` as `null`, which the protocol does not
  allow; the V2 infer route here sends what `to_rest` made.
- **Request parameters** that neither the model nor the protocol knows are refused (`parameters`).

Models take part by duck typing: `version` (the served model version), `not_ready_reason`,
`metadata_parameters()` (what the model metadata declares about optional inputs and parameters, and so which
parameters a request may send), `settings` and `statistics` (for the Triton extensions).

The modules: `errors` (the mapping, the log filter), `rest` (binary requests, versioned paths, the infer, config and
stats routes), `data_plane` (readiness, versions, metadata, parameters), `grpc_service` (the servicer, Triton's extra
methods, message limits, stopping), `parameters` (request parameters: those KServe's protos lack, and which a model
accepts), `model_config` and `triton_messages` (Triton's configuration, and the protobuf messages of both
extensions).

tests/unit/test_kserve_compat.py drives KServe's real REST app and gRPC server in process through these, so a KServe
upgrade that changes any of them fails a test; `KSERVE_VERSION` is checked there too.
"""

import logging
from importlib import metadata as package_metadata
from typing import Any

from kserve import ModelServer
from kserve.protocol.grpc import server as kserve_grpc_server

from predictor.serving.kserve import data_plane, errors, grpc_service, rest

logger = logging.getLogger(__name__)

KSERVE_VERSION = "0.21.0"


def install(server: ModelServer, models: list[Any], drain: Any = None) -> None:
    """Wire every workaround into `server` before `server.start(models)`; `drain` as for `ImageDataPlane`."""
    installed = package_metadata.version("kserve")
    if installed != KSERVE_VERSION:
        logger.warning(
            "KServe %s is installed; the workarounds in %s were written for %s", installed, __name__, KSERVE_VERSION
        )
    kserve_logger = logging.getLogger("kserve")
    if not any(isinstance(f, errors.AnsweredErrorsWithoutTracebacks) for f in kserve_logger.filters):
        kserve_logger.addFilter(errors.AnsweredErrorsWithoutTracebacks())
    dataplane = data_plane.ImageDataPlane(model_registry=server.registered_models, drain=drain)
    server.dataplane = dataplane
    rest.register_rest(server, dataplane)
    # GRPCServer.start builds its servicer from this module attribute, and adds it with its module's function.
    kserve_grpc_server.InferenceServicer = grpc_service.ImageSearchServicer
    grpc_service.register_triton_methods()
    register_before_start(server, models)


def register_before_start(server: ModelServer, models: list[Any]) -> None:
    """KServe registers only models that are ready at start; the search model may still be waiting for its index."""
    for model in models:
        server.register_model(model)
