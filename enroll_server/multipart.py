"""multipart/form-data parsed in memory (Starlette spools uploads over 1 MB to a temporary file;
enrollment photos must never touch the disk)."""
from __future__ import annotations

from dataclasses import dataclass, field

from python_multipart.multipart import MultipartParser, parse_options_header

from .errors import ApiError


@dataclass
class Part:
    name: str
    filename: str | None
    data: bytearray = field(default_factory=bytearray)


@dataclass
class Form:
    fields: dict[str, list[str]]
    files: dict[str, list[Part]]

    def value(self, name: str, default: str | None = None) -> str | None:
        values = self.fields.get(name)
        return values[-1] if values else default


def parse_form(body: bytes, content_type: str | None, max_parts: int = 64) -> Form:
    """Parse a multipart body (already size-limited by the caller); 422 for anything malformed, 400 for a
    body without its closing boundary (a truncated upload)."""
    ctype, params = parse_options_header((content_type or "").encode("latin-1"))
    if ctype != b"multipart/form-data" or not params.get(b"boundary"):
        raise ApiError(422, "invalid_request", "send the request as multipart/form-data")
    parts: list[Part] = []
    state: dict = {"field": b"", "value": b"", "headers": {}, "closed": False}

    def on_part_begin() -> None:
        state["headers"] = {}

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["value"] += data[start:end]

    def on_header_end() -> None:
        state["headers"][state["field"].lower()] = state["value"]
        state["field"], state["value"] = b"", b""

    def on_headers_finished() -> None:
        _, disp = parse_options_header(state["headers"].get(b"content-disposition", b""))
        if b"name" not in disp:
            raise ApiError(422, "invalid_request", "a form part has no name")
        if len(parts) >= max_parts:
            raise ApiError(422, "invalid_request", f"more than {max_parts} form parts")
        filename = disp.get(b"filename")
        parts.append(Part(disp[b"name"].decode("utf-8", "replace"),
                          None if filename is None else filename.decode("utf-8", "replace")))

    def on_part_data(data: bytes, start: int, end: int) -> None:
        parts[-1].data += data[start:end]

    def on_end() -> None:   # python-multipart calls this only on the closing boundary '--BOUNDARY--'
        state["closed"] = True

    parser = MultipartParser(params[b"boundary"], {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_header_end": on_header_end, "on_headers_finished": on_headers_finished, "on_part_data": on_part_data,
        "on_end": on_end})
    try:
        parser.write(body)
        parser.finalize()
    except ApiError:
        raise
    except Exception as exc:  # python-multipart raises its own error types for malformed bodies
        raise ApiError(422, "invalid_request", f"malformed multipart body: {exc}") from None
    # finalize() does not check this: without the check a cut-off upload would pass as a shorter last part.
    if not state["closed"]:
        raise ApiError(400, "incomplete_multipart", "incomplete multipart body: it ends without its closing "
                                                    "boundary ('--' + boundary + '--'); send the whole form")
    fields: dict[str, list[str]] = {}
    files: dict[str, list[Part]] = {}
    for p in parts:
        if p.filename is None:
            fields.setdefault(p.name, []).append(bytes(p.data).decode("utf-8", "replace"))
        else:
            files.setdefault(p.name, []).append(p)
    return Form(fields, files)
