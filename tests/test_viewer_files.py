"""OHIF's files leave compressed and cached: the gzip copy bin/fetch-ohif wrote is sent with
``Content-Encoding: gzip`` to clients that accept it, files whose names carry a content hash
are cached for a year, and index.html and app-config.js are revalidated on every load."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from viewer import ohif

IMMUTABLE = "public, max-age=31536000, immutable"
CHUNK = "1483.bundle.256a358f0af21ca9.js"
APP = "app.bundle.0f6159c501addfe9.js"
WASM = "0ddf166f7a343eda.wasm"


@pytest.fixture
def dist(settings, tmp_path: Path) -> Path:
    """A small OHIF build laid out as bin/fetch-ohif leaves it, gzip copies included."""
    root = tmp_path / "dist"
    root.mkdir()
    (root / "index.html").write_text(
        '<html><script>window.PUBLIC_URL="/"</script>'
        '<script src="/app-config.js"></script></html>')
    files = {
        CHUNK: b"console.log('a chunk');" * 200,
        APP: b'__webpack_require__.p = "/";' + b"var app = 1;" * 500,
        WASM: b"\0asm" + bytes(4000),
        "app.bundle.css": b"body { color: red; }" * 100,
        "manifest.json": b'{"name": "OHIF"}',
    }
    for name, data in files.items():
        (root / name).write_bytes(data)
        if len(data) > 1024:
            (root / f"{name}.gz").write_bytes(gzip.compress(data))
    settings.OHIF_DIST = root
    return root


def _body(response) -> bytes:
    if response.streaming:
        return b"".join(response.streaming_content)
    return bytes(response.content)


def test_a_hashed_bundle_is_sent_gzipped_and_cached_for_a_year(client, dist):
    response = client.get(f"/viewer/{CHUNK}", HTTP_ACCEPT_ENCODING="gzip, deflate, br")
    assert response.status_code == 200
    assert response["Content-Encoding"] == "gzip"
    assert response["Content-Type"] == "text/javascript"
    assert response["Cache-Control"] == IMMUTABLE
    assert "Accept-Encoding" in response["Vary"]
    body = _body(response)
    assert int(response["Content-Length"]) == len(body)
    assert gzip.decompress(body) == (dist / CHUNK).read_bytes()


def test_a_client_that_does_not_accept_gzip_gets_the_file_as_is(client, dist):
    for accept in ("identity", "gzip;q=0", ""):
        response = client.get(f"/viewer/{CHUNK}", HTTP_ACCEPT_ENCODING=accept)
        assert "Content-Encoding" not in response
        assert _body(response) == (dist / CHUNK).read_bytes()
        assert response["Cache-Control"] == IMMUTABLE


def test_webassembly_is_sent_gzipped_and_cached_for_a_year(client, dist):
    response = client.get(f"/viewer/{WASM}", HTTP_ACCEPT_ENCODING="gzip")
    assert response["Content-Encoding"] == "gzip"
    assert response["Content-Type"] == "application/wasm"
    assert response["Cache-Control"] == IMMUTABLE
    assert gzip.decompress(_body(response)) == (dist / WASM).read_bytes()


def test_a_bundle_rewritten_for_the_prefix_is_gzipped_as_rewritten(client, dist):
    response = client.get(f"/viewer/{APP}", HTTP_ACCEPT_ENCODING="gzip")
    assert response["Content-Encoding"] == "gzip"
    assert response["Cache-Control"] == IMMUTABLE
    body = gzip.decompress(_body(response))
    assert body.startswith(b'__webpack_require__.p = "/viewer/";')


def test_unhashed_files_are_revalidated(client, dist):
    for name in ("app.bundle.css", "manifest.json"):
        response = client.get(f"/viewer/{name}", HTTP_ACCEPT_ENCODING="gzip")
        assert response.status_code == 200
        assert response["Cache-Control"] == "no-cache"
    assert client.get("/viewer/app.bundle.css", HTTP_ACCEPT_ENCODING="gzip")[
        "Content-Encoding"] == "gzip"
    # Too small for a gzip copy: sent as is.
    assert "Content-Encoding" not in client.get("/viewer/manifest.json",
                                                HTTP_ACCEPT_ENCODING="gzip")


def test_index_html_and_app_config_are_never_cached_for_long(client, alice, dist):
    client.force_login(alice)
    for url in ("/viewer/", "/viewer/viewer?StudyInstanceUIDs=1.2.3", "/viewer/app-config.js"):
        response = client.get(url, HTTP_ACCEPT_ENCODING="gzip")
        assert response.status_code == 200
        assert response["Cache-Control"] == "no-cache, private"


def test_the_real_build_has_a_gzip_copy_of_every_large_bundle():
    """bin/fetch-ohif writes the copies (skipped where OHIF is not installed)."""
    from django.conf import settings

    real = Path(settings.OHIF_DIST)
    if not ohif.installed(real):
        pytest.skip("OHIF is not installed (bin/setup)")
    large = [p for p in real.rglob("*") if p.suffix in (".js", ".css", ".wasm")
             and p.stat().st_size > 1024]
    assert large
    missing = [p.name for p in large if not p.with_name(p.name + ".gz").is_file()]
    assert missing == []


def test_a_file_is_sent_without_a_database_query_even_to_a_signed_in_user(
        client, alice, dist, django_assert_num_queries):
    """The build is public: no session, user or second-factor lookup for its files, which
    OHIF asks for while its first DICOMweb requests are waiting on the same workers."""
    client.force_login(alice)
    with django_assert_num_queries(0):
        response = client.get(f"/viewer/{CHUNK}", HTTP_ACCEPT_ENCODING="gzip")
    assert response.status_code == 200
    assert gzip.decompress(_body(response)) == (dist / CHUNK).read_bytes()


def test_a_file_carries_the_viewers_policy_so_its_workers_may_run_the_codecs(client, dist):
    policy = client.get(f"/viewer/{CHUNK}")["Content-Security-Policy"]
    assert "script-src 'self' 'unsafe-eval'" in policy
    assert "nonce-" not in policy
    assert "frame-ancestors 'none'" in policy
    assert client.get(f"/viewer/{CHUNK}")["X-Content-Type-Options"] == "nosniff"


def test_the_configuration_and_pages_still_need_a_sign_in(client, dist):
    (dist / "app-config.js").write_text("window.config = {};")  # as OHIF's build has one
    for url in ("/viewer/app-config.js", "/viewer/", "/viewer/index.html", "/viewer/viewer"):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith("/accounts/login/")


def test_a_file_the_build_does_not_have_is_404_and_a_path_out_of_it_is_refused(client, dist):
    assert client.get("/viewer/9999.bundle.0123456789abcdef.js").status_code == 404
    (dist.parent / "secret.js").write_text("nope")
    assert client.get("/viewer/../secret.js").status_code == 404
    assert client.get("/viewer/%2e%2e/secret.js").status_code == 404
    assert client.post(f"/viewer/{CHUNK}").status_code in (403, 405)


def test_behind_a_script_prefix_a_bundle_is_sent_rewritten_for_the_whole_prefix(client, dist):
    """Mounted under /portal (the WSGI server's SCRIPT_NAME, which sets the script prefix;
    Django's test client sets none, so it is set here): the files are found by the path
    below it and rewritten to load their chunks from /portal/viewer/."""
    from django.urls import set_script_prefix

    set_script_prefix("/portal/")
    try:
        response = client.get(f"/viewer/{APP}")
    finally:
        set_script_prefix("/")
    assert response.status_code == 200
    assert _body(response).startswith(b'__webpack_require__.p = "/portal/viewer/";')
    response = client.get(f"/viewer/{APP}")  # and without it, as before
    assert _body(response).startswith(b'__webpack_require__.p = "/viewer/";')
