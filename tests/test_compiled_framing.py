"""The compiled framing and simplejpeg decoding give the model inputs of the numpy/PIL reference."""

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from galaxymorph import Preprocessing
from galaxymorph.preprocess import compiled, decode
from galaxymorph.preprocess.decode import decode_array, read_model_input
from galaxymorph.preprocess.framing import reference_kernels
from galaxymorph.sources.synthetic import synthetic_galaxy

GZ1 = Path(__file__).resolve().parents[2] / "shared" / "data" / "gz1-sdss"


def reference_input(path, preprocessing=Preprocessing()):
    """The model input as the numpy reference makes it: PIL decoding, numpy and scipy framing."""
    with reference_kernels(), pytest.MonkeyPatch.context() as patch:
        patch.setattr(decode, "_decode_jpeg_reduced", lambda *args: None)
        return read_model_input(path, preprocessing)


def assert_same_input(path, preprocessing=Preprocessing()):
    fast, reference = read_model_input(path, preprocessing), reference_input(path, preprocessing)
    assert np.abs(fast.pixels - reference.pixels).max() <= 1e-6, path
    assert (fast.galaxy_found, fast.galaxy_truncated) == (reference.galaxy_found, reference.galaxy_truncated), path


@pytest.fixture(scope="module")
def galaxies(tmp_path_factory):
    """Generated galaxies of every kind, as JPEGs of sizes that make the decoder pick each scale,
    grey JPEGs and PNGs."""
    folder = tmp_path_factory.mktemp("galaxies")
    rng = np.random.default_rng(3)
    written = []
    for i, (kind, side) in enumerate([(k, s) for k in ("spiral", "elliptical") for s in (70, 150, 424, 900)]):
        image = Image.fromarray(synthetic_galaxy(kind, rng, size=side))
        written.append(folder / f"{i}.jpeg")
        image.save(written[-1], quality=90)
        if side == 150:
            written.append(folder / f"{i}-grey.jpeg")
            image.convert("L").save(written[-1])
            written.append(folder / f"{i}.png")
            image.save(written[-1])
    return written


def test_generated_galaxies_get_the_reference_inputs(galaxies):
    for path in galaxies:
        assert_same_input(path)
        assert_same_input(path, Preprocessing(framing=False))


def test_arrays_and_floating_point_images_get_the_reference_inputs():
    rng = np.random.default_rng(4)
    for pixels in (synthetic_galaxy("spiral", rng, size=131), synthetic_galaxy("elliptical", rng, size=96)[..., 0],
                   synthetic_galaxy("spiral", rng, size=120).astype(np.float32) / 255):
        fast = decode_array(pixels, "array")
        with reference_kernels():
            reference = decode_array(pixels, "array")
        assert np.abs(fast.pixels - reference.pixels).max() <= 1e-6
        assert fast.galaxy_found == reference.galaxy_found


def test_simplejpeg_decodes_the_pixels_pil_decodes_at_the_same_scale(galaxies):
    for path in galaxies:
        if path.suffix != ".jpeg":
            continue
        image = Image.open(path)
        image.draft("RGB", (decode.decoded_side(Preprocessing()),) * 2)
        expected = np.asarray(image.convert("RGB"))
        decoded = decode._decode_jpeg_reduced(path, Preprocessing(), None, 10**8)
        assert decoded is not None and np.array_equal(decoded, expected), path


def test_jpegs_simplejpeg_refuses_are_read_by_pil(tmp_path):
    cmyk = tmp_path / "cmyk.jpeg"
    Image.fromarray(synthetic_galaxy("spiral", np.random.default_rng(5), size=120)).convert("CMYK").save(cmyk)
    truncated = tmp_path / "truncated.jpeg"
    buffer = io.BytesIO()
    Image.fromarray(synthetic_galaxy("spiral", np.random.default_rng(6), size=200)).save(buffer, "JPEG")
    truncated.write_bytes(buffer.getvalue()[:-300])
    multi = tmp_path / "pair.mpo"  # a multi-picture file, which PIL reads whole
    first = Image.fromarray(synthetic_galaxy("spiral", np.random.default_rng(7), size=300))
    first.save(multi, "MPO", save_all=True, append_images=[first.rotate(90)])
    for path in (cmyk, truncated, multi):
        assert decode._decode_jpeg_reduced(path, Preprocessing(), None, 10**8) is None, path
    assert_same_input(cmyk)
    assert_same_input(multi)


def test_float_16_bit_and_unbounded_images_get_the_reference_inputs(tmp_path):
    rng = np.random.default_rng(8)
    galaxy = synthetic_galaxy("spiral", rng, size=160)[..., 1].astype(np.float64)
    Image.fromarray((galaxy * 257).astype(np.uint16)).save(tmp_path / "sixteen.png")
    Image.fromarray((galaxy / 255).astype(np.float32)).save(tmp_path / "float.tiff")
    unbounded = (galaxy / 255).astype(np.float32)
    unbounded[:, :80] = -1e30  # its scaling overflows to -inf: once made the median search loop for ever
    Image.fromarray(unbounded).save(tmp_path / "unbounded.tiff")
    for name in ("sixteen.png", "float.tiff", "unbounded.tiff"):
        assert_same_input(tmp_path / name)


@pytest.mark.parametrize("values", [
    [0.0] * 50 + [1.0] * 50,  # the two middle values in far-apart bins
    [0.2] * 101,
    [0.5],
    [-3.0, 7.0, 0.25, 0.25],  # outside [0, 1]
    [-np.inf] * 40 + [0.5] * 30,  # infinities
    [0.1 + i * 1e-17 for i in range(200)],  # a range too narrow for a histogram
    list(np.random.default_rng(0).integers(0, 40, 11236) / 1020),  # quantised sky levels
    list(np.random.default_rng(1).random(999) ** 20),  # crowded near 0
])
def test_the_compiled_median_is_numpys(values):
    values = np.array(values)
    assert compiled.median(values) == np.median(values)


def test_the_compiled_filter_and_labels_are_scipys():
    rng = np.random.default_rng(7)
    for shape in ((1, 1), (2, 5), (37, 53), (106, 106)):
        image = rng.random(shape)
        assert np.array_equal(compiled.uniform_filter3(image), ndimage.uniform_filter(image, size=3))
        mask = image > 0.6
        labels, areas = compiled.label_components(mask)
        expected, count = ndimage.label(mask, structure=np.ones((3, 3)))
        assert np.array_equal(labels, expected) and len(areas) == count + 1
        assert np.array_equal(areas[1:], np.bincount(expected.ravel(), minlength=count + 1)[1:])


@pytest.mark.skipif(not GZ1.is_dir(), reason="../shared/data/gz1-sdss is not present")
def test_every_gz1_sdss_image_gets_the_reference_input():
    for path in sorted((GZ1 / "images").iterdir()):
        assert_same_input(path)
