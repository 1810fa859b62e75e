"""Regression tests for the hostile-input findings of issue 12, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import h11
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import ValidationError

from service.main import create_app
from service.settings import Settings
from tests.postgres import store_url
from tests.test_api import assert_problem, make_settings

LfwImage = Callable[[str, int], Path]
SHA = "ab" * 32


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def client(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    tmp = tmp_path_factory.mktemp(f"hardening-{request.param}")
    settings = make_settings(tmp, database_url=store_url(request.param, request, tmp))
    with TestClient(create_app(settings)) as test_client:
        assert test_client.post("/v1/collections", json={"name": "h"}).status_code == 201
        yield test_client


def post_raw_json(client: TestClient, url: str, text: str, method: str = "POST") -> Any:
    """A JSON body written by hand: escapes such as \\ud800 reach the server as sent."""
    return client.request(method, url, content=text.encode(), headers={"content-type": "application/json"})


def nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def assert_listing_works(client: TestClient) -> None:
    page = client.get("/v1/collections/h/subjects", params={"limit": 1000})
    assert page.status_code == 200, page.text


# -- finding 1: nothing stored that cannot be served ---------------------------------------------


@pytest.mark.parametrize(
    ("case", "metadata_json"),
    [
        ("deep", nested(256)),
        ("lone-surrogate-value", '{"k": "\\ud800"}'),
        ("lone-surrogate-key", '{"\\udfff": 1}'),
        ("nul", '{"k": ["a\\u0000b"]}'),
        ("nan", '{"k": NaN}'),
        ("too-large", json.dumps({"blob": "x" * 17_000})),
    ],
)
def test_unservable_metadata_is_refused_and_not_stored(
    client: TestClient, case: str, metadata_json: str
) -> None:
    subject = f"meta-{case}"
    body = f'{{"subject_id": "{subject}", "metadata": {metadata_json}}}'
    assert_problem(post_raw_json(client, "/v1/collections/h/subjects", body), 422, "validation_error")
    assert_problem(client.get(f"/v1/collections/h/subjects/{subject}"), 404, "subject_not_found")
    # PATCH refuses the same, and leaves the subject as it was.
    created = client.post("/v1/collections/h/subjects", json={"subject_id": subject, "metadata": {"ok": 1}})
    assert created.status_code == 201, created.text
    patch = post_raw_json(
        client, f"/v1/collections/h/subjects/{subject}", f'{{"metadata": {metadata_json}}}', "PATCH"
    )
    assert_problem(patch, 422, "validation_error")
    assert client.get(f"/v1/collections/h/subjects/{subject}").json()["metadata"] == {"ok": 1}
    assert_listing_works(client)


def test_metadata_bounds_are_inclusive_and_configurable(client: TestClient, tmp_path: Path) -> None:
    assert (
        client.post(
            "/v1/collections/h/subjects", json={"subject_id": "deep-32", "metadata": json.loads(nested(32))}
        ).status_code
        == 201
    )  # the metadata object itself is level 1
    assert_problem(
        client.post(
            "/v1/collections/h/subjects", json={"subject_id": "deep-33", "metadata": json.loads(nested(33))}
        ),
        422,
        "validation_error",
    )
    fits = {"blob": "é" * 8000}  # 16 000 bytes of UTF-8 plus the key: under 16 KiB
    assert (
        client.post("/v1/collections/h/subjects", json={"subject_id": "big", "metadata": fits}).status_code
        == 201
    )
    assert client.get("/v1/collections/h/subjects/big").json()["metadata"] == fits
    with TestClient(
        create_app(make_settings(tmp_path, max_metadata_bytes=64, max_metadata_depth=2))
    ) as small:
        small.post("/v1/collections", json={"name": "s"})
        assert (
            small.post(
                "/v1/collections/s/subjects", json={"subject_id": "a", "metadata": {"b": [1]}}
            ).status_code
            == 201
        )
        body = assert_problem(
            small.post("/v1/collections/s/subjects", json={"subject_id": "b", "metadata": {"b": [[1]]}}),
            422,
            "validation_error",
        )
        assert body["errors"][0]["loc"][:2] == ["body", "metadata"]
        assert_problem(
            small.post("/v1/collections/s/subjects", json={"subject_id": "c", "metadata": {"b": "x" * 60}}),
            422,
            "validation_error",
        )


# -- finding 2: bad numbers and strings are 422 on both stores ------------------------------------


@pytest.mark.parametrize("offset", [2**63, 2**63 - 1, 2**31, -1])
def test_offset_out_of_range_is_422(client: TestClient, offset: int) -> None:
    assert_problem(
        client.get("/v1/collections/h/subjects", params={"offset": offset}), 422, "validation_error"
    )


def test_largest_offset_is_an_empty_page(client: TestClient) -> None:
    page = client.get("/v1/collections/h/subjects", params={"offset": 2**31 - 1, "limit": 1000})
    assert page.status_code == 200, page.text
    assert page.json()["items"] == []
    assert_problem(client.get("/v1/collections/h/subjects", params={"limit": 1001}), 422, "validation_error")


@pytest.mark.parametrize("bad", ["a\x00b", "\ud800"])
def test_unsafe_text_fields_are_422(client: TestClient, bad: str) -> None:
    escaped = json.dumps(bad)  # "\u0000" / "\ud800" escapes: valid JSON text
    assert_problem(
        post_raw_json(client, "/v1/collections", f'{{"name": "t1", "description": {escaped}}}'),
        422,
        "validation_error",
    )
    assert_problem(client.get("/v1/collections/t1"), 404, "collection_not_found")
    assert_problem(
        post_raw_json(client, "/v1/collections/h/subjects", f'{{"subject_id": "t2", "name": {escaped}}}'),
        422,
        "validation_error",
    )
    client.post("/v1/collections/h/subjects", json={"subject_id": "t3", "name": "ok"})
    assert_problem(
        post_raw_json(client, "/v1/collections/h/subjects/t3", f'{{"name": {escaped}}}', "PATCH"),
        422,
        "validation_error",
    )
    assert client.get("/v1/collections/h/subjects/t3").json()["name"] == "ok"
    assert_listing_works(client)


@pytest.mark.parametrize(
    "path",
    [
        "/v1/collections/a%00b",
        "/v1/collections/h/subjects/a%00b",
        "/v1/collections/h/subjects/x%00y/faces",
        "/v1/collections/h/faces/not-a-face-id",
        "/v1/collections/h/faces/" + "0" * 100,
    ],
)
def test_unsafe_path_parameters_are_422(client: TestClient, path: str) -> None:
    assert_problem(client.get(path), 422, "validation_error")


def _enroll(client: TestClient, lfw_image: LfwImage, filename: str, source_hash: str | None = None) -> Any:
    """One LFW photo in a multipart body written by hand: the file name reaches the server byte for
    byte (httpx would percent-encode control characters)."""
    photo = lfw_image("Colin_Powell", 1).read_bytes()
    parts = [
        b'--B\r\nContent-Disposition: form-data; name="images"; filename="'
        + filename.encode()
        + b'"\r\nContent-Type: image/jpeg\r\n\r\n'
        + photo
        + b"\r\n"
    ]
    if source_hash is not None:
        parts.append(
            b'--B\r\nContent-Disposition: form-data; name="source_hash"\r\n\r\n'
            + source_hash.encode()
            + b"\r\n"
        )
    return client.post(
        "/v1/collections/h/subjects/Colin_Powell/faces",
        params={"create_subject": "true"},
        content=b"".join(parts) + b"--B--\r\n",
        headers={"content-type": "multipart/form-data; boundary=B"},
    )


@pytest.mark.parametrize("source_hash", ["a" * 65, "a" * 63, "g" * 64, SHA + "\x00", ""])
def test_source_hash_must_be_64_hex_digits(client: TestClient, lfw_image: LfwImage, source_hash: str) -> None:
    assert_problem(_enroll(client, lfw_image, "x.jpg", source_hash=source_hash), 422, "validation_error")


def test_source_hash_is_stored_lowercase(client: TestClient, lfw_image: LfwImage) -> None:
    enrolled = _enroll(client, lfw_image, "upper.jpg", source_hash=SHA.upper())
    assert enrolled.status_code == 201, enrolled.text
    face_id = enrolled.json()["results"][0]["face_id"]
    assert client.get(f"/v1/collections/h/faces/{face_id}").json()["source_hash"] == SHA


@pytest.mark.parametrize("filename", ["a\x00b.jpg", "x" * 256 + ".jpg"])
def test_unsafe_filenames_are_422_and_nothing_is_stored(
    client: TestClient, lfw_image: LfwImage, filename: str
) -> None:
    before = client.get("/v1/collections/h").json()["face_count"]
    assert_problem(_enroll(client, lfw_image, filename), 422, "validation_error")
    assert client.get("/v1/collections/h").json()["face_count"] == before
    long_but_fine = _enroll(client, lfw_image, "y" * 251 + ".jpg")
    assert long_but_fine.status_code == 201, long_but_fine.text
    face_id = long_but_fine.json()["results"][0]["face_id"]
    assert client.get(f"/v1/collections/h/faces/{face_id}").json()["filename"] == "y" * 251 + ".jpg"


# -- finding 3 (JSON part): JSON bodies have their own small limit --------------------------------


def test_json_bodies_have_a_small_limit_of_their_own(client: TestClient) -> None:
    blob = {"subject_id": "blob", "metadata": {"k": "x" * (1024 * 1024)}}
    assert_problem(client.post("/v1/collections/h/subjects", json=blob), 413, "payload_too_large")
    # Sent without Content-Length (chunked): stopped while streaming, same answer.
    chunks = iter([json.dumps(blob).encode()[i : i + 65536] for i in range(0, 1024 * 1024 + 100, 65536)])
    streamed = client.post(
        "/v1/collections/h/subjects", content=chunks, headers={"content-type": "application/json"}
    )
    assert_problem(streamed, 413, "payload_too_large")
    # A form post is not JSON but is no upload either: the same small limit.
    form = client.post("/v1/collections/h/subjects", data={"k": "x" * (1024 * 1024 + 10)})
    assert_problem(form, 413, "payload_too_large")


def test_multipart_uploads_keep_the_upload_limit(tmp_path: Path, lfw_image: LfwImage) -> None:
    settings = make_settings(tmp_path, max_json_body_bytes=4096)
    with TestClient(create_app(settings)) as small:
        assert small.post("/v1/collections", json={"name": "c"}).status_code == 201
        assert_problem(
            small.post("/v1/collections", json={"name": "d", "description": "x" * 5000}),
            413,
            "payload_too_large",
        )
        photo = {"image": lfw_image("Tony_Blair", 1).read_bytes()}
        assert len(photo["image"]) > 4096
        assert small.post("/v1/collections/c/identify", files=photo).status_code == 200


# -- finding 4: auth before the body ----------------------------------------------------------------


class _UnreadBody:
    """An ASGI ``receive`` standing for a 100 MiB body: counts what the app pulls from it."""

    def __init__(self, total: int = 100 * 1024 * 1024, chunk: int = 1024 * 1024) -> None:
        self.remaining, self.chunk, self.received = total, chunk, 0

    async def __call__(self) -> dict[str, Any]:
        size = min(self.chunk, self.remaining)
        self.remaining -= size
        self.received += size
        return {"type": "http.request", "body": b"\0" * size, "more_body": self.remaining > 0}


def _call_raw(app: FastAPI, method: str, path: str, headers: dict[str, str], body: _UnreadBody) -> int:
    status: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    asyncio.run(app(scope, body, send))  # type: ignore[arg-type]
    return status[0]


@pytest.mark.parametrize(
    ("key", "path", "content_type", "status"),
    [
        (None, "/v1/collections/vault/subjects/x/faces", "multipart/form-data; boundary=b", 401),
        ("wrong", "/v1/collections/vault/identify", "multipart/form-data; boundary=b", 401),
        ("door-key", "/v1/collections/vault/identify", "multipart/form-data; boundary=b", 403),
        (None, "/v1/collections", "application/json", 401),
        ("door-key", "/v1/collections/vault/subjects", "application/json", 403),
    ],
)
def test_auth_is_decided_before_the_body_is_read(
    tmp_path: Path, key: str | None, path: str, content_type: str, status: int
) -> None:
    settings = make_settings(tmp_path, api_keys=["admin-key", "door-key:front-door"])
    app = create_app(settings)
    with TestClient(app):  # lifespan: the services exist, as on a running server
        headers = {"content-type": content_type}  # no Content-Length: the body limit cannot decide it
        if key is not None:
            headers["x-api-key"] = key
        body = _UnreadBody()
        started = time.perf_counter()
        assert _call_raw(app, "POST", path, headers, body) == status
        assert body.received == 0  # not one byte of the 100 MiB was pulled
        assert time.perf_counter() - started < 1.0


def test_scoped_keys_keep_their_meaning(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, api_keys=["admin-key", "door-key:front-door,side-door"])
    with TestClient(create_app(settings)) as keyed:
        admin, door = {"X-API-Key": "admin-key"}, {"X-API-Key": "door-key"}
        for name in ("front-door", "vault"):
            assert keyed.post("/v1/collections", json={"name": name}, headers=admin).status_code == 201
        # Creating a collection outside the scope: the name is in the body, checked after reading it.
        assert_problem(keyed.post("/v1/collections", json={"name": "vault2"}, headers=door), 403, "forbidden")
        assert keyed.post("/v1/collections", json={"name": "side-door"}, headers=door).status_code == 201
        listed = {c["name"] for c in keyed.get("/v1/collections", headers=door).json()["collections"]}
        assert listed == {"front-door", "side-door"}
        assert_problem(keyed.get("/v1/collections/vault/subjects", headers=door), 403, "forbidden")
        assert keyed.get("/v1/collections/front-door/subjects", headers=door).status_code == 200
        response = keyed.get("/v1/collections")
        assert_problem(response, 401, "unauthorized")
        assert response.headers["www-authenticate"] == "ApiKey"
        assert_problem(keyed.get("/v1/nothing-here"), 401, "unauthorized")  # nothing under /v1 is open


# -- finding 5: a 500 does not poison the connection -------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(params=["h11", "httptools"])
def faulty_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[int]:
    """The real app under a real uvicorn, with one route added here that fails (a test-only fault)."""
    app = create_app(make_settings(tmp_path))

    @app.get("/test-only/boom")
    def boom() -> None:
        raise RuntimeError("injected fault")

    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, http=request.param, log_level="critical")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive(), "uvicorn stopped while starting"
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield port
    server.should_exit = True
    thread.join(timeout=30)


def _exchange(
    sock: socket.socket, conn: h11.Connection, target: str
) -> tuple[int, dict[bytes, bytes], bytes]:
    """One request on an open keep-alive connection; (status, headers, body)."""
    headers = [("host", "127.0.0.1"), ("connection", "keep-alive")]
    sock.sendall(conn.send(h11.Request(method="GET", target=target, headers=headers)) or b"")
    sock.sendall(conn.send(h11.EndOfMessage()) or b"")
    status, response_headers, body = 0, {}, b""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(sock.recv(65536))
            continue
        if isinstance(event, h11.Response):
            status, response_headers = event.status_code, dict(event.headers)
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            return status, response_headers, body


def test_a_500_says_connection_close_and_the_client_can_go_on(faulty_server: int) -> None:
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", faulty_server), timeout=10) as sock:
            conn = h11.Connection(h11.CLIENT)
            status, headers, _ = _exchange(sock, conn, "/healthz")
            assert status == 200
            assert headers.get(b"connection", b"").lower() != b"close"  # keep-alive works at all
            conn.start_next_cycle()
            status, headers, body = _exchange(sock, conn, "/test-only/boom")
            assert status == 500
            assert headers[b"content-type"] == b"application/problem+json"
            assert json.loads(body)["code"] == "internal_error"
            assert b"injected fault" not in body
            if headers.get(b"connection", b"").lower() == b"close":
                # The server said so: it closes cleanly, and the client knows to reconnect.
                assert conn.our_state is h11.MUST_CLOSE
                sock.settimeout(5)
                assert sock.recv(1) == b""
            else:  # otherwise the connection must still answer
                conn.start_next_cycle()
                assert _exchange(sock, conn, "/healthz")[0] == 200


# -- finding 6: metrics, docs, key ring -------------------------------------------------------------


def test_metrics_need_a_key_when_auth_is_on(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, api_keys=["admin-key", "door-key:front-door"], metrics_key="scrape-key"
    )
    with TestClient(create_app(settings)) as keyed:
        keyed.post("/v1/collections", json={"name": "secret-name"}, headers={"X-API-Key": "admin-key"})
        anonymous = keyed.get("/metrics")
        assert_problem(anonymous, 401, "unauthorized")
        assert "secret-name" not in anonymous.text
        assert_problem(keyed.get("/metrics", headers={"X-API-Key": "door-key"}), 403, "forbidden")
        assert_problem(keyed.get("/metrics", headers={"X-API-Key": "wrong"}), 401, "unauthorized")
        for key in ("admin-key", "scrape-key"):
            response = keyed.get("/metrics", headers={"X-API-Key": key})
            assert response.status_code == 200
            assert 'faces_index_size{collection="secret-name"}' in response.text
        # The metrics key opens the metrics and nothing else.
        assert_problem(keyed.get("/v1/collections", headers={"X-API-Key": "scrape-key"}), 401, "unauthorized")
        assert keyed.get("/healthz").status_code == 200
        assert keyed.get("/readyz").status_code == 200
        assert keyed.get("/openapi.json").status_code == 200


def test_a_metrics_key_alone_guards_only_the_metrics(tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(tmp_path, metrics_key="scrape-key"))) as app:
        assert_problem(app.get("/metrics"), 401, "unauthorized")
        assert app.get("/metrics", headers={"X-API-Key": "scrape-key"}).status_code == 200
        assert app.get("/v1/collections").status_code == 200  # the API itself is open (no FACES_API_KEYS)


def test_docs_are_served_from_packaged_files(tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(tmp_path))) as app:
        page = app.get("/docs")
        assert page.status_code == 200
        assert "https://" not in page.text  # no CDN, nothing remote
        assert "http://" not in page.text
        for asset in ("/docs/static/swagger-ui-bundle.js", "/docs/static/swagger-ui.css"):
            assert asset in page.text
            served = app.get(asset)
            assert served.status_code == 200
            assert len(served.content) > 100_000
        assert "SwaggerUIBundle" in app.get("/docs/static/swagger-ui-bundle.js").text
        assert app.get("/redoc").status_code == 404  # not packaged, so not offered


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("k:", "names no collection"),
        ("k: , ", "names no collection"),
        ("good;k: ,", "entry 2"),
        ("a;b;a", "listed twice"),
        ("a:c1;a", "listed twice"),
        (":coll", "empty key"),
        ("k:has space", "not a collection name"),
    ],
)
def test_key_ring_mistakes_fail_start_up(monkeypatch: pytest.MonkeyPatch, value: str, message: str) -> None:
    from service.api.auth import KeyRing  # here, so the rest of the module runs on older trees too

    monkeypatch.setenv("FACES_API_KEYS", value)
    with pytest.raises(ValidationError, match=message):
        Settings(_env_file=None)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match=message):
        KeyRing.parse([part for part in value.split(";") if part.strip()])


def test_faces_serve_refuses_a_bad_key_ring_without_echoing_keys(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from service.cli import main

    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("FACES_API_KEYS", "s3cret-admin;s3cret-door:")
    assert main(["serve"]) == 2  # before any model loads or port opens
    err = capsys.readouterr().err
    assert "FACES_API_KEYS entry 2" in err
    assert "names no collection" in err
    assert "s3cret" not in err


def test_key_ring_parses_what_it_says(monkeypatch: pytest.MonkeyPatch) -> None:
    from service.api.auth import KeyRing

    monkeypatch.setenv("FACES_API_KEYS", " admin ; door: front-door , side ;")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert KeyRing.parse(settings.api_keys).keys == {"admin": None, "door": frozenset({"front-door", "side"})}


# -- finding 7: the spec lists the problems; 405 names what is allowed -----------------------------


def test_openapi_declares_problem_responses(tmp_path: Path) -> None:
    spec = create_app(make_settings(tmp_path)).openapi()
    problem_ref = "#/components/schemas/Problem"
    operations = [
        (method.upper(), path, op) for path, ops in spec["paths"].items() for method, op in ops.items()
    ]
    for method, path, op in operations:
        if not path.startswith("/v1"):
            continue
        statuses = {int(s) for s in op["responses"] if s.isdigit() and int(s) >= 400}
        assert {401, 503} <= statuses, (method, path)
        if "{collection}" in path:
            assert {403, 404, 422} <= statuses, (method, path)
        if method in ("POST", "PATCH"):
            assert {400, 413, 422} <= statuses, (method, path)
        for status in statuses:
            content = op["responses"][str(status)]["content"]
            assert list(content) == ["application/problem+json"], (method, path, status)
            assert content["application/problem+json"]["schema"]["$ref"] == problem_ref
    by_key = {(m, p): op for m, p, op in operations}
    enroll = by_key[("POST", "/v1/collections/{collection}/subjects/{subject_id}/faces")]
    assert {"415", "422"} <= set(enroll["responses"])
    assert "409" in by_key[("POST", "/v1/collections")]["responses"]
    assert "409" in by_key[("POST", "/v1/collections/{collection}/subjects")]["responses"]
    assert {"401", "403"} <= set(by_key[("GET", "/metrics")]["responses"])
    assert "HTTPValidationError" not in spec["components"]["schemas"]


def test_json_sent_without_its_content_type_is_415(client: TestClient) -> None:
    """Every route that takes a JSON body, whatever else it does: a body sent as a form, as multipart or
    with no Content-Type gets 415 saying what to send (not a 422 about dictionaries), and nothing is
    written. The rule lives in one app-wide dependency, so a new JSON route is covered untested."""
    spec = client.get("/openapi.json").json()
    json_operations = [
        (method.upper(), path, op)
        for path, ops in spec["paths"].items()
        for method, op in ops.items()
        if "application/json" in op.get("requestBody", {}).get("content", {})
    ]
    assert {(m, p) for m, p, _ in json_operations} >= {
        ("POST", "/v1/collections"),
        ("PATCH", "/v1/collections/{collection}"),
        ("POST", "/v1/collections/{collection}/subjects"),
        ("PATCH", "/v1/collections/{collection}/subjects/{subject_id}"),
    }
    wrong_ways: list[dict[str, Any]] = [
        {"content": b'{"name": "sent-raw", "subject_id": "sent-raw"}'},  # no Content-Type at all
        {"data": {"name": "sent-as-form", "subject_id": "sent-as-form"}},  # curl -d
        {
            "files": {"name": (None, "sent-as-multipart"), "subject_id": (None, "sent-as-multipart")}
        },  # curl -F
    ]
    for method, path, op in json_operations:
        assert "415" in op["responses"], (method, path)
        url = path.replace("{collection}", "h").replace("{subject_id}", "someone")
        for way in wrong_ways:
            body = assert_problem(client.request(method, url, **way), 415, "unsupported_media_type")
            assert "Content-Type: application/json" in body["detail"], (method, path, body)
    for name in ("sent-raw", "sent-as-form", "sent-as-multipart"):
        assert_problem(client.get(f"/v1/collections/{name}"), 404, "collection_not_found")
        assert_problem(client.get(f"/v1/collections/h/subjects/{name}"), 404, "subject_not_found")
    # A JSON media type with parameters is JSON; an empty body is still the schema's 422.
    typed = client.post(
        "/v1/collections",
        content=b'{"name": "typed-json"}',
        headers={"content-type": "application/json; charset=utf-8"},
    )
    assert typed.status_code == 201, typed.text
    assert_problem(client.post("/v1/collections"), 422, "validation_error")


def test_405_is_a_problem_with_allow(client: TestClient) -> None:
    response = client.put("/v1/collections")
    assert_problem(response, 405, "method_not_allowed")
    assert {m.strip() for m in response.headers["allow"].split(",")} >= {"GET", "POST"}
    response = client.post("/v1/collections/h")
    assert_problem(response, 405, "method_not_allowed")
    assert {m.strip() for m in response.headers["allow"].split(",")} >= {"GET", "DELETE"}
