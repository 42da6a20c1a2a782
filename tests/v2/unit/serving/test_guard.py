"""UploadGuard in front of a real Starlette app: what reaches the app, and what is refused."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from minivess.serving.guard import UploadGuard

LIMIT = 4096
PAYLOAD = b"\x1f\x8b" + bytes(range(256)) * 4


async def echo(request: Request) -> Response:
    """What the application behind the guard received."""
    form = await request.form()
    upload = form["file"]
    assert not isinstance(upload, str)
    return JSONResponse({"name": upload.filename, "size": len(await upload.read())})


async def refuse(_: Request) -> Response:
    """An error in the shape BentoML 1.4 gives raised exceptions."""
    return JSONResponse([{"error": "[rule] message"}], status_code=400)


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    app = Starlette(
        routes=[
            Route("/segment", echo, methods=["POST"]),
            Route("/refuse", refuse, methods=["POST"]),
            Route("/other", echo, methods=["POST"]),
        ]
    )
    guarded = UploadGuard(app, paths=("/segment", "/refuse"), max_bytes=LIMIT)
    with TestClient(guarded) as test_client:
        yield test_client


def _error(response: Response | object, status: int, rule: str) -> str:
    assert getattr(response, "status_code", None) == status
    body = response.json()  # type: ignore[attr-defined]
    assert isinstance(body, dict)
    assert body["error"].startswith(f"[{rule}]")
    return str(body["error"])


def test_a_valid_upload_reaches_the_app_unchanged(client: TestClient) -> None:
    response = client.post("/segment", files={"file": ("stack.nii.gz", PAYLOAD)})
    assert response.status_code == 200
    assert response.json() == {"name": "stack.nii.gz", "size": len(PAYLOAD)}


def test_a_body_over_the_limit_is_refused(client: TestClient) -> None:
    big = b"0" * (LIMIT + 1)
    message = _error(client.post("/segment", files={"file": ("x.nii", big)}), 413, "upload-size")
    assert "serve.max_upload_mb" in message

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.nii"\r\n\r\n'
        for _ in range(8):
            yield b"0" * 1024

    chunked = client.post(
        "/segment", content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=b"}
    )
    _error(chunked, 413, "upload-size")


@pytest.mark.parametrize(
    ("files", "data", "rule"),
    [
        ({"volume": ("x.nii", PAYLOAD)}, None, "missing-field"),
        ({"file": ("x.nii", PAYLOAD), "extra": ("y.nii", PAYLOAD)}, None, "extra-fields"),
        (None, {"file": "http://example.org/x.nii"}, "not-a-file"),
        ({"file": ("../../etc/cron.d/x.nii", PAYLOAD)}, None, "file-name"),
    ],
)
def test_wrong_fields_are_bad_requests(
    client: TestClient, files: dict | None, data: dict | None, rule: str
) -> None:
    if data is not None:  # a text field, sent as multipart all the same
        files = {"file": (None, data["file"])}
    _error(client.post("/segment", files=files), 400, rule)


def test_other_bodies_are_refused(client: TestClient) -> None:
    _error(client.post("/segment", json={"file": "/etc/passwd"}), 415, "media-type")
    garbage = client.post(
        "/segment",
        content=b"garbage",
        headers={"Content-Type": "multipart/form-data; boundary=xx"},
    )
    _error(garbage, 400, "malformed-multipart")


def test_app_errors_get_one_shape(client: TestClient) -> None:
    response = client.post("/refuse", files={"file": ("x.nii", PAYLOAD)})
    assert response.status_code == 400
    assert response.json() == {"error": "[rule] message"}


def test_other_paths_pass_through(client: TestClient) -> None:
    big = b"0" * (LIMIT * 2)
    response = client.post("/other", files={"file": ("../x", big)})
    assert response.json() == {"name": "../x", "size": len(big)}
