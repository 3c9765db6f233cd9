"""Clients that misbehave on the wire, against a real uvicorn server started in this process (127.0.0.1,
an ephemeral port): a body that arrives too slowly (408), a client that gives up mid-body (one log line,
no traceback), HEAD as the server itself answers it."""
from __future__ import annotations

import logging
import socket
import threading
import time

import httpx
import pytest

from tests.enroll_server.conftest import API_KEY, server_overrides

BODY_TIMEOUT_S = 1.0


@pytest.fixture(scope="module")
def live(server_files, tmp_path_factory):
    """The app served by uvicorn in a thread; yields its base URL."""
    import uvicorn

    from hyperver.config import load_config

    from enroll_server.app import create_app
    from enroll_server.service import EnrollmentService
    from enroll_server.settings import ServerSettings

    tmp = tmp_path_factory.mktemp("live")
    cfg = load_config(overrides=server_overrides(server_files, tmp, **{"server.body_timeout_s": BODY_TIMEOUT_S}),
                      env={})
    service = EnrollmentService(cfg, ServerSettings.from_config(cfg, env={"HYPERVER_API_KEY": API_KEY}))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    # log_config=None: uvicorn's loggers propagate, so caplog sees what it would print.
    server = uvicorn.Server(uvicorn.Config(create_app(service), log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        assert thread.is_alive() and time.time() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}", service
    server.should_exit = True
    thread.join(timeout=30)
    sock.close()


def raw_post_start(url: str, path: str, length: int, first: bytes) -> socket.socket:
    """Open a connection and send a request's headers and the first bytes of a ``length``-byte body."""
    host, port = url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=10)
    s.sendall(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {API_KEY}\r\n"
              f"Content-Type: multipart/form-data; boundary=xyz\r\nContent-Length: {length}\r\n\r\n".encode() + first)
    return s


def read_all(s: socket.socket) -> bytes:
    out = b""
    try:
        while chunk := s.recv(65536):
            out += chunk
    except ConnectionResetError:   # the server closed with unread bytes of ours: what came before counts
        pass
    return out


def test_a_body_slower_than_the_timeout_gets_408_and_the_connection_closes(live):
    url, _ = live
    t0 = time.perf_counter()
    with raw_post_start(url, "/v1/enroll", 100_000, b"--xyz\r\n") as s:
        time.sleep(BODY_TIMEOUT_S / 4)
        s.sendall(b"Content-Disposition: form-data; ")     # still sending, just too slowly
        reply = read_all(s)                                  # returns once the server closes
    took = time.perf_counter() - t0
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), reply[:300]
    assert b"connection: close" in head.lower()
    assert b'"error":"request_timeout"' in body and b"within 1 s" in body, body
    assert BODY_TIMEOUT_S * 0.9 < took < BODY_TIMEOUT_S + 5


def test_a_body_in_time_is_served(live, photos):
    url, _ = live
    with httpx.Client(base_url=url, headers={"X-API-Key": API_KEY}, timeout=60) as c:
        r = c.post("/v1/identify", files=[("photo", ("p.jpg", photos["zico"], "image/jpeg"))])
        assert r.status_code == 200, r.text


def test_a_client_that_gives_up_is_one_log_line(live, caplog):
    url, _ = live
    caplog.set_level(logging.INFO)
    with raw_post_start(url, "/v1/enroll", 100_000, b"--xyz\r\n" + b"x" * 1000):
        time.sleep(0.2)
    deadline = time.time() + 10
    while not any("disconnected" in r.getMessage() for r in caplog.records) and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)                                          # anything logged after it would be here too
    gone = [r for r in caplog.records if "disconnected" in r.getMessage()]
    assert len(gone) == 1, caplog.text
    assert gone[0].name == "enroll_server" and "'/v1/enroll'" in gone[0].getMessage()
    assert "bytes of the body" in gone[0].getMessage()
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR], caplog.text
    assert "Traceback" not in caplog.text


def test_head_through_the_server(live):
    url, service = live
    with httpx.Client(base_url=url, headers={"X-API-Key": API_KEY}, timeout=60) as c:
        for path in ("/v1/signing-key", "/", "/healthz"):
            get, head = c.get(path), c.head(path)
            assert head.status_code == get.status_code == 200 and head.content == b""
            assert head.headers["content-length"] == get.headers["content-length"] != "0"
            assert head.headers["content-type"] == get.headers["content-type"]
        assert c.get("/healthz").status_code == 200                # the connection is still usable
