"""Fetching cutouts from a real HTTP server on 127.0.0.1 that speaks the SDSS and Legacy Survey protocols."""

import csv
import io
import os
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from galaxymorph import load_image
from galaxymorph.catalog import iter_sky_positions
from galaxymorph.errors import CatalogError
from galaxymorph.remote import CutoutCache, CutoutService, CutoutSettings, FetchOptions, fetch_catalog
from galaxymorph.remote.fetch import galaxy_truncated
from galaxymorph.remote.local_server import FAULTS, LocalCutoutServer, cutout_bytes
from galaxymorph.remote.services import resolve_base_url

QUICK = FetchOptions(concurrency=8, rate_limit=0, timeout=0.5, retries=4, backoff=0.02)


def positions_catalog(path: Path, count: int, *extra_rows: str) -> Path:
    lines = ["name,ra,dec,redshift"] + [f"g{i},{150 + i * 0.01:.4f},{2 + i * 0.01:.4f},0.0{i % 10}" for i in range(count)]
    path.write_text("\n".join(lines + list(extra_rows)) + "\n")
    return path


def manifest_rows(summary) -> list[dict]:
    with open(summary.manifest, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture
def local_host(monkeypatch):
    """Point every cutout service at a fault-free local server."""
    with LocalCutoutServer() as server:
        monkeypatch.setenv("ASTRO_DB_HOST", server.url)
        monkeypatch.setenv("SDSS_API_KEY", "test-key")
        yield server


def test_faults_on_a_third_of_first_attempts_are_recovered(tmp_path, monkeypatch):
    catalog = positions_catalog(tmp_path / "positions.csv", 90, "south,150.0,-89.5,0.1", "broken,abc,2.0,0.1")
    with LocalCutoutServer(fault_rate=1 / 3, slow_seconds=1.5) as server:
        monkeypatch.setenv("ASTRO_DB_HOST", server.url)
        monkeypatch.setenv("SDSS_API_KEY", "test-key")
        summary = fetch_catalog(catalog, tmp_path / "out", CutoutService("sdss"), options=QUICK, id_column="name")
    assert set(server.log.faults) == set(FAULTS)
    assert 15 <= sum(server.log.faults.values()) <= 45
    rows = {row["name"]: row for row in manifest_rows(summary)}
    assert summary.rows == 92 and summary.fetched == 90 and summary.failed == 2
    for i in range(90):
        row = rows[f"g{i}"]
        assert row["status"] == "fetched" and float(row["redshift"]) == (i % 10) / 100
        expected = cutout_bytes(float(row["ra"]), float(row["dec"]), 424, "jpeg")
        assert (tmp_path / "out" / row["file"]).read_bytes() == expected
    assert rows["south"]["status"] == "failed" and "HTTP 404" in rows["south"]["error"]
    assert rows["broken"]["status"] == "failed" and "not readable angles" in rows["broken"]["error"]
    assert not list((tmp_path / "out").rglob("*.part"))


def test_a_request_that_keeps_failing_is_reported_and_the_run_goes_on(tmp_path, monkeypatch):
    catalog = positions_catalog(tmp_path / "positions.csv", 6)
    with LocalCutoutServer(fault_rate=0.5, faults=("error_500",), faulty_attempts=99) as server:
        monkeypatch.setenv("ASTRO_DB_HOST", server.url)
        summary = fetch_catalog(catalog, tmp_path / "out", CutoutService("legacy"),
                                options=FetchOptions(rate_limit=0, retries=2, backoff=0.01))
    failed = [row for row in manifest_rows(summary) if row["status"] == "failed"]
    assert 0 < len(failed) < 6 and summary.fetched == 6 - len(failed)
    assert all(row["error"] == "gave up after 3 attempts: HTTP 500" and row["attempts"] == "3" for row in failed)


def test_retry_after_is_honoured(tmp_path, local_host):
    catalog = positions_catalog(tmp_path / "positions.csv", 3)
    with LocalCutoutServer(fault_rate=1.0, faults=("too_many_requests",), retry_after=1) as server:
        os.environ["ASTRO_DB_HOST"] = server.url
        started = time.perf_counter()
        summary = fetch_catalog(catalog, tmp_path / "out", CutoutService("sdss"),
                                options=FetchOptions(rate_limit=0, backoff=0.01))
        elapsed = time.perf_counter() - started
    assert summary.fetched == 3 and elapsed >= 1.0
    assert all(row["attempts"] == "2" for row in manifest_rows(summary))


def test_rerun_fetches_only_what_is_missing(tmp_path, local_host):
    catalog = positions_catalog(tmp_path / "positions.csv", 12)
    first = fetch_catalog(catalog, tmp_path / "out", CutoutService("sdss"), options=QUICK)
    requests_after_first = len(local_host.log.requests)
    second = fetch_catalog(catalog, tmp_path / "out", CutoutService("sdss"), options=QUICK)
    assert (first.fetched, second.fetched, second.cached) == (12, 0, 12)
    assert len(local_host.log.requests) == requests_after_first


def test_an_unreachable_service_fails_fast_and_cached_cutouts_are_still_used(tmp_path, monkeypatch):
    monkeypatch.setenv("SDSS_API_KEY", "test-key")
    catalog = positions_catalog(tmp_path / "positions.csv", 60)
    with LocalCutoutServer() as server:
        service = CutoutService("sdss", base_url=server.url)
        fetch_catalog(positions_catalog(tmp_path / "first.csv", 5), tmp_path / "out", service, options=QUICK)
    started = time.perf_counter()  # the server is gone: its port refuses connections
    summary = fetch_catalog(catalog, tmp_path / "out", service, options=FetchOptions(rate_limit=0, backoff=0.2))
    assert time.perf_counter() - started < 10  # not 55 rows x 4 retries with backoff
    rows = manifest_rows(summary)
    assert [row["status"] for row in rows[:5]] == ["cached"] * 5
    assert {row["status"] for row in rows[5:]} == {"failed"}
    assert any("service unreachable" in row["error"] for row in rows) and all("cannot connect" in row["error"]
               or "service unreachable" in row["error"] for row in rows[5:])


def test_rate_limit_spaces_requests(tmp_path, local_host):
    catalog = positions_catalog(tmp_path / "positions.csv", 6)
    started = time.perf_counter()
    fetch_catalog(catalog, tmp_path / "out", CutoutService("sdss"), options=FetchOptions(concurrency=6, rate_limit=10))
    assert time.perf_counter() - started >= 0.45  # 6 starts at most 10 a second: the last after 0.5 s


def test_killed_fetch_resumes_without_downloading_finished_rows(tmp_path, monkeypatch):
    catalog = positions_catalog(tmp_path / "positions.csv", 300)
    output = tmp_path / "out"
    command = [sys.executable, "-m", "galaxymorph", "fetch", str(catalog), "-o", str(output), "--concurrency", "4",
               "--rate-limit", "0", "--no-progress"]
    monkeypatch.setenv("SDSS_API_KEY", "test-key")
    with LocalCutoutServer(latency=0.05) as server:
        environment = {**os.environ, "ASTRO_DB_HOST": server.url}
        run = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while len(list(output.rglob("*.jpeg"))) < 40 and time.monotonic() < deadline and run.poll() is None:
            time.sleep(0.05)
        run.send_signal(signal.SIGKILL)
        run.wait()
        time.sleep(0.5)  # requests the killed run had already sent reach the log
        finished = {path.name for path in output.rglob("*.jpeg")}
        assert 40 <= len(finished) < 300
        requests_before = len(server.log.requests)
        rerun = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=120)
        assert rerun.returncode == 0, rerun.stderr
        second_run = server.log.requests[requests_before:]
        service = CutoutService("sdss", base_url=server.url)
    requested = {CutoutCache(output).path_for(service.request(float(q["ra"]), float(q["dec"]))).name for _, q, _ in second_run}
    assert not requested & finished
    assert len(requested) == 300 - len(finished)
    rows = list(csv.DictReader(open(output / "manifest.csv")))
    assert len(rows) == 300 and {row["status"] for row in rows} == {"fetched", "cached"}
    assert sum(row["status"] == "cached" for row in rows) == len(finished)
    assert not list(output.rglob("*.part"))
    for path in output.rglob("*.jpeg"):
        Image.open(path).load()  # every file in the cache is a whole image


def test_api_key_reaches_the_server_and_nowhere_else(tmp_path, monkeypatch):
    secret = "sk-never-print-me-4711"
    monkeypatch.setenv("SDSS_API_KEY", secret)
    catalog = positions_catalog(tmp_path / "positions.csv", 5, "south,150.0,-89.5,0.1")
    with LocalCutoutServer(fault_rate=0.5) as server:
        environment = {**os.environ, "ASTRO_DB_HOST": server.url}
        fetched = subprocess.run([sys.executable, "-m", "galaxymorph", "fetch", str(catalog), "-o", str(tmp_path / "out"),
                                  "--rate-limit", "0", "--timeout", "1"], env=environment, capture_output=True, text=True)
        classified = subprocess.run([sys.executable, "-m", "galaxymorph", "classify", str(catalog), "--fetch",
                                     "--cache-dir", str(tmp_path / "cache"), "-o", str(tmp_path / "morphology.csv"),
                                     "--rate-limit", "0", "--timeout", "1", "--workers", "0"],
                                    env=environment, capture_output=True, text=True)
    assert fetched.returncode == 0 and classified.returncode == 0, fetched.stderr + classified.stderr
    assert {key for _, _, key in server.log.requests} == {secret}
    written = [fetched.stdout, fetched.stderr, classified.stdout, classified.stderr]
    written += [path.read_text(errors="replace") for path in tmp_path.rglob("*.csv")]
    assert not any(secret in text for text in written)
    service = CutoutService("sdss")
    assert service.headers() == {"X-Auth-Token": secret}
    assert secret not in repr(service) + str(vars(service))


def test_missing_key_warns_once_and_uses_the_public_service(tmp_path, monkeypatch):
    import galaxymorph.remote.services as services

    monkeypatch.delenv("SDSS_API_KEY", raising=False)
    monkeypatch.setattr(services, "_warned", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        CutoutService("sdss"), CutoutService("sdss"), CutoutService("legacy")
    assert [str(w.message) for w in caught] == ["SDSS_API_KEY is not set: using the public, unauthenticated SDSS cutout service"]
    assert CutoutService("sdss").headers() == {}


@pytest.mark.parametrize("host", ["localhost:notaport", "http://[::1", "javascript:alert(1)", "ftp://example.org"])
def test_a_malformed_astro_db_host_is_refused_at_start_naming_the_variable(tmp_path, monkeypatch, host):
    from typer.testing import CliRunner

    from galaxymorph.cli import app

    monkeypatch.setenv("ASTRO_DB_HOST", host)
    catalog = positions_catalog(tmp_path / "positions.csv", 2)
    result = CliRunner().invoke(app, ["fetch", str(catalog), "-o", str(tmp_path / "cutouts")])
    assert result.exit_code == 2 and f"ASTRO_DB_HOST={host!r} is not a host name or an http(s) URL" in result.output


@pytest.mark.parametrize("key", ["caf\u00e9", "key\r\nX-Injected: 1"])
def test_an_sdss_api_key_no_header_can_carry_is_refused_naming_the_variable(monkeypatch, key):
    monkeypatch.setenv("SDSS_API_KEY", key)
    with pytest.raises(ValueError, match="SDSS_API_KEY holds characters an HTTP header cannot carry"):
        CutoutService("sdss")


def test_a_key_bound_for_plain_http_elsewhere_is_warned_of(monkeypatch):
    import galaxymorph.remote.services as services

    monkeypatch.setattr(services, "_warned", set())
    monkeypatch.setenv("SDSS_API_KEY", "secret")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        CutoutService("sdss", base_url="http://mirror.example.org"), CutoutService("sdss", base_url="http://127.0.0.1:9")
    assert [str(w.message) for w in caught] == ["SDSS_API_KEY would be sent over plain HTTP to mirror.example.org: "
                                                "use https:// in ASTRO_DB_HOST or --base-url"]


def test_classify_fetch_keeps_the_catalog_columns(tmp_path, local_host):
    from typer.testing import CliRunner

    from galaxymorph.cli import app

    catalog = positions_catalog(tmp_path / "positions.csv", 10, "south,150.0,-89.5,0.1")
    output = tmp_path / "morphology.csv"
    result = CliRunner().invoke(app, ["classify", str(catalog), "--fetch", "--cache-dir", str(tmp_path / "cache"),
                                      "-o", str(output), "--id-column", "name", "--rate-limit", "0", "--workers", "0",
                                      "--no-progress"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(open(output)))
    assert [row["name"] for row in rows] == [f"g{i}" for i in range(10)] + ["south"]
    assert all(row["label"] in ("elliptical", "spiral") and row["redshift"] for row in rows[:10])
    assert rows[-1]["label"] == "" and "HTTP 404" in rows[-1]["error"]


@pytest.fixture
def galaxies_of_angular_size(monkeypatch):
    """A local server whose galaxies span 25-75" of sky, so that a 32" cutout cuts them off."""
    with LocalCutoutServer(galaxy_field=256.0) as server:
        monkeypatch.setenv("ASTRO_DB_HOST", server.url)
        monkeypatch.setenv("SDSS_API_KEY", "test-key")
        yield server


def test_a_galaxy_cut_off_by_the_cutout_is_fetched_again_at_twice_the_field(tmp_path, galaxies_of_angular_size):
    catalog = positions_catalog(tmp_path / "positions.csv", 8)
    tight = CutoutService("sdss", CutoutSettings(size=128, pixel_scale=0.25))
    as_asked = manifest_rows(fetch_catalog(catalog, tmp_path / "as-asked", tight, options=QUICK, id_column="name"))
    assert sum(galaxy_truncated(tmp_path / "as-asked" / row["file"]) for row in as_asked) >= 4
    galaxies_of_angular_size.log.requests.clear()
    widening = replace(QUICK, widen_truncated=3)
    rows = manifest_rows(fetch_catalog(catalog, tmp_path / "widened", tight, options=widening, id_column="name"))
    assert not any(galaxy_truncated(tmp_path / "widened" / row["file"]) for row in rows)
    assert all(row["status"] == "fetched" for row in rows) and any(row["widened"] != "0" for row in rows)
    for row in rows:
        scales = [query["scale"] for _, query, _ in galaxies_of_angular_size.log.requests
                  if query["ra"].startswith(row["ra"])]
        assert scales == ["0.25", "0.5", "1", "2"][:int(row["widened"]) + 1]
    requests = len(galaxies_of_angular_size.log.requests)
    again = manifest_rows(fetch_catalog(catalog, tmp_path / "widened", tight, options=widening, id_column="name"))
    assert len(galaxies_of_angular_size.log.requests) == requests  # the re-run finds every field in the cache
    assert [row["widened"] for row in again] == [row["widened"] for row in rows]


def test_a_wider_field_that_cannot_be_fetched_leaves_the_narrower_cutout(tmp_path, monkeypatch):
    catalog = positions_catalog(tmp_path / "positions.csv", 12)
    with LocalCutoutServer(galaxy_field=256.0, fault_rate=0.5, faults=("error_500",)) as server:
        monkeypatch.setenv("ASTRO_DB_HOST", server.url)
        monkeypatch.setenv("SDSS_API_KEY", "test-key")
        summary = fetch_catalog(catalog, tmp_path / "out", CutoutService("sdss", CutoutSettings(size=128, pixel_scale=0.25)),
                                options=replace(QUICK, retries=0, widen_truncated=3), id_column="name")
    rows = manifest_rows(summary)
    kept = [row for row in rows if row["status"] == "fetched"]
    assert summary.failed == 12 - len(kept) >= 1
    assert any(int(row["attempts"]) > int(row["widened"]) + 1 for row in kept)  # a wider field failed, the row stayed
    for row in kept:
        asked = [query for _, query, _ in server.log.requests if query["ra"].startswith(row["ra"])]
        assert int(row["attempts"]) == len(asked)  # every field's attempts, the failed wider one's too
        assert (tmp_path / "out" / row["file"]).is_file() and row["error"] == ""


def test_classify_fetch_widens_the_field_until_the_galaxy_is_whole(tmp_path, galaxies_of_angular_size):
    from typer.testing import CliRunner

    from galaxymorph.cli import app

    catalog = positions_catalog(tmp_path / "positions.csv", 6)
    common = ["--fetch", "--size", "128", "--pixel-scale", "0.25", "--id-column", "name", "--rate-limit", "0",
              "--workers", "0", "--no-progress", "--cache-dir", str(tmp_path / "cache")]
    for widenings, output in ((0, tmp_path / "tight.csv"), (3, tmp_path / "widened.csv")):
        result = CliRunner().invoke(app, ["classify", str(catalog), "-o", str(output), "--widen-truncated", str(widenings), *common])
        assert result.exit_code == 0, result.output
    truncated = {path.stem: [row["galaxy_truncated"] for row in csv.DictReader(open(path))]
                 for path in (tmp_path / "tight.csv", tmp_path / "widened.csv")}
    assert truncated["tight"].count("True") >= 3 and truncated["widened"] == ["False"] * 6


def test_a_fetched_run_resumes_only_with_the_same_cutouts(tmp_path, local_host):
    from typer.testing import CliRunner

    from galaxymorph.cli import app

    catalog = positions_catalog(tmp_path / "positions.csv", 3)
    command = ["classify", str(catalog), "-o", str(tmp_path / "morphology"), "--fetch", "--id-column", "name",
               "--rate-limit", "0", "--workers", "0", "--no-progress", "--model", "galaxynet", "--resume"]
    assert CliRunner().invoke(app, command).exit_code == 0
    again = CliRunner().invoke(app, command)
    assert again.exit_code == 0 and "resumed after the 3 rows already in" in again.output and "0 more written, 3 in all" in again.output
    other_field = CliRunner().invoke(app, [*command, "--pixel-scale", "0.2"])
    assert other_field.exit_code != 0 and "source.pixel_scale 0.396 there, 0.2 now" in other_field.output


def test_embed_fetch_embeds_the_cutouts_of_sky_positions(tmp_path, local_host):
    import pyarrow.parquet as pq
    from typer.testing import CliRunner

    from galaxymorph.cli import app

    catalog = positions_catalog(tmp_path / "positions.csv", 3, "south,150.0,-89.5,0.1")
    result = CliRunner().invoke(app, ["embed", str(catalog), "--fetch", "--cache-dir", str(tmp_path / "cache"),
                                      "-o", str(tmp_path / "emb.parquet"), "--id-column", "name", "--rate-limit", "0",
                                      "--workers", "0", "--no-progress", "--model", "galaxynet"])
    assert result.exit_code == 0, result.output
    rows = pq.read_table(tmp_path / "emb.parquet").to_pylist()
    assert [row["name"] for row in rows] == ["g0", "g1", "g2", "south"] and rows[0]["redshift"]
    assert all(abs(np.linalg.norm(row["embedding"]) - 1) < 1e-5 for row in rows[:3])
    assert "HTTP 404" in rows[-1]["error"] and np.isnan(rows[-1]["embedding"]).all()


def test_legacy_fits_cutouts_are_read_as_images(tmp_path, local_host):
    catalog = positions_catalog(tmp_path / "positions.csv", 2)
    settings = CutoutSettings(image_format="fits", pixel_scale=0.262, size=256)
    summary = fetch_catalog(catalog, tmp_path / "out", CutoutService("legacy", settings), options=QUICK)
    path, query = tmp_path / "out" / manifest_rows(summary)[0]["file"], local_host.log.requests[0][1]
    assert path.suffix == ".fits" and load_image(path).shape == (3, 64, 64)
    assert query["layer"] == "ls-dr10" and query["bands"] == "grz" and query["pixscale"] == "0.262"
    assert local_host.log.requests[0][0] == "/fits-cutout"


def test_a_positions_fits_and_jpeg_cutouts_give_the_same_model_input():
    """The local server writes FITS as the Legacy Survey does (bottom row first, with a WCS):
    read the right way up, it is the JPEG's galaxy; one row order off, it is not."""
    from astropy.io import fits
    from scipy.stats import spearmanr

    from galaxymorph.config import Preprocessing
    from galaxymorph.preprocess.decode import decode_bytes

    whole = Preprocessing(framing=False, crop_fraction=1.0)
    for ra in (150.0, 150.1, 150.2, 150.3):
        jpeg = decode_bytes(cutout_bytes(ra, 2.0, 128, "jpeg"), "cutout.jpeg", whole).pixels.mean(axis=0)
        data = cutout_bytes(ra, 2.0, 128, "fits")
        right_way = decode_bytes(data, "cutout.fits", whole).pixels.mean(axis=0)
        with fits.open(io.BytesIO(data)) as hdus:
            flipped = io.BytesIO()
            fits.PrimaryHDU(hdus[0].data[:, ::-1, :]).writeto(flipped)  # the same pixels, no WCS, the other row order
        upside_down = decode_bytes(flipped.getvalue(), "flipped.fits", whole).pixels.mean(axis=0)
        # rank correlation: the FITS path's asinh stretch is not the JPEG's, but it keeps the order of the pixels
        agree, disagree = (spearmanr(jpeg.ravel(), other.ravel())[0] for other in (right_way, upside_down))
        assert agree > 0.5 and agree > disagree + 0.3


def test_the_manifest_gives_the_catalogs_own_columns_back_byte_for_byte(tmp_path, local_host):
    catalog = tmp_path / "targets.csv"
    catalog.write_text("id,ra,dec,note\nM51,202.469575,47.195258,Whirlpool\n")
    summary = fetch_catalog(catalog, tmp_path / "out", CutoutService("legacy"), options=QUICK)
    assert "M51,202.469575,47.195258,Whirlpool" in summary.manifest.read_text()


@pytest.mark.parametrize("ra, dec", [("RA", "Dec"), ("RAJ2000", "DEJ2000"), ("RA_ICRS", "DE_ICRS"), ("RAdeg", "DEdeg")])
def test_position_columns_are_found_by_their_usual_and_vizier_names(tmp_path, ra, dec):
    catalog = tmp_path / "vizier.csv"
    catalog.write_text(f"objid,{ra},{dec}\n1,150.5,2.25\n")
    assert [(row.ra, row.dec) for row in iter_sky_positions(catalog)] == [(150.5, 2.25)]


def test_classifying_a_manifest_keeps_the_reason_a_fetch_failed(tmp_path, local_host):
    from galaxymorph.prediction import PredictOptions, predict

    catalog = positions_catalog(tmp_path / "positions.csv", 2, "south,150.0,-89.5,0.1")
    summary = fetch_catalog(catalog, tmp_path / "out", CutoutService("legacy"), options=QUICK, id_column="name")
    rows = [row for batch in predict([summary.manifest], options=PredictOptions(workers=0)) for row in batch]
    assert [row["id"] for row in rows] == ["g0", "g1", "south"] and not rows[0]["error"]
    assert "HTTP 404" in rows[-1]["error"] and "directory" not in rows[-1]["error"]


def test_the_cli_warns_in_one_log_line_and_draws_no_progress_into_a_pipe(tmp_path, local_host, monkeypatch):
    monkeypatch.delenv("SDSS_API_KEY")
    catalog = positions_catalog(tmp_path / "positions.csv", 2)
    command = [sys.executable, "-m", "galaxymorph", "fetch", str(catalog), "--survey", "sdss", "-o", str(tmp_path / "out")]
    run = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stderr == "WARNING: SDSS_API_KEY is not set: using the public, unauthenticated SDSS cutout service\n"
    quiet = subprocess.run(command[:3] + ["--quiet"] + command[3:], capture_output=True, text=True, timeout=120)
    assert quiet.returncode == 0 and quiet.stderr == ""


def test_the_cutout_server_command_serves_until_stopped():
    import httpx

    server = subprocess.Popen([sys.executable, "-m", "galaxymorph", "cutout-server", "--port", "0"],
                              stdout=subprocess.PIPE, text=True)
    try:
        url = server.stdout.readline().split()[3].rstrip(";")
        answer = httpx.get(f"{url}/jpeg-cutout", params={"ra": 150.0, "dec": 2.0, "size": 64}, timeout=10)
        assert answer.status_code == 200 and Image.open(io.BytesIO(answer.content)).size == (64, 64)
    finally:
        server.terminate()
        assert server.wait(timeout=10) == 0


def test_astro_db_host_replaces_the_host_or_the_whole_base():
    assert resolve_base_url("https://skyserver.sdss.org/dr18", None) == "https://skyserver.sdss.org/dr18"
    assert resolve_base_url("https://skyserver.sdss.org/dr18", "mirror.example.org") == "https://mirror.example.org/dr18"
    assert resolve_base_url("https://skyserver.sdss.org/dr18", "http://127.0.0.1:8080/") == "http://127.0.0.1:8080"


def test_positions_in_degrees_or_sexagesimal_and_bad_rows(tmp_path):
    catalog = tmp_path / "positions.csv"
    catalog.write_text("objid,ra,dec\n1,150.5,2.25\n2,10:00:00,+02:15:00\n3,,1\n4,10,95\n")
    rows = list(iter_sky_positions(catalog))
    assert (rows[0].id, rows[0].ra, rows[0].dec) == ("1", 150.5, 2.25)
    assert rows[1].ra == pytest.approx(150.0) and rows[1].dec == pytest.approx(2.25)
    assert "row 3" in rows[2].error and "row 4" in rows[3].error and not rows[0].error
    with pytest.raises(CatalogError, match="'ra_deg'"):
        list(iter_sky_positions(catalog, ra_column="ra_deg"))


def test_resumed_classify_fetch_requests_only_the_rows_it_lacks(tmp_path, local_host):
    from typer.testing import CliRunner

    from galaxymorph.cli import app

    catalog = positions_catalog(tmp_path / "positions.csv", 12)
    output = tmp_path / "morphology"
    command = ["classify", str(catalog), "--fetch", "-o", str(output), "--chunk-rows", "5", "--id-column", "name",
               "--rate-limit", "0", "--workers", "0", "--no-progress"]
    assert CliRunner().invoke(app, command + ["--cache-dir", str(tmp_path / "first")]).exit_code == 0
    (output / "part-000002.parquet").unlink()  # as if killed before the last chunk
    local_host.log.requests.clear()
    result = CliRunner().invoke(app, command + ["--cache-dir", str(tmp_path / "second"), "--resume"])
    assert result.exit_code == 0, result.output
    assert "resumed after the 10 rows" in result.output
    requested = sorted(float(query["ra"]) for _, query, _ in local_host.log.requests)
    assert requested == [150.10, 150.11]  # rows 10 and 11 only, though the new cache is empty
    import pyarrow.dataset

    assert pyarrow.dataset.dataset(output).to_table().column("name").to_pylist() == [f"g{i}" for i in range(12)]
