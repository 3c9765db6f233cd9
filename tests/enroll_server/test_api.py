"""The enrollment API in-process (Starlette TestClient): happy paths, auth and every bad input."""
from __future__ import annotations

import base64
import builtins

import numpy as np
import pytest

from tests.enroll_server.conftest import API_KEY, jpeg_bytes

AUTH = {"X-API-Key": API_KEY}
LIMITS = {"server.max_request_bytes": 4_000_000,
          "server.image": "{max_bytes: 3000000, max_pixels: 20000000, min_side: 32}"}


@pytest.fixture()
def client(make_service):
    from fastapi.testclient import TestClient

    from enroll_server.app import create_app

    service = make_service(**LIMITS)
    with TestClient(create_app(service)) as c:
        c.service = service
        yield c


def enroll(client, user_id, *photos, headers=AUTH, **fields):
    files = [("photos", (f"p{i}.jpg", p, "image/jpeg")) for i, p in enumerate(photos)]
    return client.post("/v1/enroll", data={"user_id": user_id, **fields}, files=files, headers=headers)


def unlock(client, user_id, photo, headers=AUTH, filename="probe.jpg"):
    return client.post(f"/v1/users/{user_id}/unlock", files=[("photo", (filename, photo, "image/jpeg"))],
                       headers=headers)


def identify(client, photo, headers=AUTH, **fields):
    return client.post("/v1/identify", data=fields, files=[("photo", ("probe.jpg", photo, "image/jpeg"))],
                       headers=headers)


def assert_error(r, status, code, text=""):
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] == code and text in str(body["detail"]), body


def test_enroll_returns_a_signed_model_and_the_descriptor(client, photos, server_files):
    from hyperver.device.artifact import open_artifact
    from hyperver.device.signing import TrustedKeys

    r = enroll(client, "zico", photos["zico"])
    assert r.status_code == 200, r.text
    body = r.json()
    desc = np.array(body["descriptor"])
    assert desc.shape == (128,) and abs(np.linalg.norm(desc) - 1) < 1e-5
    model = base64.b64decode(body["model_b64"])
    art = open_artifact(model, TrustedKeys([server_files["signer"].public_raw]), [body["f_version"]])
    assert (art.runtime, art.header["precision"], art.threshold) == ("tflite", "fp32", 0.0)
    assert art.header["user_id"] == "zico"
    got = client.get("/v1/users/zico/model", headers=AUTH)
    assert got.status_code == 200 and got.content == model
    assert got.headers["x-hyperver-f-version"] == body["f_version"]
    user = client.get("/v1/users/zico", headers=AUTH).json()
    assert user["photos"] == 1 and np.allclose(user["descriptor"], desc)
    key = client.get("/v1/signing-key", headers=AUTH).json()
    assert key["public_key"] == server_files["signer"].public_b64


def test_onnx_int8_and_several_photos(client, photos):
    r = enroll(client, "abel", photos["abel_pacheco"], photos["abel_pacheco"], runtime="onnx", precision="int8")
    assert r.status_code == 200, r.text
    assert (r.json()["runtime"], r.json()["precision"], r.json()["photos"]) == ("onnx", "int8", 2)


def test_identify_delete_and_duplicate_policy(client, photos):
    for user in ("zico", "al_gore", "adam_sandler"):
        assert enroll(client, user, photos[user]).status_code == 200
    r = identify(client, photos["al_gore"], top_k="2")
    matches = r.json()["matches"]
    assert len(matches) == 2 and matches[0]["user_id"] == "al_gore" and matches[0]["similarity"] > 0.999
    # Duplicate: refused unless replace=true; replacing keeps one entry in the index.
    assert_error(enroll(client, "zico", photos["adam_sandler"]), 409, "already_enrolled", "replace=true")
    r = enroll(client, "zico", photos["zico"], replace="true")
    assert r.status_code == 200 and r.json()["replaced"] is True
    assert [m["user_id"] for m in identify(client, photos["zico"], top_k="3").json()["matches"]].count("zico") == 1
    assert client.delete("/v1/users/al_gore", headers=AUTH).json() == {"deleted": "al_gore"}
    assert "al_gore" not in [m["user_id"] for m in identify(client, photos["al_gore"]).json()["matches"]]
    assert_error(client.get("/v1/users/al_gore/model", headers=AUTH), 404, "unknown_user")
    assert_error(client.delete("/v1/users/al_gore", headers=AUTH), 404, "unknown_user")
    health = client.get("/healthz").json()
    assert health["users"] == health["index"] == 2 and health["consistent"]


def test_every_route_but_health_needs_the_api_key(client, photos):
    assert client.get("/healthz").status_code == 200
    for headers in ({}, {"X-API-Key": "wrong"}):
        assert_error(enroll(client, "zico", photos["zico"], headers=headers), 401, "unauthorized")
        assert_error(identify(client, photos["zico"], headers=headers), 401, "unauthorized")
        assert_error(unlock(client, "zico", photos["zico"], headers=headers), 401, "unauthorized")
        for method, path in (("get", "/v1/users/zico"), ("get", "/v1/users/zico/model"),
                             ("delete", "/v1/users/zico"), ("get", "/v1/signing-key")):
            assert_error(getattr(client, method)(path, headers=headers), 401, "unauthorized")
    assert client.get("/healthz").json()["users"] == 0


@pytest.fixture(scope="module")
def bad_images(lfw_images, two_faces_image):
    from PIL import Image

    from hyperver.data import load_image

    zico = load_image(lfw_images / "Zico" / "Zico_0001.jpg")
    clothes = np.asarray(Image.fromarray(zico[200:250]).resize((500, 100)))
    good = jpeg_bytes(zico)
    import io

    huge = io.BytesIO()
    Image.new("RGB", (5000, 5000)).save(huge, format="PNG")     # 25 Mpx, a few KB compressed
    return {"no_face": jpeg_bytes(clothes), "two_faces": jpeg_bytes(two_faces_image), "text": b"this is not a photo",
            "truncated": good[: len(good) // 2], "empty": b"", "tiny": jpeg_bytes(zico[:20, :20]),
            "big_file": good + b"\0" * 3_100_000, "huge_dims": huge.getvalue()}


@pytest.mark.parametrize("name,status,code,text", [
    ("no_face", 422, "no_face", "photo 1 (p0.jpg): no face found"),
    ("two_faces", 422, "multiple_faces", "2 faces"),
    ("text", 415, "not_an_image", "not an image"),
    ("truncated", 422, "corrupt_image", "truncated"),
    ("empty", 422, "empty_image", "empty"),
    ("tiny", 422, "image_too_small", "20x20"),
    ("big_file", 413, "image_too_large", "limit 3000000"),
    ("huge_dims", 413, "image_dimensions_too_large", "5000x5000"),
])
def test_bad_photos_get_a_clear_json_error(client, bad_images, name, status, code, text):
    assert len(bad_images["big_file"]) > 3_000_000
    assert_error(enroll(client, "zico", bad_images[name]), status, code, text)
    assert_error(identify(client, bad_images[name]), status, code, text.replace("photo 1 (p0.jpg)", "photo"))
    assert client.get("/healthz").json()["users"] == 0


def test_bad_requests(client, photos):
    p = photos["zico"]
    for bad in ("../x", "a/b", ".hidden", "", "x" * 200, "name with space"):
        assert_error(enroll(client, bad, p), 400, "bad_user_id")
    assert_error(client.get("/v1/users/bad%20id", headers=AUTH), 400, "bad_user_id")
    assert_error(client.get("/v1/users/..x/model", headers=AUTH), 400, "bad_user_id")
    r = client.get("/v1/users/..%2Fx/model", headers=AUTH)        # an encoded path never reaches a file
    assert r.status_code in (400, 404) and r.json()["error"] in ("bad_user_id", "not_found")
    assert_error(client.get("/v1/users/nobody", headers=AUTH), 404, "unknown_user")
    assert_error(client.get("/v1/users/nobody/model", headers=AUTH), 404, "unknown_user")
    assert_error(client.post("/v1/enroll", data={"user_id": "zico"}, headers=AUTH), 422, "invalid_request")
    assert_error(client.post("/v1/enroll", data={"user_id": "zico"}, files=[("other", ("a.jpg", p))], headers=AUTH),
                 422, "no_photos")
    assert_error(enroll(client, "zico", *[p] * 6), 422, "too_many_photos", "at most 5")
    assert_error(enroll(client, "zico", p, runtime="coreml"), 422, "bad_parameter", "runtime")
    assert_error(enroll(client, "zico", p, precision="int4"), 422, "bad_parameter", "precision")
    assert_error(enroll(client, "zico", p, replace="maybe"), 422, "bad_parameter", "replace")
    assert_error(client.post("/v1/enroll", json={"user_id": "zico"}, headers=AUTH), 422, "invalid_request")
    assert_error(identify(client, p, top_k="0"), 422, "bad_parameter")
    assert_error(identify(client, p, top_k="many"), 422, "bad_parameter")
    assert_error(client.post("/v1/identify", data={}, files=[("x", ("a", p))], headers=AUTH), 422, "no_photos")
    assert_error(client.get("/v1/nothing-here", headers=AUTH), 404, "not_found")
    # Over the request limit: refused from Content-Length, and when streamed without one.
    big = b"x" * 4_100_000
    assert_error(enroll(client, "zico", big), 413, "request_too_large")
    chunks = (big[i:i + 65536] for i in range(0, len(big), 65536))
    r = client.post("/v1/enroll", content=chunks, headers={**AUTH, "Content-Type": "multipart/form-data; boundary=x"})
    assert_error(r, 413, "request_too_large")
    assert client.get("/healthz").json()["users"] == 0


def test_enrollment_photos_never_touch_the_disk(client, photos, monkeypatch):
    """A 2 MB upload (Starlette would spool anything over 1 MB to a temporary file)."""
    import tempfile

    padded = photos["zico"] + b"\0" * 2_000_000         # JPEG decoders stop at the end-of-image marker
    written = []
    real_open = builtins.open

    def spy_open(file, mode="r", *args, **kw):
        if any(m in mode for m in "wax+"):
            written.append(str(file))
        return real_open(file, mode, *args, **kw)

    def no_spool(*args, **kw):
        raise AssertionError("a spooled temporary file was created")

    monkeypatch.setattr(builtins, "open", spy_open)
    monkeypatch.setattr(tempfile, "SpooledTemporaryFile", no_spool)
    r = enroll(client, "zico", padded)
    assert r.status_code == 200, r.text
    assert written == []


@pytest.mark.parametrize("bad", ["abc\n", "abc\r", "abc\r\n", "\nabc", "ab\nc", "abc\x00", "abc\u2028",
                                 "zic\u043e", "\uff41bc", "abc\u00a0", "\u0661\u0662"])   # Cyrillic o, fullwidth a, NBSP, Arabic digits
def test_user_ids_are_checked_whole(client, photos, bad):
    """'$' in a regex also matches before a trailing newline: 'abc\\n' must not become a second 'abc'."""
    from urllib.parse import quote

    assert_error(enroll(client, bad, photos["zico"]), 400, "bad_user_id")
    path = f"/v1/users/{quote(bad, safe='')}"
    for method, url in (("get", path), ("get", path + "/model"), ("delete", path)):
        assert_error(getattr(client, method)(url, headers=AUTH), 400, "bad_user_id")
    assert_error(unlock(client, quote(bad, safe=""), photos["zico"]), 400, "bad_user_id")
    assert client.get("/healthz").json()["users"] == 0
    assert_error(client.get("/v1/users/abc", headers=AUTH), 404, "unknown_user")


def test_the_longest_and_shortest_ids_are_accepted(client, photos):
    for user in ("a", "A" + "b._@-9" * 21 + "z"):             # 1 and 128 characters
        r = enroll(client, user, photos["zico"])
        assert r.status_code == 200, r.text
        got = client.get(f"/v1/users/{user}/model", headers=AUTH)
        assert got.status_code == 200 and got.headers["content-disposition"] == f'attachment; filename="{user}.hva"'
    assert_error(enroll(client, "A" + "b" * 128, photos["zico"]), 400, "bad_user_id")   # 129


def test_16bit_greyscale_png_is_decoded_and_its_face_found(client, lfw_images):
    """A 16-bit greyscale PNG used to turn white (Pillow clips 'I;16' at 255) and so had 'no face'."""
    import io

    from PIL import Image

    grey = np.asarray(Image.open(lfw_images / "Zico" / "Zico_0001.jpg").convert("L"))
    buf = io.BytesIO()
    Image.fromarray(grey.astype(np.uint16) * 257).save(buf, format="PNG")
    r = enroll(client, "zico", buf.getvalue())
    assert r.status_code == 200, r.text
    assert client.get("/healthz").json()["users"] == 1


def multipart(fields: dict[str, str], photo: bytes, file_field: str = "photos", close: bool = True) -> tuple[bytes, dict]:
    """A hand-made multipart body (httpx always closes it properly)."""
    b = b"----hyperver-test"
    body = b"".join(b"--" + b + b'\r\nContent-Disposition: form-data; name="' + k.encode() + b'"\r\n\r\n' +
                    v.encode() + b"\r\n" for k, v in fields.items())
    body += (b"--" + b + b'\r\nContent-Disposition: form-data; name="' + file_field.encode() +
             b'"; filename="p.jpg"\r\nContent-Type: image/jpeg\r\n\r\n' + photo + b"\r\n")
    if close:
        body += b"--" + b + b"--\r\n"
    return body, {**AUTH, "Content-Type": "multipart/form-data; boundary=" + b.decode()}


def test_a_multipart_body_without_its_closing_boundary_is_refused(client, photos):
    p = photos["zico"]
    for url, fields, field in (("/v1/enroll", {"user_id": "zico"}, "photos"), ("/v1/identify", {}, "photo"),
                               ("/v1/users/zico/unlock", {}, "photo")):
        body, headers = multipart(fields, p, field, close=False)
        assert_error(client.post(url, content=body, headers=headers), 400, "incomplete_multipart", "closing boundary")
        # Cut anywhere: inside the photo, or before the first part ended.
        for cut in (len(body) - len(p) // 2, 60):
            assert_error(client.post(url, content=body[:cut], headers=headers), 400, "incomplete_multipart")
    body, headers = multipart({}, p, close=False)
    assert_error(client.post("/v1/enroll", content=b"", headers=headers), 400, "incomplete_multipart")
    assert client.get("/healthz").json()["users"] == 0
    body, headers = multipart({"user_id": "zico"}, p)                    # the same body, closed: accepted
    assert client.post("/v1/enroll", content=body, headers=headers).status_code == 200


def test_head_answers_like_get_without_a_body(client, photos):
    assert enroll(client, "zico", photos["zico"]).status_code == 200
    for path in ("/healthz", "/v1/users/zico", "/v1/users/zico/model", "/v1/signing-key", "/", "/static/app.js"):
        get, head = client.get(path, headers=AUTH), client.head(path, headers=AUTH)
        assert get.status_code == head.status_code == 200, (path, head.status_code)
        assert head.content == b"" and len(get.content) > 0
        assert dict(head.headers) == dict(get.headers), path          # content-length included
    for path in ("/v1/users/nobody", "/v1/users/bad%0A", "/nothing-here"):
        get, head = client.get(path, headers=AUTH), client.head(path, headers=AUTH)
        assert head.status_code == get.status_code >= 400 and head.content == b"", path
        assert head.headers["content-length"] == get.headers["content-length"]
    head = client.head("/v1/users/zico")                                  # still needs the key
    assert head.status_code == 401 and head.content == b""
    head = client.head("/v1/enroll", headers=AUTH)                        # a POST route: 405, says what is allowed
    assert head.status_code == 405 and head.headers["allow"] == "POST" and head.content == b""


def test_docs_are_off_by_default(client):
    assert client.service.settings.docs is False
    for path in ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"):
        for headers in ({}, AUTH):
            assert_error(client.get(path, headers=headers), 404, "not_found")


def test_the_openapi_schema_needs_the_key_when_docs_are_on(make_service):
    """server.docs: true serves /openapi.json behind the key; never a /docs page (Swagger UI comes from a CDN)."""
    from fastapi.testclient import TestClient

    from enroll_server.app import create_app

    service = make_service(**LIMITS, **{"server.docs": "true"})
    assert service.settings.docs is True
    with TestClient(create_app(service)) as c:
        for headers in ({}, {"X-API-Key": "wrong"}):
            assert_error(c.get("/openapi.json", headers=headers), 401, "unauthorized")
        for path in ("/docs", "/redoc"):
            assert_error(c.get(path, headers=AUTH), 404, "not_found")
        spec = c.get("/openapi.json", headers=AUTH).json()
    assert "/openapi.json" not in spec["paths"]
    assert spec["paths"]["/v1/enroll"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"][
        "properties"]["user_id"]["pattern"] == "^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$"
    body = spec["paths"]["/v1/enroll"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert {"user_id", "photos", "runtime", "precision", "replace"} <= set(body["properties"])
    body = spec["paths"]["/v1/users/{user_id}/unlock"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert body["schema"]["required"] == ["photo"] and body["schema"]["properties"]["photo"]["format"] == "binary"
    assert "/" not in spec["paths"]          # the page is not an API route
    assert "X-API-Key" in str(spec["components"]["securitySchemes"])


def test_the_server_refuses_to_start_without_an_api_key(server_files, tmp_path):
    from hyperver.config import load_config
    from hyperver.errors import ConfigError

    from enroll_server.settings import ServerSettings
    from tests.enroll_server.conftest import server_overrides

    cfg = load_config(overrides=server_overrides(server_files, tmp_path), env={})
    with pytest.raises(ConfigError, match="no API key"):
        ServerSettings.from_config(cfg, env={})
    assert ServerSettings.from_config(cfg, env={"HYPERVER_API_KEY": "a, b"}).api_keys == ("a", "b")


@pytest.mark.parametrize("key,value,text", [("server.body_timeout_s", "0", "body_timeout_s must be > 0"),
                                            ("server.body_timeout_s", "-1", "body_timeout_s must be > 0"),
                                            ("server.docs", "maybe", "docs must be true or false")])
def test_bad_hardening_settings_are_refused(server_files, tmp_path, key, value, text):
    from hyperver.config import load_config
    from hyperver.errors import ConfigError

    from enroll_server.settings import ServerSettings
    from tests.enroll_server.conftest import server_overrides

    defaults = ServerSettings.from_config(load_config(overrides=server_overrides(server_files, tmp_path), env={}),
                                          env={"HYPERVER_API_KEY": API_KEY})
    assert (defaults.docs, defaults.body_timeout_s) == (False, 30.0)
    cfg = load_config(overrides=server_overrides(server_files, tmp_path, **{key: value}), env={})
    with pytest.raises(ConfigError, match=text):
        ServerSettings.from_config(cfg, env={"HYPERVER_API_KEY": API_KEY})


def test_threshold_comes_from_the_generator_unless_configured(server_files, tmp_path):
    """server.threshold wins; null takes the threshold stored with the generator (chosen on validation data)."""
    from hyperver.config import load_config
    from hyperver.hypernet.model_io import load_generator, save_generator

    from enroll_server.service import EnrollmentService
    from enroll_server.settings import ServerSettings
    from tests.enroll_server.conftest import server_overrides

    gen, meta = load_generator(server_files["generator"])
    path = save_generator(gen, tmp_path / "gen_with_threshold.safetensors", backbone=meta["backbone"],
                          extra={"threshold": 1.25})
    for configured, expected in (("null", 1.25), ("-0.5", -0.5)):
        cfg = load_config(overrides=server_overrides(server_files, tmp_path, **{
            "server.generator_path": path, "server.threshold": configured}), env={})
        service = EnrollmentService(cfg, ServerSettings.from_config(cfg, env={"HYPERVER_API_KEY": API_KEY}))
        assert service.threshold == expected
        service.close()


# -- POST /v1/users/{id}/unlock: the on-device check on the stored artifact ---------------------------
def device_check(client, user_id, photo_bytes):
    """What a device would compute: the downloaded artifact, verified and run by hyperver.device.runtime."""
    from hyperver.align import Aligner
    from hyperver.data import load_image
    from hyperver.device.artifact import open_artifact
    from hyperver.device.runtime import DeviceVerifier
    from hyperver.device.signing import TrustedKeys

    service = client.service
    model = client.get(f"/v1/users/{user_id}/model", headers=AUTH).content
    key = base64.b64decode(client.get("/v1/signing-key", headers=AUTH).json()["public_key"])
    verifier = DeviceVerifier(open_artifact(model, TrustedKeys([key]), service.cfg.get_path("device.accepted_f_versions")))
    face = Aligner.from_config(service.cfg.get_path("align")).align_photo(load_image(photo_bytes))
    return verifier.check(face.crop)


def test_unlock_runs_the_device_check_on_the_stored_artifact(client, photos):
    assert enroll(client, "zico", photos["zico"], runtime="onnx").status_code == 200
    assert enroll(client, "al_gore", photos["al_gore"]).status_code == 200
    for probe in ("zico", "adam_sandler"):
        r = unlock(client, "zico", photos[probe])
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) >= {"user_id", "decision", "unlock", "score", "threshold", "runtime", "precision",
                             "f_version", "ms"}
        assert (body["user_id"], body["runtime"], body["precision"], body["threshold"]) == ("zico", "onnx", "fp32", 0.0)
        assert body["f_version"] == client.service.spec.version
        assert body["decision"] == ("unlock" if body["unlock"] else "deny")
        assert body["unlock"] is (body["score"] >= body["threshold"])
        assert body["verifier_cached"] is (probe != "zico")          # loaded once per (user, model)
        expected = device_check(client, "zico", photos[probe])
        assert abs(body["score"] - expected["score"]) < 1e-5 and body["unlock"] == expected["unlock"]
        assert set(body["ms"]) == {"load", "align", "score", "total"}
    # Two users' models give two different scores for the same probe.
    other = unlock(client, "al_gore", photos["adam_sandler"]).json()
    assert other["runtime"] == "tflite" and abs(other["score"] - body["score"]) > 1e-4, (other["score"], body["score"])
    # Replacing the enrollment drops the cached verifier: the new model scores the probe.
    assert enroll(client, "zico", photos["adam_sandler"], replace="true").status_code == 200
    r = unlock(client, "zico", photos["adam_sandler"]).json()
    assert r["verifier_cached"] is False and r["runtime"] == "tflite"
    assert abs(r["score"] - device_check(client, "zico", photos["adam_sandler"])["score"]) < 1e-5
    assert client.delete("/v1/users/zico", headers=AUTH).status_code == 200
    assert_error(unlock(client, "zico", photos["zico"]), 404, "unknown_user")
    assert "zico" not in client.service._verifiers


def test_unlock_errors(client, photos, bad_images):
    assert_error(unlock(client, "nobody", photos["zico"]), 404, "unknown_user", "nobody")
    assert_error(unlock(client, "bad%20id", photos["zico"]), 400, "bad_user_id")
    assert enroll(client, "zico", photos["zico"]).status_code == 200
    for name, status, code, text in [("no_face", 422, "no_face", "no face found in photo"),
                                     ("two_faces", 422, "multiple_faces", "2 faces"),
                                     ("text", 415, "not_an_image", "not an image"),
                                     ("truncated", 422, "corrupt_image", "truncated"),
                                     ("big_file", 413, "image_too_large", "limit 3000000")]:
        assert_error(unlock(client, "zico", bad_images[name]), status, code, text)
    assert_error(client.post("/v1/users/zico/unlock", files=[("photos", ("a.jpg", photos["zico"]))], headers=AUTH),
                 422, "no_photos")
    two = [("photo", ("a.jpg", photos["zico"])), ("photo", ("b.jpg", photos["zico"]))]
    assert_error(client.post("/v1/users/zico/unlock", files=two, headers=AUTH), 422, "too_many_photos")
    assert unlock(client, "zico", photos["zico"]).status_code == 200


def test_unlock_refuses_an_artifact_the_device_would_refuse(client, photos):
    """A stored model signed by another key (e.g. after a key change) fails like on a device: re-enroll."""
    from hyperver.device.signing import Signer, TrustedKeys

    assert enroll(client, "zico", photos["zico"]).status_code == 200
    service = client.service
    own = service.trusted
    service.trusted = TrustedKeys([Signer.generate().public_raw])
    assert_error(unlock(client, "zico", photos["zico"]), 409, "model_rejected", "signature does not verify")
    service.trusted, service.accepted_f_versions = own, ["f-other"]
    assert_error(unlock(client, "zico", photos["zico"]), 409, "model_rejected", "was built for f")
    service.accepted_f_versions = [service.spec.version]
    assert unlock(client, "zico", photos["zico"]).status_code == 200


def test_the_page_is_served_without_a_key(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in r.headers["content-security-policy"]
    html = r.text
    for element in ("api-key", "enroll-user", "enroll-photo", "enroll-replace", "enroll-submit", "enroll-result",
                    "unlock-user", "unlock-photo", "unlock-submit", "unlock-verdict", "unlock-score"):
        assert f'id="{element}"' in html, element
    assert "http://" not in html and "https://" not in html        # nothing from elsewhere (offline)
    js = client.get("/static/app.js")
    assert js.status_code == 200 and "/v1/users/" in js.text and "getUserMedia" in js.text
    assert client.get("/static/style.css").status_code == 200
    assert_error(client.get("/static/nothing.js"), 404, "not_found")
