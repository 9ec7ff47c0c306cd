"""The composition root: the KServe ModelServer with both models on one shared backbone, KServe's fixes
(serving/kserve/), the request size limit, the drain and, with --ui, the search page (ui/). It sits above every
layer it wires."""

import argparse
import functools

from kserve import ModelServer
from kserve import model_server as kserve_model_server

from predictor import __version__
from predictor.embedding.backbone import Backbone
from predictor.embedding.model_package import resolve_spec
from predictor.index.collection import ImageIndex
from predictor.index.milvus import MilvusAccess
from predictor.index.search_options import SearchSettings
from predictor.models.image_classifier import ImageClassifierModel
from predictor.models.image_search import ImageSearchModel
from predictor.observability.metrics import set_build_info, set_serving_network, start_gpu_metrics
from predictor.serving import kserve
from predictor.serving.drain import Drain
from predictor.serving.kserve import grpc_service
from predictor.serving.request_size import RequestSizeLimit
from predictor.serving.settings import ServeSettings
from predictor.ui import routes as search_page
from predictor.ui.settings import UiSettings

SEARCH_MODEL = "image-search"
CLASSIFIER_MODEL = "image-classifier"


def build_models(settings: ServeSettings, search: SearchSettings) -> tuple[ImageSearchModel, ImageClassifierModel]:
    # A pod turns ready on the eager network; the compiled one takes over once it has passed its probe.
    backbone = Backbone(
        resolve_spec(settings.model_dir),
        settings.device,
        settings.precision,
        compile_mode=settings.compile,
        compile_in_background=True,
        forward_process=settings.forward_process,
    )
    access = MilvusAccess.of(settings.milvus)

    def open_index() -> ImageIndex:
        return ImageIndex.open_for_search(
            access,
            settings.milvus.collection,
            backbone.spec.identity,
            vector_index=settings.milvus.index,
            read_consistency=search.consistency,
        )

    return (
        ImageSearchModel(SEARCH_MODEL, backbone, open_index, settings, search),
        ImageClassifierModel(CLASSIFIER_MODEL, backbone, settings),
    )


def serve(
    settings: ServeSettings, search: SearchSettings, args: argparse.Namespace, ui: UiSettings | None = None
) -> None:
    models = build_models(settings, search)
    # Load before opening ports: a pod whose model is invalid, or whose collection belongs to another model, fails here
    # and never turns ready.
    for model in models:
        model.load()
        set_build_info(__version__, model.name, model.version, str(model.backbone.device), model.backbone.precision)
    backbone = models[0].backbone
    for model in models:
        backbone.watch_serving(functools.partial(set_serving_network, model.name, model.version))
    start_gpu_metrics(str(backbone.device))
    kserve_model_server.app.add_middleware(RequestSizeLimit, max_bytes=settings.request_bytes_limit)
    grpc_service.follow_request_limit_on_grpc(args, settings.request_bytes_limit)
    server = ModelServer(
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        workers=1,
        max_threads=args.max_threads,
        max_asyncio_workers=args.max_asyncio_workers,
        enable_grpc=args.enable_grpc,
        enable_latency_logging=False,
        grace_period=settings.shutdown_grace_s,
    )

    drain = Drain(settings.drain_s, grpc_service.grpc_stopper(server))
    kserve_model_server.app.router.on_startup.append(drain.install)
    # Once the ports are open: compiling slowed the start by seconds when it began as the model loaded.
    kserve_model_server.app.router.on_startup.append(backbone.start_background_compile)
    kserve.install(server, list(models), drain=drain)
    if ui is not None and ui.enabled:
        search_page.install(kserve_model_server.app, models[0], ui, search, settings.limits, settings.request_timeout_s)
    server.start(list(models))
