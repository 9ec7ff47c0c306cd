"""KServe's data plane with readiness that says why, drain, model versions honoured, this server's metadata, Triton's
model configuration and statistics, and request parameters checked against what each model declares."""

from typing import Any

from kserve import errors as kserve_errors
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.infer_type import InferRequest

from predictor import __version__
from predictor.errors import InvalidRequest, ModelUnavailable, ModelVersionNotFound, UnknownModel
from predictor.serving.kserve import model_config
from predictor.serving.kserve.parameters import check_request_parameters, request_parameters
from predictor.serving.kserve.rest import INFERENCE_HEADER_LENGTH, infer_request_from_binary

SERVER_NAME = "image-search"
EXTENSIONS = ["binary_tensor_data", "parameters", "model_configuration", "statistics"]


def check_version(model: Any, version: str | None) -> None:
    served = getattr(model, "version", None)
    if version and version != served:
        raise ModelVersionNotFound(
            f"model {model.name} has no version {version!r}; this server runs version {served!r}"
        )


class ImageDataPlane(DataPlane):
    def __init__(self, model_registry: Any, drain: Any = None) -> None:
        """`drain` (predictor/serving/drain.py) turns readiness false while the server shuts down."""
        super().__init__(model_registry=model_registry)
        self.drain = drain

    def _draining(self) -> bool:
        return self.drain is not None and self.drain.draining

    def get_model_from_registry(self, name: str) -> Any:
        model = self.model_registry.get_model(name)
        if model is None:
            raise UnknownModel(
                f"model {name!r} is not served here; this server serves {sorted(self.model_registry.get_models())}"
            )
        return model

    def decode(self, body, headers, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN201 - KServe's signature
        try:
            return super().decode(body, headers, *args, **kwargs)
        except kserve_errors.InvalidInput as error:
            raise InvalidRequest(str(error)) from None

    def metadata(self) -> dict:
        return {"name": SERVER_NAME, "version": __version__, "extensions": list(EXTENSIONS)}

    def model_config(self, model_name: str, model_version: str | None = None) -> dict:
        """Triton's model configuration extension."""
        model = self.get_model_from_registry(model_name)
        check_version(model, model_version)
        return model_config.model_config(model)

    def model_statistics(self, model_name: str = "", model_version: str | None = None) -> dict:
        """Triton's statistics extension: one model's, or every model's when `model_name` is empty."""
        if model_name:
            model = self.get_model_from_registry(model_name)
            check_version(model, model_version)
            models = [model]
        else:
            models = list(self.model_registry.get_models().values())
        return {"model_stats": [model.statistics.snapshot() for model in models if hasattr(model, "statistics")]}

    async def model_metadata(self, model_name: str, model_version: str | None = None) -> dict:
        """KServe's metadata, plus the version served and what the model declares about its optional inputs."""
        model = self.get_model_from_registry(model_name)
        check_version(model, model_version)
        described = await super().model_metadata(model_name)
        versions = [model.version] if getattr(model, "version", None) else None
        parameters = model.metadata_parameters() if hasattr(model, "metadata_parameters") else None
        return {**described, "versions": versions, **({"parameters": parameters} if parameters else {})}

    async def model_ready(self, model_name: str, disable_predictor_health_check: bool = False) -> bool:
        """Like KServe's, but a model that is not ready says why (e.g. its collection is still being indexed)."""
        # KServe 0.21's inference routes ask model_ready(name, True) before every request, its readiness routes ask
        # model_ready(name): a draining server still serves, but tells probes it is going away.
        if self._draining() and not disable_predictor_health_check:
            raise ModelUnavailable(f"model {model_name} is not ready: the server is shutting down")
        self.get_model_from_registry(model_name)
        ready = await super().model_ready(model_name, disable_predictor_health_check)
        reason = getattr(self.model_registry.get_model(model_name), "not_ready_reason", None)
        if not ready and reason:
            raise ModelUnavailable(f"model {model_name} is not ready: {reason}")
        return ready

    async def ready(self) -> bool:
        """Server readiness is every model's readiness (KServe's default answers True once the port is open)."""
        if self._draining():
            return False
        models = self.model_registry.get_models()
        for name in models:
            if not await self.model_registry.is_model_ready(name):
                return False
        return bool(models)

    async def infer(self, model_name: str, request: Any, headers: dict[str, str] | None = None) -> tuple[Any, dict]:
        """Refuse a pinned version this server does not run, and a model that is not ready, before calling it."""
        model = self.get_model_from_registry(model_name)
        check_version(model, getattr(request, "model_version", None))
        if isinstance(request, InferRequest):
            check_request_parameters(model, request_parameters(request))
        elif isinstance(request, dict):
            check_request_parameters(model, request.get("parameters"))
        if not await self.model_ready(model_name, disable_predictor_health_check=True):
            raise ModelUnavailable(f"model {model_name} is not ready")
        return await model(request, headers=headers)

    def decode_inference_request(self, body, headers, model_name):  # noqa: ANN001, ANN201 - KServe's signature
        if isinstance(body, bytes):
            # Without the header the whole body is the JSON request (clients such as tritonclient send JSON-only
            # requests without a JSON content type).
            try:
                json_length = int(headers.get(INFERENCE_HEADER_LENGTH, len(body)))
            except ValueError:
                raise InvalidRequest(f"{INFERENCE_HEADER_LENGTH} must be an integer") from None
            return infer_request_from_binary(body, json_length, model_name)
        return super().decode_inference_request(body, headers, model_name)
