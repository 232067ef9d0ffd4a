"""Hostile and broken inputs: every one becomes its own error row, and the job goes on."""

import gzip
import io

import h5py
import numpy as np
import pyarrow.csv
import pytest
from astropy.io import fits
from PIL import Image
from typer.testing import CliRunner

from galaxymorph.cli import app
from galaxymorph.preprocess import load_image
from galaxymorph.sources.synthetic import synthetic_galaxy, write_examples


def fits_with_card(path, keyword, card):
    """A small valid FITS image whose header card `keyword` is replaced by `card` (80 characters)."""
    buffer = io.BytesIO()
    fits.PrimaryHDU(np.ones((64, 64), np.float32)).writeto(buffer)
    data = bytearray(buffer.getvalue())
    start = data.find(keyword.ljust(8).encode() + b"=")
    data[start:start + 80] = card.ljust(80).encode()
    path.write_bytes(bytes(data))
    return path


def fits_header_claiming(path, width, height):
    """A gzipped FITS file whose header claims a large image, with only a little data behind it."""
    header = fits.Header({"SIMPLE": True, "BITPIX": -32, "NAXIS": 2, "NAXIS1": width, "NAXIS2": height})
    path.write_bytes(gzip.compress(header.tostring().encode() + bytes(2880)))
    return path


def forged_jpeg(path, width, height):
    """A small JPEG whose header claims `width` x `height` px: its decoder would fill them with grey."""
    buffer = io.BytesIO()
    Image.fromarray(synthetic_galaxy("spiral", np.random.default_rng(1), size=64)).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    frame = data.find(b"\xff\xc0")
    data[frame + 5:frame + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    path.write_bytes(bytes(data))
    return path


def float_tiff(path, pixels):
    Image.fromarray(pixels.astype(np.float32), mode="F").save(path)
    return path


@pytest.fixture(scope="module")
def hostile_folder(tmp_path_factory):
    """Good JPEGs with one of every bad file that was ever reported, and the reason each must give."""
    folder = tmp_path_factory.mktemp("hostile")
    write_examples(folder / "good", 6, seed=2)
    bad = folder / "bad"
    bad.mkdir()
    grey = synthetic_galaxy("elliptical", np.random.default_rng(4), size=128).mean(axis=2) / 255
    holes = grey.copy()
    holes[40:80, 40:80] = np.nan
    with h5py.File(bad / "group.h5", "w") as handle:  # not an image suffix: given by name
        handle.create_group("images")
    expected = {
        fits_with_card(bad / "bitpix.fits", "BITPIX", "BITPIX  =                   12"): "BITPIX = 12 is not a FITS data type",
        fits_with_card(bad / "naxis.fits", "NAXIS1", "NAXIS1  = 'abc'"): "cannot be read",
        bad / "group.h5": "'images' is a Group, not an array of images",
        forged_jpeg(bad / "forged.jpeg", 4000, 4000): "cannot hold the 4000x4000 px its header claims",
        forged_jpeg(bad / "huge.jpeg", 12000, 12000): "more than the 25,000,000 pixels allowed",
        fits_header_claiming(bad / "claims.fits.gz", 10000, 10000): "image is 10000x10000 px, more than the 25,000,000",
        float_tiff(bad / "nan.tiff", np.full((64, 64), np.nan)): "image has no finite pixels",
    }
    Image.new("I;16", (6000, 6000)).save(bad / "huge16.png")
    expected[bad / "huge16.png"] = "image is 6000x6000 px, more than the 25,000,000 pixels allowed"
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(np.zeros((64, 200, 200), np.float32))]).writeto(bad / "cube.fits")
    expected[bad / "cube.fits"] = "holds 2,560,000 values: more than 3 bands"
    float_tiff(folder / "good" / "holes.tiff", holes)
    return folder, {path.stem.removesuffix(".fits"): reason for path, reason in expected.items()}


def test_a_folder_with_every_bad_file_gives_one_row_per_file_and_exits_0(hostile_folder, tmp_path, trained_checkpoint):
    folder, expected = hostile_folder
    result = CliRunner().invoke(app, ["classify", str(folder), str(folder / "bad" / "group.h5"), "-o", str(tmp_path / "out.csv"),
                                      "--model", str(trained_checkpoint), "--workers", "2", "--batch-size", "4"])
    assert result.exit_code == 0, result.output
    rows = {row["id"]: row for row in pyarrow.csv.read_csv(tmp_path / "out.csv").to_pylist()}
    assert len(rows) == 7 + len(expected)
    for name, reason in expected.items():
        assert reason in rows[name]["error"] and name in rows[name]["error"]
    good = [row for row in rows.values() if row["id"] not in expected]
    assert all(not row["error"] and 0 <= row["p_spiral"] <= 1 for row in good)


def test_non_finite_pixels_are_filled_as_in_fits_and_never_blacken_the_image(tmp_path):
    galaxy = synthetic_galaxy("spiral", np.random.default_rng(5), size=128).mean(axis=2) / 255
    clean = load_image(float_tiff(tmp_path / "clean.tiff", galaxy))
    hot = galaxy.copy()
    hot[3, 3] = np.inf
    assert np.abs(load_image(float_tiff(tmp_path / "hot.tiff", hot)) - clean).max() < 0.01  # not scaled to black
    holes = galaxy.copy()
    holes[:, :10] = np.nan
    filled = load_image(float_tiff(tmp_path / "holes.tiff", holes))
    assert np.isfinite(filled).all() and np.abs(filled - clean).mean() < 0.02


def test_the_pixel_limit_is_an_option(tmp_path, trained_checkpoint):
    Image.fromarray(synthetic_galaxy("spiral", np.random.default_rng(5), size=200)).save(tmp_path / "g.png")
    result = CliRunner().invoke(app, ["classify", str(tmp_path / "g.png"), "-o", str(tmp_path / "out.csv"),
                                      "--model", str(trained_checkpoint), "--workers", "0", "--max-pixels", "10000"])
    assert result.exit_code == 1 and "more than the 10,000 pixels allowed" in (tmp_path / "out.csv").read_text()


def test_decoding_workers_and_the_resource_tracker_end_when_classify_is_killed(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    def children(pid: int) -> set[int]:
        found = set()
        for entry in os.listdir("/proc"):
            try:
                if entry.isdigit() and int(open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()[1]) == pid:
                    found.add(int(entry))
            except OSError:
                pass
        return found

    if not sys.platform.startswith("linux"):
        pytest.skip("reads /proc")
    write_examples(tmp_path / "many", 300, seed=9)
    job = subprocess.Popen([sys.executable, "-m", "galaxymorph", "classify", str(tmp_path / "many"), "-o",
                            str(tmp_path / "out.csv"), "--workers", "2", "--batch-size", "4", "--model", "seed"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while len(workers := children(job.pid)) < 3 and time.monotonic() < deadline:  # 2 decoders + resource tracker
        time.sleep(0.1)
    assert len(workers) >= 3
    job.send_signal(signal.SIGKILL)
    job.wait()
    deadline = time.monotonic() + 15
    while (alive := {pid for pid in workers if os.path.exists(f"/proc/{pid}") and
                     open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"}) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert alive == set()
