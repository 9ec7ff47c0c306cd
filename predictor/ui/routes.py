"""The search page's routes on the REST app: the page and its files, a read-only summary, thumbnails and copies by id.

The page searches through the model's own V2 endpoint (`/v2/models/image-search/infer`), as any client does; the only
routes added here are the ones a V2 server has no answer for:

- `GET /ui/`: the page; `/ui/static/<file>`: its script and style sheet, from a fixed list (never a file lookup).
- `GET /ui/info[?namespace=NS]`: the collection the model searches, the model that built it, and how many images it
  and the namespace hold, which V2 model metadata cannot carry.
- `GET /ui/thumbnail?id=ID[&namespace=NS]`: a thumbnail of an image in the index (see thumbnails.py); 404 for an id
  the namespace does not hold. The namespace follows the search API's rule, `--namespace-header` included.
- `GET /ui/duplicates?id=ID[&namespace=NS][&filter=F]`: the copies of an image in the index, as `image-search
  duplicates` finds them (by their copy signatures, which a V2 search does not read); 404 for an id the namespace does
  not hold, 400 for a bad filter.
"""

import asyncio
import contextlib
import dataclasses
import hashlib
from importlib import resources
from typing import Any, Protocol

from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from predictor.errors import ImageNotFound, ModelUnavailable, ThumbnailNotFound
from predictor.imaging.decoding import ImageLimits
from predictor.index.collection import ImageIndex
from predictor.index.duplicates import DEFAULT_THRESHOLD, copies_of
from predictor.index.filters import validate_filter
from predictor.index.schema import ID_MAX_LENGTH
from predictor.index.search_options import SearchSettings
from predictor.protocol.search import request_namespace
from predictor.serving import deadlines
from predictor.serving.image_preparation import decode_executor
from predictor.ui.settings import UiSettings
from predictor.ui.thumbnails import Elsewhere, InStore, Thumbnails, Unreadable

__all__ = ["PAGE_PATH", "SearchPage", "install"]

PAGE_PATH = "/ui/"
STATIC_FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
# Thumbnails follow their file (the ETag changes with it); an hour spares the server the page's repeat visits.
THUMBNAIL_CACHE_CONTROL = "private, max-age=3600"


class SearchModel(Protocol):
    """What the page needs of the search model (predictor/models/image_search.py)."""

    name: str
    version: str
    index: ImageIndex | None
    not_ready_reason: str | None


@dataclasses.dataclass(frozen=True)
class StaticFile:
    body: bytes
    content_type: str
    etag: str


def _static_files() -> dict[str, StaticFile]:
    folder = resources.files("predictor.ui") / "static"
    files = {}
    for name, content_type in STATIC_FILES.items():
        body = (folder / name).read_bytes()
        files[name] = StaticFile(body, content_type, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')
    return files


def _matches(request: Request, etag: str) -> bool:
    asked = request.headers.get("if-none-match", "")
    return etag in [tag.strip().removeprefix("W/") for tag in asked.split(",")]


class SearchPage:
    def __init__(
        self,
        model: SearchModel,
        ui: UiSettings,
        search: SearchSettings,
        thumbnails: Thumbnails,
        request_timeout_s: float | None = None,
    ) -> None:
        self.model = model
        # The page's reads of Milvus end by the same timeout as searches, so a stalled Milvus answers 504 here too.
        self.request_timeout_s = request_timeout_s
        self.ui = ui
        self.search = search
        self.thumbnails = thumbnails
        self.files = _static_files()
        # Everything the page loads comes from this server, but thumbnails that a base URL sends elsewhere (and the
        # preview of the photo being searched with, a blob: URL).
        image_sources = " ".join(["'self'", "blob:", *sorted({base.origin for base in ui.base_urls if base.origin})])
        self.content_security_policy = (
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
            f"img-src {image_sources}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        )

    def _vary(self) -> dict[str, str]:
        """With a namespace header, one URL shows each tenant its own images: caches must tell them apart."""
        return {"Vary": self.search.namespace_header} if self.search.namespace_header else {}

    def _namespace(self, request: Request, asked: str | None) -> str:
        return request_namespace({"namespace": asked} if asked else {}, request.headers, self.search)

    def _deadline(self) -> contextlib.AbstractAsyncContextManager[None]:
        if self.request_timeout_s is None:
            return contextlib.nullcontext()
        return deadlines.within(self.request_timeout_s)

    def _index(self) -> ImageIndex:
        index = self.model.index
        if index is None:
            raise ModelUnavailable(f"model {self.model.name} is not ready: {self.model.not_ready_reason}")
        return index

    def static(self, request: Request, name: str) -> Response:
        file = self.files.get(name)
        if file is None:
            return JSONResponse({"error": f"the search page has no file {name!r}"}, status_code=404)
        headers = {"ETag": file.etag, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
        if name == "index.html":
            headers |= {"Content-Security-Policy": self.content_security_policy, "Referrer-Policy": "no-referrer"}
        if _matches(request, file.etag):
            return Response(status_code=304, headers=headers)
        return Response(file.body, media_type=file.content_type, headers=headers)

    async def info(self, request: Request, namespace: str | None = None) -> JSONResponse:
        chosen = self._namespace(request, namespace)
        index = self._index()

        def read() -> dict[str, Any]:
            summary = index.summary()
            return {
                "model": self.model.name,
                "version": self.model.version,
                "embedding_model": None if summary.model is None else dataclasses.asdict(summary.model),
                "collection": summary.collection,
                "images": summary.images,
                "namespace": chosen,
                "namespace_images": index.count(chosen),
                "namespace_header": self.search.namespace_header,
            }

        async with self._deadline():
            body = await asyncio.to_thread(read)
        return JSONResponse(body, headers={"Cache-Control": "no-store", **self._vary()})

    async def duplicates(
        self, request: Request, image_id: str, namespace: str | None, expression: str | None
    ) -> JSONResponse:
        chosen = self._namespace(request, namespace)
        index = self._index()
        scope = validate_filter(expression) if expression else None
        missing = ImageNotFound(f"namespace {chosen!r} holds no image with this id")
        if not image_id or len(image_id) > ID_MAX_LENGTH:
            raise missing
        async with self._deadline():
            copies = await asyncio.to_thread(
                copies_of, index, chosen, image_id, scope, DEFAULT_THRESHOLD, deadlines.remaining_s()
            )
        if copies is None:
            raise missing
        hits = [{"id": hit.id, "score": hit.score, "uri": hit.uri, "metadata": hit.metadata} for hit in copies]
        return JSONResponse({"hits": hits}, headers={"Cache-Control": "no-store", **self._vary()})

    async def thumbnail(self, request: Request, image_id: str, namespace: str | None) -> Response:
        chosen = self._namespace(request, namespace)
        index = self._index()
        missing = ThumbnailNotFound(f"namespace {chosen!r} holds no image with this id")
        if not image_id or len(image_id) > ID_MAX_LENGTH:
            raise missing
        async with self._deadline():
            image = await asyncio.to_thread(index.get, chosen, image_id, deadlines.remaining_s())
        if image is None:
            raise missing
        headers = {"Cache-Control": THUMBNAIL_CACHE_CONTROL, **self._vary()}
        where = self.thumbnails.locate(image)
        if isinstance(where, Elsewhere):
            return RedirectResponse(where.url, status_code=307, headers=headers)
        if isinstance(where, Unreadable):
            raise ThumbnailNotFound(where.reason)
        if isinstance(where, InStore):
            etag = self.thumbnails.object_etag(image)
            headers |= {"ETag": etag, "X-Content-Type-Options": "nosniff"}
            if _matches(request, etag):
                return Response(status_code=304, headers=headers)
            rendered = await self.thumbnails.render_object(where, etag)
            return Response(rendered.body, media_type=rendered.content_type, headers=headers)
        etag = await self.thumbnails.etag(where)
        headers |= {"ETag": etag, "X-Content-Type-Options": "nosniff"}
        if _matches(request, etag):
            return Response(status_code=304, headers=headers)
        rendered = await self.thumbnails.render(where, etag)
        return Response(rendered.body, media_type=rendered.content_type, headers=headers)

    def register(self, app: FastAPI) -> None:
        def to_page() -> RedirectResponse:
            # Relative, so the page also works behind a proxy that serves it under a path prefix.
            return RedirectResponse("ui/", status_code=307)

        def page(request: Request) -> Response:
            return self.static(request, "index.html")

        def static(request: Request, name: str) -> Response:
            return self.static(request, name)

        async def info(request: Request, namespace: str | None = None) -> JSONResponse:
            return await self.info(request, namespace)

        async def thumbnail(
            request: Request, image_id: str = Query("", alias="id"), namespace: str | None = None
        ) -> Response:
            return await self.thumbnail(request, image_id, namespace)

        async def duplicates(
            request: Request,
            image_id: str = Query("", alias="id"),
            namespace: str | None = None,
            expression: str | None = Query(None, alias="filter"),
        ) -> JSONResponse:
            return await self.duplicates(request, image_id, namespace, expression)

        for path, endpoint in (
            ("/ui", to_page),
            (PAGE_PATH, page),
            ("/ui/static/{name}", static),
            ("/ui/info", info),
            ("/ui/thumbnail", thumbnail),
            ("/ui/duplicates", duplicates),
        ):
            app.add_api_route(path, endpoint, methods=["GET"], include_in_schema=False)


def install(
    app: FastAPI,
    model: SearchModel,
    ui: UiSettings,
    search: SearchSettings,
    limits: ImageLimits,
    request_timeout_s: float | None = None,
) -> SearchPage:
    """Serve the search page on `app` (KServe's REST app) for `model`. Thumbnails decode stored files under `limits`,
    the limits of query images, in the decode threads; reads of Milvus end by `request_timeout_s`."""
    page = SearchPage(model, ui, search, Thumbnails(ui, limits, decode_executor()), request_timeout_s)
    page.register(app)
    return page
