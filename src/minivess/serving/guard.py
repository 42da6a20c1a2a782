"""ASGI middleware that checks upload requests before BentoML parses them.

BentoML 1.4 answers several bad uploads with a 500 (malformed multipart, a file name too long
for a temporary file) and fetches a URL on the server when the file field holds text. This
middleware sits in front of the upload endpoints and, while the body streams in:

* refuses a body larger than the limit with 413, from ``Content-Length`` before reading a
  byte, or as soon as a chunked body passes the limit;
* refuses anything but ``multipart/form-data`` with 415;
* parses only the part headers (never the data) and refuses, with 400, a body that is not
  valid multipart, lacks the ``file`` part, carries other parts, or whose file part has no
  file name or a name that is not plain (see :func:`~minivess.serving.uploads.check_file_name`).

An accepted body is spooled (in memory up to 1 MiB, then to a temporary file) and replayed to
the application unchanged. Errors are JSON ``{"error": "[rule] message"}``.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import IO, Any

from python_multipart.multipart import MultipartParser, parse_options_header

from minivess.serving.uploads import UploadRejected, check_file_name

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

FILE_FIELD = "file"
"""Name of the multipart field that carries the volume."""
_SPOOL_BYTES = 1 << 20
_USAGE = "send one multipart file field named 'file', e.g. curl -F file=@volume.nii.gz URL"


@dataclass
class _Parts:
    """Headers of each multipart part: (field name, file name or None)."""

    parts: list[tuple[str | None, str | None]] = field(default_factory=list)
    _header: bytes = b""
    _value: bytes = b""

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": lambda: self.parts.append((None, None)),
            "on_header_field": self._on_field,
            "on_header_value": self._on_value,
            "on_header_end": self._on_header_end,
        }

    def _on_field(self, data: bytes, start: int, end: int) -> None:
        self._header += data[start:end]

    def _on_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _on_header_end(self) -> None:
        if self._header.lower() == b"content-disposition":
            _, options = parse_options_header(self._value)
            name, filename = options.get(b"name"), options.get(b"filename")
            self.parts[-1] = (
                name.decode("utf-8", "replace") if name is not None else None,
                filename.decode("utf-8", "replace") if filename is not None else None,
            )
        self._header, self._value = b"", b""


class UploadGuard:
    """Check size, media type and multipart structure of requests to the upload endpoints.

    Args:
        app: The ASGI application behind it.
        paths: URL paths of the upload endpoints (other paths pass through untouched).
        max_bytes: Largest request body accepted.
    """

    def __init__(self, app: ASGIApp, *, paths: tuple[str, ...], max_bytes: int) -> None:
        self.app = app
        self.paths = frozenset(paths)
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, or answer it with a 4xx if the upload is refused."""
        if scope["type"] != "http" or scope.get("path") not in self.paths:
            await self.app(scope, receive, send)
            return
        with tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES) as spool:
            try:
                await self._check(scope, receive, spool)
            except UploadRejected as exc:
                await _reject(send, exc)
                return
            spool.seek(0)
            await self.app(scope, _replay(spool, receive), _unwrapped_errors(send))

    async def _check(self, scope: Scope, receive: Receive, spool: IO[bytes]) -> None:
        headers = {k.decode("latin-1").lower(): v for k, v in scope.get("headers", [])}
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            raise self._too_large()
        media, options = parse_options_header(headers.get("content-type", b""))
        if media != b"multipart/form-data" or b"boundary" not in options:
            raise UploadRejected(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                "media-type",
                f"expected a multipart/form-data upload, got {media.decode('latin-1')!r}; "
                + _USAGE,
            )
        found = _Parts()
        try:
            parser = MultipartParser(options[b"boundary"], found.callbacks())  # type: ignore[arg-type]
        except Exception:  # an invalid boundary parameter
            raise _malformed() from None
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _malformed()
            chunk = message.get("body", b"")
            more = message.get("more_body", False)
            size += len(chunk)
            if size > self.max_bytes:
                raise self._too_large()
            try:
                parser.write(chunk)
            except Exception:  # python-multipart raises its own error types on bad input
                raise _malformed() from None
            spool.write(chunk)
        _check_parts(found.parts)

    def _too_large(self) -> UploadRejected:
        return UploadRejected(
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            "upload-size",
            f"the upload is larger than {self.max_bytes / 2**20:g} MiB (serve.max_upload_mb); "
            "crop or compress the volume (.nii.gz)",
        )


def _check_parts(parts: list[tuple[str | None, str | None]]) -> None:
    names = [name for name, _ in parts]
    if names.count(FILE_FIELD) != 1 or len(parts) != 1:
        raise UploadRejected(
            HTTPStatus.BAD_REQUEST,
            "missing-field" if FILE_FIELD not in names else "extra-fields",
            f"got fields {names}; " + _USAGE,
        )
    check_file_name(parts[0][1])


def _malformed() -> UploadRejected:
    return UploadRejected(HTTPStatus.BAD_REQUEST, "malformed-multipart", "invalid body; " + _USAGE)


def _replay(spool: IO[bytes], receive: Receive) -> Receive:
    """The spooled body as ASGI messages, then the client's own ones (e.g. a disconnect)."""
    done = False

    async def replay() -> Message:
        nonlocal done
        if done:
            return await receive()
        chunk = spool.read(_SPOOL_BYTES)
        done = not chunk
        return {"type": "http.request", "body": chunk, "more_body": not done}

    return replay


async def _reject(send: Send, exc: UploadRejected) -> None:
    body = json.dumps({"error": str(exc)}).encode()
    headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
    await _send_json(send, int(exc.status), headers, body)


async def _send_json(send: Send, status: int, headers: list[Any], body: bytes) -> None:
    headers = [(k, v) for k, v in headers if k.lower() != b"content-length"]
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _unwrapped_errors(send: Send) -> Send:
    """``send`` with BentoML 1.4's ``[{"error": ...}]`` 4xx bodies sent as ``{"error": ...}``.

    Every refusal then has the same shape, whichever layer refused it.
    """
    start: Message | None = None
    body = b""

    async def wrapped(message: Message) -> None:
        nonlocal start, body
        if message["type"] == "http.response.start" and 400 <= message["status"] < 500:
            start = message
            return
        if start is None or message["type"] != "http.response.body":
            await send(message)
            return
        body += message.get("body", b"")
        if message.get("more_body", False):
            return
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        if isinstance(payload, list) and len(payload) == 1 and isinstance(payload[0], dict):
            body = json.dumps(payload[0]).encode()
        await _send_json(send, start["status"], list(start.get("headers", [])), body)

    return wrapped
