"""The web service, over real HTTP: uvicorn on 127.0.0.1 in a thread, httpx as the client."""

import io
import socket
import threading
import time

import httpx
import numpy as np
import pytest
import uvicorn
from PIL import Image

from galaxymorph.config import DEFAULT_MODEL
from galaxymorph.service import ServiceSettings, server_config
from galaxymorph.sources.synthetic import write_examples


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RunningService:
    """The service (`server_config(settings)`) run by uvicorn in a background thread."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        config = server_config(settings, host="127.0.0.1", port=int(self.url.rsplit(":", 1)[1]), log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> httpx.Client:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        self.client = httpx.Client(base_url=self.url, timeout=60)
        return self.client

    def __exit__(self, *exc_info) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def galaxies(tmp_path_factory):
    return [path.read_bytes() for path, _ in write_examples(tmp_path_factory.mktemp("uploads"), 3, seed=8, size=200)]


@pytest.fixture(scope="module")
def service():
    with RunningService(ServiceSettings(max_upload_bytes=200_000, max_request_bytes=1_000_000, max_pixels=1_000_000,
                                        max_files=4, body_timeout=1, header_timeout=1)) as client:
        yield client


def test_one_image_gets_the_cli_fields(service, galaxies):
    answer = service.post("/v1/classify", files={"files": ("NGC 1300.jpeg", galaxies[0], "image/jpeg")})
    assert answer.status_code == 200, answer.text
    (row,) = answer.json()["results"]
    assert row["id"] == "NGC 1300" and row["label"] in ("elliptical", "spiral") and row["error"] == ""
    assert {"p_spiral", "p_spiral_std", "confident", "class", "galaxy_found"} <= set(row)
    assert 0 <= row["p_spiral"] <= 1


def test_several_images_at_once_keep_their_order_and_bad_ones_are_reported(service, galaxies):
    files = [("files", (f"g{i}.jpeg", data, "image/jpeg")) for i, data in enumerate(galaxies)]
    files.append(("files", ("notes.jpeg", b"this is text", "image/jpeg")))
    answer = service.post("/v1/classify", files=files)
    assert answer.status_code == 200
    rows = answer.json()["results"]
    assert [row["id"] for row in rows] == ["g0", "g1", "g2", "notes"]  # as classify names files
    assert all(row["label"] for row in rows[:3]) and "not a readable image" in rows[3]["error"]


def png_of(side: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((side, side), np.uint8)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


@pytest.mark.parametrize(("upload", "status", "message"), [
    (("a.jpeg", b"GIF89a not really", "image/jpeg"), 422, "not a readable image"),
    (("cut.jpeg", None, "image/jpeg"), 422, "truncated"),
    (("empty.png", b"", "image/png"), 422, "empty"),
    (("huge.png", b"0" * 300_000, "image/png"), 413, "over"),
    (("bomb.png", png_of(1200), "image/png"), 422, "pixels allowed"),
])
def test_bad_uploads_get_a_clear_json_error(service, galaxies, upload, status, message):
    name, data, kind = upload
    answer = service.post("/v1/classify", files={"files": (name, galaxies[0][: len(galaxies[0]) // 2] if data is None else data, kind)})
    assert answer.status_code == status, answer.text
    assert message in answer.text


def test_wrong_field_wrong_type_and_too_many_files(service, galaxies):
    answer = service.post("/v1/classify", files={"image": ("a.jpeg", galaxies[0], "image/jpeg")})
    assert answer.status_code == 400 and "'files'" in answer.json()["error"]
    assert service.post("/v1/classify", content=b"raw bytes", headers={"Content-Type": "image/jpeg"}).status_code == 415
    many = [("files", (f"{i}.jpeg", galaxies[0], "image/jpeg")) for i in range(5)]
    answer = service.post("/v1/classify", files=many)
    assert answer.status_code == 413 and "at most" in answer.json()["error"] and "400" not in answer.json()["error"]
    assert service.post("/v1/classify", json=[{"ra": "x", "dec": 1}]).status_code == 422


def test_client_file_names_never_become_paths(service, galaxies, tmp_path):
    answer = service.post("/v1/classify", files={"files": ("../../etc/passwd", galaxies[0], "image/jpeg")})
    assert answer.json()["results"][0]["id"] == "passwd"


def test_explain_returns_the_overlay_png(service, galaxies):
    answer = service.post("/v1/explain", files={"file": ("g.jpeg", galaxies[1], "image/jpeg")}, data={"method": "gradcam"})
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(answer.content)).size[0] > 300


def test_models_health_page_and_docs(service):
    models = service.get("/v1/models").json()
    assert models["serving"] == DEFAULT_MODEL and models["backend"] in ("onnx-int8", "cuda")  # the bundled int8 graph on a CPU
    assert {m["name"] for m in models["models"]} >= {"galaxynet_ensemble", "galaxynet_distilled", "galaxynet", "seed"}
    assert service.get("/healthz").json() == {"status": "ok", "model": DEFAULT_MODEL}
    assert "Drop images here" in service.get("/").text
    assert service.get("/docs").status_code == 200 and "/v1/classify" in service.get("/openapi.json").text
    assert "access-control-allow-origin" not in service.get("/healthz", headers={"Origin": "http://elsewhere"}).headers


def test_test_time_augmentation_fills_the_uncertainty(galaxies):
    with RunningService(ServiceSettings(tta=True)) as client:
        row = client.post("/v1/classify", files={"files": ("g.jpeg", galaxies[0], "image/jpeg")}).json()["results"][0]
    assert 0 <= row["p_spiral_std"] < 0.5


def test_api_key_guards_the_post_endpoints(galaxies):
    with RunningService(ServiceSettings(api_key="s3cret")) as client:
        upload = {"files": ("g.jpeg", galaxies[0], "image/jpeg")}
        assert client.post("/v1/classify", files=upload).status_code == 401
        assert client.post("/v1/classify", files=upload, headers={"X-API-Key": "wrong"}).status_code == 401
        assert client.post("/v1/classify", files=upload, headers={"X-API-Key": "s3cret"}).status_code == 200
        assert client.get("/healthz").status_code == 200


def test_concurrent_requests_are_batched_and_all_answered(galaxies):
    import concurrent.futures

    with RunningService(ServiceSettings(batch_window=0.05)) as client:
        def post(i):
            return client.post("/v1/classify", files={"files": (f"{i}.jpeg", galaxies[i % 3], "image/jpeg")}).json()

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            replies = list(pool.map(post, range(16)))
    assert [reply["results"][0]["id"] for reply in replies] == [str(i) for i in range(16)]
    solo = [reply["results"][0]["p_spiral"] for reply in replies[:3]]
    assert all(abs(reply["results"][0]["p_spiral"] - solo[i % 3]) < 1e-6 for i, reply in enumerate(replies))


def test_positions_are_fetched_and_classified(galaxies, monkeypatch, tmp_path):
    from galaxymorph.remote.local_server import LocalCutoutServer

    monkeypatch.setenv("GALAXYMORPH_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("SDSS_API_KEY", "k")
    with LocalCutoutServer() as cutouts:
        monkeypatch.setenv("ASTRO_DB_HOST", cutouts.url)
        with RunningService(ServiceSettings()) as client:
            answer = client.post("/v1/classify?survey=legacy", json=[{"ra": 150.1, "dec": 2.2, "id": "a"},
                                                                    {"ra": 150.2, "dec": -89.9},
                                                                    {"ra": 150.3, "dec": -89.9, "id": "a"}])
            refused = client.post("/v1/classify?survey=legacy", json=[{"ra": 150.2, "dec": -89.9}])
    rows = answer.json()["results"]
    assert answer.status_code == 200 and [row["id"] for row in rows] == ["a", "2", "a"]
    assert rows[0]["label"] and rows[0]["ra"] == pytest.approx(150.1) and "HTTP 404" in rows[1]["error"]
    assert not rows[0]["error"] and "HTTP 404" in rows[2]["error"]  # errors follow the position, not the id
    assert refused.status_code == 422 and "HTTP 404" in refused.json()["results"][0]["error"]  # as a failed upload


needs_chromium = pytest.mark.skipif(__import__("shutil").which("chromium") is None,
                                    reason="Debian's chromium is not installed (.ci/run installs it)")


def headless_chromium(driver):
    return driver.chromium.launch(executable_path="/usr/bin/chromium", args=[
        "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"])


@needs_chromium
def test_page_in_headless_chromium_shows_the_class_and_probability(galaxies, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    upload = tmp_path / "galaxy.jpeg"
    upload.write_bytes(galaxies[1])
    with RunningService(ServiceSettings()) as client, playwright.sync_playwright() as driver:
        expected = client.post("/v1/classify", files={"files": ("galaxy.jpeg", galaxies[1], "image/jpeg")}).json()["results"][0]
        browser = headless_chromium(driver)
        page = browser.new_page()
        page.goto(client.base_url.join("/").__str__())
        page.set_input_files("#files", str(upload))
        page.wait_for_selector(".result .label", timeout=30_000)
        page.wait_for_selector(".result img.overlay", timeout=30_000)
        text = page.inner_text("#results")
        browser.close()
    assert expected["label"] in text and f"{expected['p_spiral']:.3f}" in text and "uncertainty" in text


@needs_chromium
def test_the_api_documentation_page_works_offline(service):
    playwright = pytest.importorskip("playwright.sync_api")
    elsewhere = []
    with playwright.sync_playwright() as driver:
        browser = headless_chromium(driver)
        page = browser.new_page()
        page.route(lambda url: not url.startswith(str(service.base_url)),  # as on a machine with no internet
                   lambda route: (elsewhere.append(route.request.url), route.abort()))
        page.goto(str(service.base_url.join("/docs")))
        page.wait_for_selector("[data-path=\"/v1/classify\"]", timeout=30_000)
        browser.close()
    assert elsewhere == []


@needs_chromium
def test_the_page_shows_a_hostile_file_name_as_text(galaxies, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    upload = tmp_path / "<img src=x onerror=alert(1)>.jpg"
    upload.write_bytes(galaxies[0])
    dialogs = []
    with RunningService(ServiceSettings()) as client, playwright.sync_playwright() as driver:
        browser = headless_chromium(driver)
        page = browser.new_page()
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        page.goto(str(client.base_url.join("/")))
        page.set_input_files("#files", str(upload))
        page.wait_for_selector(".result .label", timeout=30_000)
        text, injected = page.inner_text("#results"), page.locator("#results img[src='x']").count()
        browser.close()
    assert "<img src=x onerror=alert(1)>" in text and injected == 0 and dialogs == []


def raw_exchange(url: str, request: bytes, *, wait: float = 10.0) -> bytes:
    """Send raw bytes (a request no well-behaved client would send) and read until the server closes."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=wait) as connection:
        connection.sendall(request)
        answer = b""
        try:
            while chunk := connection.recv(65536):
                answer += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    return answer


@pytest.mark.parametrize("body", [b"NaN", b'[{"ra": NaN, "dec": 1}]', b'[{"ra": Infinity, "dec": 1}]',
                                  b'[{"ra": 1e400, "dec": 1}]', b'[{"ra": 1' + b"0" * 400 + b', "dec": 1}]', b"[]",
                                  b"[" * 50_000 + b"]" * 50_000, b'[{"ra": true, "dec": 1}]', b'{"ra": 1}'])
def test_hostile_json_is_answered_with_a_clear_client_error(service, body):
    answer = service.post("/v1/classify", content=body, headers={"Content-Type": "application/json"})
    assert answer.status_code in (400, 422) and answer.json()["error"]


def test_a_non_ascii_api_key_is_refused_not_a_crash(galaxies):
    with RunningService(ServiceSettings(api_key="secret")) as client:
        answer = client.post("/v1/classify", headers={"X-API-Key": "clé".encode("latin-1")},
                             files={"files": ("a.jpeg", galaxies[0], "image/jpeg")})
    assert answer.status_code == 401


def test_bodies_are_bounded_by_the_bytes_received_whatever_the_framing(service):
    declared = raw_exchange(service.base_url.__str__(), b"POST /v1/classify HTTP/1.1\r\nHost: x\r\n"
                            b"Content-Type: application/json\r\nContent-Length: 99999999999\r\n\r\n[")
    assert declared.startswith(b"HTTP/1.1 413")

    def chunks():  # no Content-Length: a chunked upload of 2 MB
        yield b"--b\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.jpeg\"\r\n\r\n"
        for _ in range(32):
            yield b"0" * 65536
    answer = service.post("/v1/classify", content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert answer.status_code == 413 and "over 1,000,000 bytes" in answer.json()["error"]
    answer = service.post("/v1/classify", data={f"note{i}": "x" for i in range(100)},
                          files={"files": ("a.jpeg", b"x", "image/jpeg")})
    assert answer.status_code == 413 and "16 other fields" in answer.json()["error"]


def test_slow_clients_are_cut_off(service):
    started = time.monotonic()
    slow_body = raw_exchange(str(service.base_url), b"POST /v1/classify HTTP/1.1\r\nHost: x\r\n"
                             b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n[")
    assert slow_body.startswith(b"HTTP/1.1 408") and time.monotonic() - started < 5
    started = time.monotonic()
    refused_early = raw_exchange(str(service.base_url), b"POST /v1/classify HTTP/1.1\r\nHost: x\r\n"
                                 b"Content-Type: image/jpeg\r\nContent-Length: 1000\r\n\r\n")  # 415 before the body
    assert refused_early.startswith(b"HTTP/1.1 415") and time.monotonic() - started < 5  # and the connection closed
    started = time.monotonic()
    slow_headers = raw_exchange(str(service.base_url), b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never ends them
    assert slow_headers == b"" and time.monotonic() - started < 5
    assert service.get("/healthz").status_code == 200


def test_one_bad_file_in_an_upload_is_its_own_error(service, galaxies):
    buffer = io.BytesIO()
    from astropy.io import fits

    fits.PrimaryHDU(np.ones((64, 64), np.float32)).writeto(buffer)
    data = bytearray(buffer.getvalue())
    start = data.find(b"BITPIX  =")
    data[start:start + 80] = b"BITPIX  =                   12".ljust(80)
    answer = service.post("/v1/classify", files=[("files", ("good.jpeg", galaxies[0], "image/jpeg")),
                                                 ("files", ("bad.fits", bytes(data), "application/fits"))])
    rows = answer.json()["results"]
    assert answer.status_code == 200 and rows[0]["label"] and "BITPIX = 12" in rows[1]["error"]


def test_slow_cutout_services_hold_neither_uploads_nor_the_service(galaxies, monkeypatch, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from galaxymorph.remote.local_server import LocalCutoutServer

    monkeypatch.setenv("GALAXYMORPH_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("SDSS_API_KEY", "k")
    with LocalCutoutServer(latency=6.0) as cutouts:
        monkeypatch.setenv("ASTRO_DB_HOST", cutouts.url)
        with RunningService(ServiceSettings(request_timeout=3.0)) as client, ThreadPoolExecutor(8) as pool:
            positions = [pool.submit(client.post, "/v1/classify?survey=legacy", json=[{"ra": 150 + i, "dec": 2}])
                         for i in range(6)]
            time.sleep(0.5)
            started = time.monotonic()
            upload = client.post("/v1/classify", files={"files": ("a.jpeg", galaxies[0], "image/jpeg")})
            upload_seconds = time.monotonic() - started
            statuses = [future.result().status_code for future in positions]
    assert upload.status_code == 200 and upload_seconds < 2.5
    assert statuses == [504] * 6  # each past its own timeout, none holding the others
