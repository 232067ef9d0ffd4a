"""Framing in batches with torch (the GPU's path, run here on the CPU) gives the model inputs and
galaxy flags of the per-image framing."""

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from galaxymorph import Preprocessing, PredictOptions, classify
from galaxymorph.preprocess import batched as batched_module
from galaxymorph.preprocess import decode
from galaxymorph.preprocess.augment import symmetry_views
from galaxymorph.preprocess.batched import frame_batch
from galaxymorph.preprocess.decode import decode_array
from galaxymorph.preprocess.parallel import decode_files
from galaxymorph.sources.synthetic import synthetic_galaxy

GZ1_IMAGES = Path(__file__).resolve().parents[2] / "shared" / "data" / "gz1-sdss" / "images"


def assert_frames_like_each_image(images: list[np.ndarray], preprocessing=Preprocessing()):
    framed = frame_batch(torch.from_numpy(np.stack(images)), preprocessing)
    for i, pixels in enumerate(images):
        expected = decode_array(pixels, f"image {i}", preprocessing)
        assert np.abs(framed.inputs[i].numpy() - expected.pixels).max() <= 1e-6, i
        if preprocessing.framing:
            flags = (bool(framed.galaxy_found[i]), bool(framed.galaxy_truncated[i]))
            assert flags == (expected.galaxy_found, expected.galaxy_truncated), i
        else:
            assert framed.galaxy_found is None and expected.galaxy_found is None


def test_generated_galaxies_of_every_kind_and_zoom_frame_as_one_by_one():
    rng = np.random.default_rng(7)
    for side in (64, 150, 212):
        galaxies = [synthetic_galaxy(kind, rng, size=side, scale=scale)
                    for kind in ("spiral", "elliptical") for scale in (0.3, side / 128, 3.0, 8.0)]
        assert_frames_like_each_image(galaxies)
        assert_frames_like_each_image(galaxies, Preprocessing(framing=False))


def test_oblong_and_tiny_images_frame_as_one_by_one():
    rng = np.random.default_rng(10)
    for height, width in ((150, 201), (97, 300), (9, 13)):
        side = max(height, width)
        galaxies = [synthetic_galaxy(kind, rng, size=side)[:height, :width] for kind in ("spiral", "elliptical")]
        assert_frames_like_each_image([np.ascontiguousarray(galaxy) for galaxy in galaxies])


def test_noise_blank_bright_and_off_centre_images_frame_as_one_by_one():
    rng = np.random.default_rng(8)
    noise = rng.integers(0, 256, (150, 150, 3), dtype=np.uint8)
    blank = np.full((150, 150, 3), 12, dtype=np.uint8)
    bright = np.full((150, 150, 3), 180, dtype=np.uint8)
    bright[60:90, 60:90] = 250
    y, x = np.indices((150, 150)) - 74.5
    cut_by_edge = np.repeat(230 * np.exp(-np.abs(x) / 90 - np.abs(y) / 7)[..., None], 3, axis=2).astype(np.uint8)
    assert_frames_like_each_image([noise, blank, bright, cut_by_edge])
    framed = frame_batch(torch.from_numpy(np.stack([noise, blank, bright, cut_by_edge])))
    assert framed.galaxy_truncated[2] and framed.galaxy_truncated[3]


@pytest.mark.skipif(not GZ1_IMAGES.is_dir(), reason="needs ../shared/data/gz1-sdss")
def test_real_gz1_cutouts_frame_as_one_by_one():
    """Every 20th gz1-sdss cutout (benchmarks/framing_speed.py --batched compares all of them)."""
    files = sorted(GZ1_IMAGES.glob("*.jpeg"))[::20]
    assert_frames_like_each_image([decode.read_jpeg_pixels(file) for file in files])


def test_only_uint8_rgb_batches_are_framed():
    with pytest.raises(ValueError, match="uint8"):
        frame_batch(torch.zeros(2, 64, 64, 3))


def test_symmetry_views_of_tensors_are_those_of_arrays():
    images = np.random.default_rng(1).random((2, 3, 8, 8)).astype(np.float32)
    assert np.array_equal(symmetry_views(torch.from_numpy(images)).numpy(), symmetry_views(images))


@pytest.fixture(scope="module")
def mixed_inputs(tmp_path_factory):
    """JPEGs of two sizes, a PNG (framed where it is decoded), a corrupt JPEG, a JPEG named as FITS
    and a missing file."""
    folder = tmp_path_factory.mktemp("mixed")
    rng = np.random.default_rng(9)
    files = []  # sizes interleaved: a batch's JPEGs of one size are not side by side in its raw buffer
    for i, (kind, side) in enumerate([(k, s) for k in ("spiral", "elliptical", "spiral") for s in (424, 150)]):
        files.append(folder / f"{i}.jpeg")
        Image.fromarray(synthetic_galaxy(kind, rng, size=side)).save(files[-1], quality=90)
    files.append(folder / "galaxy.png")
    Image.fromarray(synthetic_galaxy("spiral", rng, size=150)).save(files[-1])
    files.append(folder / "corrupt.jpeg")
    files[-1].write_bytes(files[0].read_bytes()[:300])
    files.append(folder / "jpeg-named.fits")  # read as FITS by its name, so refused either way
    files[-1].write_bytes(files[0].read_bytes())
    return files + [folder / "missing.jpeg"]


@pytest.mark.parametrize("workers", [0, 2])
def test_classify_with_batched_framing_writes_the_same_catalog(mixed_inputs, tmp_path, workers, monkeypatch):
    framed, frame_batch_itself = [], batched_module.frame_batch

    def counted(pixels, preprocessing):
        framed.append(len(pixels))
        return frame_batch_itself(pixels, preprocessing)

    tables = {}
    for batched in (False, True):
        output = tmp_path / f"{batched}.parquet"
        with monkeypatch.context() as patch:
            patch.setattr("galaxymorph.preprocess.batched.frame_batch", counted)
            classify(mixed_inputs, output, options=PredictOptions(workers=workers, batch_size=4, batched_framing=batched))
        tables[batched] = pq.read_table(output).to_pandas()
    assert sum(framed) == 6  # the six readable JPEGs, framed in batches and only with batched framing
    plain, batched = tables[False], tables[True]
    assert np.allclose(plain.p_spiral, batched.p_spiral, atol=1e-6, equal_nan=True)
    for column in ("label", "confident", "galaxy_found", "galaxy_truncated", "error"):
        assert list(plain[column]) == list(batched[column]), column
    assert all(batched.error.str.contains(name).any() for name in ("corrupt.jpeg", "jpeg-named.fits", "missing.jpeg"))


def test_jpegs_that_do_not_fit_the_raw_buffer_are_framed_by_the_decoder(mixed_inputs):
    files = mixed_inputs[:3]
    room_for_one = decode.read_jpeg_pixels(files[0]).size + 10
    batch = decode_files(files, Preprocessing(), raw=np.empty(room_for_one, np.uint8))
    assert batch.raw.shapes[0] is not None and batch.raw.shapes[1] is None and batch.raw.shapes[2] is None
    plain = decode_files(files, Preprocessing())
    assert np.array_equal(batch.images[1:], plain.images[1:]) and not batch.images[0].any()
    assert batch.galaxy_found[1:] == plain.galaxy_found[1:] and batch.galaxy_found[0] is None
