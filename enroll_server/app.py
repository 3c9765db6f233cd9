"""The HTTP API (FastAPI). OpenAPI docs at /docs, the schema at /openapi.json.

    POST   /v1/enroll               multipart: user_id, photos (1..max_photos files), runtime, precision, replace
    GET    /v1/users/{user_id}        enrollment record (descriptor, f version, threshold, ...)
    GET    /v1/users/{user_id}/model  the signed artifact (.hva)
    DELETE /v1/users/{user_id}
    POST   /v1/users/{user_id}/unlock multipart: photo -> the on-device check on the user's signed artifact
    POST   /v1/identify             multipart: photo, top_k -> enrolled users by descriptor similarity
    GET    /v1/signing-key          the public key devices must trust
    GET    /healthz                 no auth
    GET    /                        the browser page (enroll / try to unlock; static files under /static)

``unlock`` runs exactly what ``hyperver unlock`` runs on a device (hyperver.device.runtime): the
stored artifact's signature must verify with this server's key and its f version must be in
``device.accepted_f_versions``; the photo's single face is aligned and scored by f. It answers
``{"user_id", "decision": "unlock"|"deny", "unlock", "score", "threshold", "runtime", "precision",
"f_version", "ms"}`` (409 model_rejected when the stored artifact fails the device's checks).

Every route but /healthz and the page needs ``X-API-Key``. Errors are ``{"error": code, "detail": message}``:
400 bad user id, 401 missing/wrong key, 404 unknown user, 409 already enrolled (policy: an
enrollment never silently overwrites another; send ``replace=true`` to re-enroll), 413 request or
image too large, 415 not an image, 422 no face / several faces / truncated image / bad form.
"""
from __future__ import annotations

import hmac
import logging
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Callable

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import APIKeyHeader
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from hyperver.errors import HyperVerError

from .errors import ApiError, from_hyperver
from .multipart import parse_form
from .service import EnrollmentService

log = logging.getLogger("enroll_server")
STATIC = Path(__file__).resolve().parent / "static"
# The page loads nothing from elsewhere; camera frames and previews are blob: URLs.
PAGE_HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; "
                                           "object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
                "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"}
API_KEY = APIKeyHeader(name="X-API-Key", auto_error=False, description="one of the server's API keys")
RUNTIMES, PRECISIONS = ["tflite", "onnx"], ["fp32", "fp16", "int8"]
TRUE, FALSE = {"1", "true", "yes", "on"}, {"", "0", "false", "no", "off"}


def _error(status: int, code: str, detail: Any) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status)


def _form_schema(props: dict[str, Any], required: list[str]) -> dict[str, Any]:
    """OpenAPI request body for routes that parse their multipart body themselves (in memory)."""
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "properties": props, "required": required}}}}}


ENROLL_FORM = _form_schema({
    "user_id": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$"},
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


async def read_body(request: Request, limit: int) -> bytes:
    """The body, counted as it streams (chunked uploads have no Content-Length)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "request_too_large", f"request body over {limit} bytes")
        chunks.append(chunk)
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

    app = FastAPI(title="HyperVer enrollment server", version="1", lifespan=lifespan,
                  description=__doc__.split("\n\n", 1)[1])
    app.add_middleware(BodyLimit, limit=settings.max_request_bytes)

    def authorised(key: str | None = Depends(API_KEY)) -> None:
        if not key or not any(hmac.compare_digest(key.encode(), k.encode()) for k in settings.api_keys):
            raise ApiError(401, "unauthorized", "missing or wrong X-API-Key header")

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.code, exc.detail)

    @app.exception_handler(HyperVerError)
    async def _hyperver_error(request: Request, exc: HyperVerError) -> JSONResponse:
        err = from_hyperver(exc)
        return _error(err.status, err.code, err.detail)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, "invalid_request", [{"loc": e.get("loc"), "msg": e.get("msg")} for e in exc.errors()])

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed"}
        return _error(exc.status_code, codes.get(exc.status_code, "http_error"), exc.detail)

    async def call(fn: Callable, *args) -> Any:
        return await run_in_threadpool(fn, *args)

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, Any]:
        return await call(service.health)

    @app.post("/v1/enroll", tags=["users"], dependencies=[Depends(authorised)], openapi_extra=ENROLL_FORM,
              summary="enroll a user from one or more photos -> signed per-user model + descriptor")
    async def enroll(request: Request) -> dict[str, Any]:
        form = parse_form(await read_body(request, settings.max_request_bytes), request.headers.get("content-type"))
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
        form = parse_form(await read_body(request, settings.max_request_bytes), request.headers.get("content-type"))
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
        form = parse_form(await read_body(request, settings.max_request_bytes), request.headers.get("content-type"))
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

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
