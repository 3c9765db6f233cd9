"""The HTTP API (FastAPI). The OpenAPI schema is at /openapi.json when ``server.docs`` is on (API key needed).

    POST   /v1/enroll               multipart: user_id, photos (1..max_photos files), runtime, precision, replace
    GET    /v1/users/{user_id}        enrollment record (descriptor, f version, threshold, ...)
    GET    /v1/users/{user_id}/model  the signed artifact (.hva)
    DELETE /v1/users/{user_id}
    POST   /v1/users/{user_id}/unlock multipart: photo -> the on-device check on the user's signed artifact
    POST   /v1/identify             multipart: photo, top_k -> enrolled users by descriptor similarity
    GET    /v1/signing-key          the public key devices must trust
    GET    /healthz                 no auth
    GET    /                        the browser page (enroll / try to unlock; static files under /static)
    GET    /openapi.json            only with server.docs: true (there is no /docs page: Swagger UI needs a CDN)

HEAD works on every GET route (same status and headers, no body).

``unlock`` runs exactly what ``hyperver unlock`` runs on a device (hyperver.device.runtime): the
stored artifact's signature must verify with this server's key and its f version must be in
``device.accepted_f_versions``; the photo's single face is aligned and scored by f. It answers
``{"user_id", "decision": "unlock"|"deny", "unlock", "score", "threshold", "threshold_far", "unlock_far",
"runtime", "precision", "f_version", "ms"}`` (409 model_rejected when the stored artifact fails the device's
checks). ``unlock_far`` is the browser page's more lenient decision (``server.unlock_far``, FAR 1e-2 by
default): ``{"far", "threshold", "unlock", "decision"}`` at the generator's stored threshold for that FAR,
``{"far", "threshold": null, "note"}`` when it stores none, null when the setting is off; /healthz says which.

Every route but /healthz and the page needs ``X-API-Key``. Errors are ``{"error": code, "detail": message}``:
400 bad user id or a multipart body without its closing boundary, 401 missing/wrong key, 404 unknown
user, 408 request body not received within ``server.body_timeout_s``, 409 already enrolled (policy: an
enrollment never silently overwrites another; send ``replace=true`` to re-enroll), 413 request or
image too large, 415 not an image, 422 no face / several faces / truncated image / bad form, 503 busy
(no photo slot free within ``server.queue_timeout_s``; ``Retry-After`` says when to try again) or
registry_unavailable (the registry's database cannot be reached; /healthz then says "degraded").
A client that disconnects mid-request is logged as one line.
"""
from __future__ import annotations

import hmac
import logging
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Callable

import anyio
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import APIKeyHeader
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hyperver.errors import HyperVerError

from .errors import ApiError, from_hyperver
from .multipart import parse_form
from .service import EnrollmentService
from .settings import USER_ID

log = logging.getLogger("enroll_server")
STATIC = Path(__file__).resolve().parent / "static"
# The page loads nothing from elsewhere; camera frames and previews are blob: URLs.
PAGE_HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; "
                                           "object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
                "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"}
API_KEY = APIKeyHeader(name="X-API-Key", auto_error=False, description="one of the server's API keys")
RUNTIMES, PRECISIONS = ["tflite", "onnx"], ["fp32", "fp16", "int8"]
TRUE, FALSE = {"1", "true", "yes", "on"}, {"", "0", "false", "no", "off"}


def _error(status: int, code: str, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


class ClientGone(Exception):
    """The client disconnected before its request was read: logged as one line, nothing to answer."""


def _form_schema(props: dict[str, Any], required: list[str]) -> dict[str, Any]:
    """OpenAPI request body for routes that parse their multipart body themselves (in memory)."""
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "properties": props, "required": required}}}}}


ENROLL_FORM = _form_schema({
    "user_id": {"type": "string", "pattern": f"^{USER_ID.pattern}$"},   # JSON Schema (ECMA): '$' is the end
    "photos": {"type": "array", "items": {"type": "string", "format": "binary"},
               "description": "one or more photos, each with exactly one face"},
    "runtime": {"type": "string", "enum": RUNTIMES, "description": "artifact runtime (default: server config)"},
    "precision": {"type": "string", "enum": PRECISIONS, "description": "artifact precision (default: server config)"},
    "replace": {"type": "boolean", "default": False, "description": "replace an existing enrollment"},
}, ["user_id", "photos"])
IDENTIFY_FORM = _form_schema({
    "photo": {"type": "string", "format": "binary"},
    "top_k": {"type": "integer", "minimum": 1, "description": "matches to return (default: server.top_k)"},
}, ["photo"])
UNLOCK_FORM = _form_schema({
    "photo": {"type": "string", "format": "binary", "description": "a probe photo with exactly one face"},
}, ["photo"])


class BodyLimit:
    """ASGI middleware: a declared Content-Length over the limit is refused before anything is read."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            length = dict(scope.get("headers") or []).get(b"content-length")
            if length is not None and (not length.isdigit() or int(length) > self.limit):
                response = _error(413, "request_too_large", f"request body over {self.limit} bytes")
                return await response(scope, receive, send)
        return await self.app(scope, receive, send)


class HeadAsGet:
    """ASGI middleware: HEAD runs the GET route and drops the body, so it has GET's status and headers
    (Content-Length included). FastAPI's routes, unlike Starlette's, answer HEAD with 405."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            return await self.app(scope, receive, send)

        async def send_no_body(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        # A copy: the server keeps its own scope (method HEAD), so it also sends no body.
        return await self.app({**scope, "method": "GET"}, receive, send_no_body)


async def read_body(request: Request, limit: int, timeout_s: float | None = None) -> bytes:
    """The body, counted as it streams (chunked uploads have no Content-Length); the whole of it must
    arrive within ``timeout_s`` (a slow sender would otherwise hold a connection and its buffer for ever)."""
    chunks, size = [], 0
    try:
        with anyio.fail_after(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise ApiError(413, "request_too_large", f"request body over {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise ApiError(408, "request_timeout", f"request body not received within {timeout_s:g} s "
                                               f"({size} bytes arrived)") from None
    except ClientDisconnect:
        raise ClientGone(f"{request.method} {request.url.path!r}: the client disconnected after sending "
                         f"{size} bytes of the body") from None
    return b"".join(chunks)


def _choice(value: str | None, allowed: list[str], name: str) -> str | None:
    if value in (None, ""):
        return None
    if value not in allowed:
        raise ApiError(422, "bad_parameter", f"{name} must be one of {allowed}, got {value!r}")
    return value


def _flag(value: str | None, name: str) -> bool:
    v = (value or "").strip().lower()
    if v not in TRUE | FALSE:
        raise ApiError(422, "bad_parameter", f"{name} must be true or false, got {value!r}")
    return v in TRUE


def create_app(service: EnrollmentService) -> FastAPI:
    settings = service.settings

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        service.close()      # index snapshot; a crash instead means a rebuild at the next start

    # No Swagger UI (/docs) or ReDoc page: FastAPI's load their scripts from a CDN, which neither an
    # offline deployment nor the page's CSP allows. The schema is a route below, behind the API key.
    app = FastAPI(title="HyperVer enrollment server", version="1", lifespan=lifespan,
                  description=__doc__.split("\n\n", 1)[1], docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(BodyLimit, limit=settings.max_request_bytes)
    app.add_middleware(HeadAsGet)

    def authorised(key: str | None = Depends(API_KEY)) -> None:
        if not key or not any(hmac.compare_digest(key.encode(), k.encode()) for k in settings.api_keys):
            raise ApiError(401, "unauthorized", "missing or wrong X-API-Key header")

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        # 408: the rest of the body may still be on its way; close rather than read it as the next request.
        headers = {408: {"Connection": "close"}, 503: {"Retry-After": "5"}}.get(exc.status)
        return _error(exc.status, exc.code, exc.detail, headers)

    @app.exception_handler(ClientGone)
    @app.exception_handler(ClientDisconnect)
    async def _client_gone(request: Request, exc: Exception) -> Response:
        # Not a server fault: one log line, not a traceback. The response goes nowhere (the server drops it).
        log.info("%s", exc if isinstance(exc, ClientGone) else
                 f"{request.method} {request.url.path!r}: the client disconnected during the request")
        return Response(status_code=400)

    @app.exception_handler(HyperVerError)
    async def _hyperver_error(request: Request, exc: HyperVerError) -> JSONResponse:
        return await _api_error(request, from_hyperver(exc))   # e.g. RegistryUnavailable: 503 + Retry-After

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, "invalid_request", [{"loc": e.get("loc"), "msg": e.get("msg")} for e in exc.errors()])

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed"}
        return _error(exc.status_code, codes.get(exc.status_code, "http_error"), exc.detail, exc.headers)

    async def call(fn: Callable, *args) -> Any:
        return await run_in_threadpool(fn, *args)

    async def body(request: Request) -> bytes:
        return await read_body(request, settings.max_request_bytes, settings.body_timeout_s)

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, Any]:
        return await call(service.health)

    @app.post("/v1/enroll", tags=["users"], dependencies=[Depends(authorised)], openapi_extra=ENROLL_FORM,
              summary="enroll a user from one or more photos -> signed per-user model + descriptor")
    async def enroll(request: Request) -> dict[str, Any]:
        form = parse_form(await body(request), request.headers.get("content-type"))
        photos = form.files.get("photos", [])
        if not photos:
            raise ApiError(422, "no_photos", "send at least one photo in the 'photos' field")
        if len(photos) > settings.max_photos:
            raise ApiError(422, "too_many_photos", f"{len(photos)} photos; at most {settings.max_photos}")
        return await call(service.enroll, form.value("user_id"),
                          [(p.filename or f"photo{i + 1}", bytes(p.data)) for i, p in enumerate(photos)],
                          _choice(form.value("runtime"), RUNTIMES, "runtime"),
                          _choice(form.value("precision"), PRECISIONS, "precision"),
                          _flag(form.value("replace"), "replace"))

    @app.post("/v1/identify", tags=["users"], dependencies=[Depends(authorised)], openapi_extra=IDENTIFY_FORM,
              summary="top-k enrolled users for a photo (descriptor cosine similarity)")
    async def identify(request: Request) -> dict[str, Any]:
        form = parse_form(await body(request), request.headers.get("content-type"))
        photos = form.files.get("photo", [])
        if len(photos) != 1:
            raise ApiError(422, "no_photos" if not photos else "too_many_photos", "send exactly one 'photo' file")
        raw_k = form.value("top_k")
        try:
            k = settings.top_k if raw_k in (None, "") else int(raw_k)
        except ValueError:
            raise ApiError(422, "bad_parameter", f"top_k must be an integer, got {raw_k!r}") from None
        if not 1 <= k <= settings.max_top_k:
            raise ApiError(422, "bad_parameter", f"top_k must be in 1..{settings.max_top_k}, got {k}")
        return await call(service.identify, bytes(photos[0].data), k)

    @app.post("/v1/users/{user_id}/unlock", tags=["users"], dependencies=[Depends(authorised)],
              openapi_extra=UNLOCK_FORM,
              summary="try to unlock: the on-device check (signed artifact + aligned probe face -> score vs threshold)")
    async def unlock(user_id: str, request: Request) -> dict[str, Any]:
        form = parse_form(await body(request), request.headers.get("content-type"))
        photos = form.files.get("photo", [])
        if len(photos) != 1:
            raise ApiError(422, "no_photos" if not photos else "too_many_photos", "send exactly one 'photo' file")
        return await call(service.unlock, user_id, bytes(photos[0].data))

    @app.get("/v1/users/{user_id}", tags=["users"], dependencies=[Depends(authorised)])
    async def get_user(user_id: str) -> dict[str, Any]:
        return await call(service.user, user_id)

    @app.get("/v1/users/{user_id}/model", tags=["users"], dependencies=[Depends(authorised)],
             response_class=Response, responses={200: {"content": {"application/octet-stream": {}}}},
             summary="the user's signed artifact (.hva)")
    async def get_model(user_id: str) -> Response:
        model, info = await call(service.model, user_id)
        return Response(model, media_type="application/octet-stream", headers={
            "Content-Disposition": f'attachment; filename="{user_id}.hva"', "ETag": f'"{info["model_sha256"]}"',
            "X-HyperVer-F-Version": info["f_version"], "X-HyperVer-Threshold": repr(info["threshold"]),
            "X-HyperVer-Runtime": info["runtime"], "X-HyperVer-Precision": info["precision"]})

    @app.delete("/v1/users/{user_id}", tags=["users"], dependencies=[Depends(authorised)])
    async def delete_user(user_id: str) -> dict[str, Any]:
        return await call(service.delete, user_id)

    @app.get("/v1/signing-key", tags=["ops"], dependencies=[Depends(authorised)],
             summary="the Ed25519 public key devices must trust (device.trusted_keys / HYPERVER_TRUSTED_KEYS)")
    async def signing_key() -> dict[str, str]:
        return {"public_key": service.builder.signer.public_b64, "key_id": service.builder.signer.key_id,
                "f_version": service.spec.version}

    # The browser page: static HTML + JS; the API key is typed into the page, not needed to load it.
    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html", headers=PAGE_HEADERS)

    if settings.docs:
        @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(authorised)])
        async def openapi() -> JSONResponse:
            return JSONResponse(app.openapi())

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
