"""What one photo may cost the server (issue #18, item 1): header checks first, detection at the working
size, at most server.max_concurrent_photos photos at once, first come first served, 503 when none frees."""
from __future__ import annotations

import io
import threading
import time

import numpy as np
import pytest

from tests.enroll_server.conftest import API_KEY

AUTH = {"X-API-Key": API_KEY}


def png(array: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def black_25mp() -> bytes:
    """The 73 KB all-black 5000x5000 PNG of issue #18 (at the server's 25 MP limit)."""
    return png(np.zeros((5000, 5000, 3), np.uint8))


def record_detections(service) -> list[tuple[int, ...]]:
    """Patch every detector of the service's aligner to record the image shapes it is given."""
    seen: list[tuple[int, ...]] = []
    aligner = service.enroller.aligner
    for det in getattr(aligner.detector, "members", None) or [aligner.detector]:
        def spy(image, upsample=0, _real=det.detect):
            seen.append(tuple(image.shape[:2]) + (upsample,))
            return _real(image, upsample)
        det.detect = spy
    return seen


# -- the fair semaphore --------------------------------------------------------------------------------
def test_a_released_slot_goes_to_the_longest_waiter_not_back_to_the_releaser():
    from enroll_server.limits import FairSemaphore

    sem = FairSemaphore(1)
    assert sem.acquire()
    order: list[str] = []

    def waiter(name: str) -> None:
        assert sem.acquire(timeout=10)
        order.append(name)
        sem.release()

    threads = []
    for name in ("first", "second"):
        threads.append(threading.Thread(target=waiter, args=(name,)))
        threads[-1].start()
        while sem.waiting < len(threads):
            time.sleep(0.001)
    sem.release()
    assert sem.acquire(timeout=10)          # the releaser asks again at once (its next photo) ...
    order.append("releaser")                # ... and gets the slot only after both waiters
    sem.release()
    for t in threads:
        t.join(10)
    assert order == ["first", "second", "releaser"]
    assert (sem.in_use, sem.waiting) == (0, 0)


def test_a_wait_that_runs_out_leaves_no_trace():
    from enroll_server.limits import Busy, FairSemaphore

    sem = FairSemaphore(1)
    with sem.slot():
        assert not sem.acquire(timeout=0.05)
        with pytest.raises(Busy):
            with sem.slot(timeout=0.05):
                pass
        assert sem.waiting == 0
    assert sem.in_use == 0 and sem.acquire(timeout=0)
    with pytest.raises(ValueError):
        FairSemaphore(0)


# -- the service -----------------------------------------------------------------------------------------
def test_a_huge_cheap_photo_is_detected_at_the_working_size(make_service, black_25mp):
    """Issue #18: ~17 s and +1.1 GB per photo (dlib at 25 MP, then upsampled to 100 MP). Now every
    detector sees at most align.detect_max_pixels, once (the 2x attempt would only repeat it)."""
    from enroll_server.errors import ApiError

    service = make_service()
    budget = service.enroller.aligner.detect_max_pixels
    seen = record_detections(service)
    for call in (lambda: service.identify(black_25mp, 5), lambda: service.enroll("black", [("b.png", black_25mp)])):
        seen.clear()
        t0 = time.perf_counter()
        with pytest.raises(ApiError) as info:
            call()
        assert (info.value.status, info.value.code) == (422, "no_face")
        assert time.perf_counter() - t0 < 10          # ~1 s; a generous bound for a busy machine
        assert len(seen) == len(service.enroller.aligner.detector.members)   # one look per detector
        assert all(h * w <= budget and up == 0 for h, w, up in seen), seen


def test_every_photo_of_an_enrollment_is_checked_before_the_first_is_decoded(make_service, photos, monkeypatch):
    import enroll_server.service as service_module
    from enroll_server.errors import ApiError

    service = make_service()
    decoded: list[str] = []
    real = service_module.decode_image
    monkeypatch.setattr(service_module, "decode_image", lambda data, name, **kw: decoded.append(name) or real(data, name, **kw))
    with pytest.raises(ApiError) as info:
        service.enroll("zico", [("a.jpg", photos["zico"]), ("b.txt", b"not a photo")])
    assert (info.value.status, info.value.code) == (415, "not_an_image") and "photo 2 (b.txt)" in info.value.detail
    assert decoded == []
    assert service.enroll("zico", [("a.jpg", photos["zico"]), ("b.jpg", photos["zico"])])["photos"] == 2
    assert decoded == ["photo 1 (a.jpg)", "photo 2 (b.jpg)"]


def test_no_free_photo_slot_within_the_queue_timeout_is_503_busy(make_service, photos):
    from fastapi.testclient import TestClient

    from enroll_server.app import create_app

    service = make_service(**{"server.max_concurrent_photos": 1, "server.queue_timeout_s": 0.2})
    assert service.settings.max_concurrent_photos == 1
    with TestClient(create_app(service)) as client:
        files = [("photo", ("p.jpg", photos["zico"], "image/jpeg"))]
        service._photos.acquire()                     # another request's photo holds the only slot
        try:
            r = client.post("/v1/identify", files=files, headers=AUTH)
        finally:
            service._photos.release()
        assert r.status_code == 503 and r.json()["error"] == "busy" and r.headers["Retry-After"] == "5"
        assert "0.2 s" in r.json()["detail"]
        assert client.post("/v1/identify", files=files, headers=AUTH).status_code == 200


@pytest.mark.parametrize("key,value,text", [("server.max_concurrent_photos", "0", "max_concurrent_photos must be"),
                                            ("server.max_concurrent_photos", "two", "max_concurrent_photos must be"),
                                            ("server.queue_timeout_s", "0", "queue_timeout_s must be > 0")])
def test_bad_limit_settings_are_refused(server_files, tmp_path, key, value, text):
    from hyperver.config import load_config
    from hyperver.errors import ConfigError

    from enroll_server.settings import ServerSettings
    from tests.enroll_server.conftest import server_overrides

    defaults = ServerSettings.from_config(load_config(overrides=server_overrides(server_files, tmp_path), env={}),
                                          env={"HYPERVER_API_KEY": API_KEY})
    assert (defaults.max_concurrent_photos, defaults.queue_timeout_s) == (2, 60.0)
    cfg = load_config(overrides=server_overrides(server_files, tmp_path, **{key: value}), env={})
    with pytest.raises(ConfigError, match=text):
        ServerSettings.from_config(cfg, env={"HYPERVER_API_KEY": API_KEY})


def test_large_blocks_go_back_to_the_system():
    import platform
    import sys

    from enroll_server.limits import return_large_blocks

    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert return_large_blocks() is glibc


def test_a_first_photo_queues_ahead_of_other_requests_later_photos():
    """An identify's photo waits for the photos in progress, not behind the rest of five-photo enrollments."""
    from enroll_server.limits import FairSemaphore

    sem = FairSemaphore(1)
    assert sem.acquire()
    order: list[str] = []

    def waiter(name: str, later: bool) -> None:
        assert sem.acquire(timeout=10, later=later)
        order.append(name)
        sem.release()

    threads = []
    for name, later in (("enroll photo 2", True), ("enroll photo 3", True), ("identify", False)):
        threads.append(threading.Thread(target=waiter, args=(name, later)))
        threads[-1].start()
        while sem.waiting < len(threads):
            time.sleep(0.001)
    sem.release()
    for t in threads:
        t.join(10)
    assert order == ["identify", "enroll photo 2", "enroll photo 3"]
