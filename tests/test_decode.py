import numpy as np
import pytest
from astropy.io import fits
from PIL import Image

from galaxymorph import ImageReadError, Preprocessing, load_image
from galaxymorph.preprocess.decode import is_image_file

SHAPE = (3, 64, 64)


def gradient(size: int = 100) -> np.ndarray:
    y, x = np.mgrid[:size, :size]
    return np.stack([x, y, x + y], axis=-1).astype(np.float64) / (2 * size)


def test_jpeg_is_read_to_the_model_input(galaxy_jpeg):
    image = load_image(galaxy_jpeg)
    assert image.shape == SHAPE and image.dtype == np.float32
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert image[:, 28:36, 28:36].mean() > image[:, :4, :4].mean()  # the galaxy is in the centre


def test_jpeg_draft_mode_matches_a_full_decode(tmp_path):
    path = tmp_path / "big.jpeg"
    Image.fromarray((gradient(800) * 255).astype(np.uint8)).save(path, quality=95)
    drafted = load_image(path, Preprocessing(framing=False))
    with Image.open(path) as full:
        reference = np.asarray(full.convert("RGB").resize((64, 64), box=(240, 240, 560, 560)), np.float32) / 255
    assert np.abs(drafted - reference.transpose(2, 0, 1)).mean() < 0.02


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P"])
def test_png_modes(tmp_path, mode):
    path = tmp_path / f"{mode}.png"
    Image.fromarray((gradient() * 255).astype(np.uint8)).convert(mode).save(path)
    image = load_image(path)
    assert image.shape == SHAPE
    if mode == "L":
        assert np.allclose(image[0], image[1]) and np.allclose(image[1], image[2])


def test_16_bit_png_keeps_its_range(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray((gradient()[..., 0] * 65535).astype(np.uint16)).save(path)
    assert Image.open(path).mode.startswith("I")
    image = load_image(path, Preprocessing(crop_fraction=1.0, framing=False))
    assert image.shape == SHAPE
    assert image[0, 0, -1] == pytest.approx(0.5, abs=0.02)  # x = 99/200 at the right edge


def test_crop_fraction_keeps_the_centre(tmp_path):
    array = np.zeros((100, 100, 3), np.uint8)
    array[25:75, 25:75] = 255
    path = tmp_path / "square.png"
    Image.fromarray(array).save(path)
    assert load_image(path, Preprocessing(crop_fraction=0.4, framing=False)).min() == pytest.approx(1.0)
    assert load_image(path, Preprocessing(crop_fraction=1.0, framing=False)).min() == 0.0


def fits_galaxy(shape=(50, 50)) -> np.ndarray:
    y, x = np.mgrid[: shape[0], : shape[1]] - np.array(shape)[:, None, None] / 2
    rng = np.random.default_rng(0)
    return (100 * np.exp(-np.hypot(x, y) / 4) + rng.normal(0, 1, shape)).astype(np.float32)


@pytest.mark.parametrize("layout", ["single", "bands_first", "bands_last"])
def test_fits_images_and_cubes_are_stretched(tmp_path, layout):
    band = fits_galaxy()
    data = {"single": band, "bands_first": np.stack([band, band * 0.8, band * 0.5]),
            "bands_last": np.stack([band, band, band], axis=-1)}[layout]
    path = tmp_path / f"{layout}.fits"
    fits.PrimaryHDU(data).writeto(path)
    image = load_image(path)
    assert image.shape == SHAPE
    assert image[:, 30:34, 30:34].mean() > 0.5 > image[:, :4, :4].mean()


def lopsided_image() -> np.ndarray:
    """An RGB image (Y, X, 3), top row first, whose only bright source sits top left."""
    y, x = np.indices((96, 96))
    light = 200 * np.exp(-np.hypot(x - 30, y - 24) / 5) + np.random.default_rng(0).normal(8, 1, (96, 96))
    return np.repeat(np.clip(light, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


WHOLE = Preprocessing(framing=False, crop_fraction=1.0)


def brightest_quadrant(image: np.ndarray) -> tuple[int, int]:
    row, column = np.unravel_index(np.argmax(image.mean(axis=0)), image.shape[1:])
    return int(row >= image.shape[1] // 2), int(column >= image.shape[2] // 2)


def test_fits_is_read_bottom_row_first_as_astropy_and_ds9_show_it(tmp_path):
    image = lopsided_image()
    path = tmp_path / "standard.fits"
    fits.PrimaryHDU(np.ascontiguousarray(image[::-1].transpose(2, 0, 1)).astype(np.float32)).writeto(path)
    Image.fromarray(image).save(tmp_path / "same.png")
    assert brightest_quadrant(load_image(tmp_path / "same.png", WHOLE)) == (0, 0)
    assert brightest_quadrant(load_image(path, WHOLE)) == (0, 0)


@pytest.mark.parametrize("flip_y, flip_x", [(True, False), (False, True), (True, True)])
def test_fits_with_a_celestial_wcs_is_turned_north_up_and_east_left(tmp_path, flip_y, flip_x):
    from astropy.wcs import WCS

    stored = lopsided_image()[::-1].transpose(2, 0, 1).astype(np.float32)  # standard: north up, bottom row first
    wcs = WCS(naxis=2)
    wcs.wcs.ctype, wcs.wcs.crval, wcs.wcs.crpix = ["RA---TAN", "DEC--TAN"], [150.0, 2.0], [48.5, 48.5]
    wcs.wcs.cd = [[1e-4 if flip_x else -1e-4, 0.0], [0.0, -1e-4 if flip_y else 1e-4]]
    data = stored[:, ::-1 if flip_y else 1, ::-1 if flip_x else 1]  # the same sky, stored the other way
    path = tmp_path / "turned.fits"
    fits.PrimaryHDU(np.ascontiguousarray(data), header=wcs.to_header()).writeto(path)
    assert brightest_quadrant(load_image(path, WHOLE)) == (0, 0)


def test_fits_nans_are_filled_with_the_background(tmp_path):
    data = fits_galaxy()
    data[:5] = np.nan
    path = tmp_path / "masked.fits"
    fits.PrimaryHDU(data).writeto(path)
    image = load_image(path)
    assert np.isfinite(image).all()


def test_fits_in_an_extension_is_found(tmp_path):
    path = tmp_path / "extension.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(fits_galaxy())]).writeto(path)
    assert load_image(path).shape == SHAPE


def test_fits_without_a_fits_suffix_is_recognised(tmp_path):
    path = tmp_path / "cutout.dat"
    fits.PrimaryHDU(fits_galaxy()).writeto(path)
    assert load_image(path).shape == SHAPE


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.jpeg", b"", "file is empty"),
        ("text.png", b"this is not an image at all", "not a readable image"),
        ("random.jpeg", bytes(range(256)) * 4, "not a readable image"),
    ],
)
def test_bad_files_raise_an_error_naming_the_file(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ImageReadError, match=message) as error:
        load_image(path)
    assert name in str(error.value)


def test_truncated_jpeg(tmp_path, galaxy_jpeg):
    path = tmp_path / "truncated.jpeg"
    path.write_bytes(galaxy_jpeg.read_bytes()[:600])
    with pytest.raises(ImageReadError, match="truncated.jpeg: corrupt or truncated"):
        load_image(path)


def test_corrupt_png(tmp_path):
    path = tmp_path / "corrupt.png"
    Image.fromarray((gradient() * 255).astype(np.uint8)).save(path)
    data = bytearray(path.read_bytes())
    data[60:200] = bytes(140)
    path.write_bytes(bytes(data))
    with pytest.raises(ImageReadError, match="corrupt.png"):
        load_image(path)


def test_missing_file(tmp_path):
    with pytest.raises(ImageReadError, match="nowhere.jpeg: file not found"):
        load_image(tmp_path / "nowhere.jpeg")


def test_too_small_image(tmp_path):
    path = tmp_path / "tiny.png"
    Image.new("RGB", (5, 3)).save(path)
    with pytest.raises(ImageReadError, match=r"tiny.png: image is 5x3 px"):
        load_image(path)


@pytest.mark.parametrize(("shape", "message"), [((4, 30, 30), "image of 30x30 px holds 3,600 values: more than 3 bands"),
                                                ((2, 3, 30, 30), "holds 5,400 values: more than 3 bands"),
                                                ((5, 30, 2), "expected a 2-D image or a 3-band cube")])
def test_fits_of_the_wrong_dimensions(tmp_path, shape, message):
    path = tmp_path / "cube.fits"
    fits.PrimaryHDU(np.ones(shape, np.float32)).writeto(path)
    with pytest.raises(ImageReadError, match=message):
        load_image(path)


def test_fits_without_image_data(tmp_path):
    path = tmp_path / "header-only.fits"
    fits.PrimaryHDU().writeto(path)
    with pytest.raises(ImageReadError, match="no image data"):
        load_image(path)


def test_all_nan_fits(tmp_path):
    path = tmp_path / "nan.fits"
    fits.PrimaryHDU(np.full((20, 20), np.nan, np.float32)).writeto(path)
    with pytest.raises(ImageReadError, match="no finite pixels"):
        load_image(path)


def test_image_suffixes():
    assert is_image_file("a/b/C.JPEG") and is_image_file("x.fits.gz") and not is_image_file("labels.csv")


def test_preprocessing_rejects_bad_settings():
    with pytest.raises(ValueError, match="crop_fraction"):
        Preprocessing(crop_fraction=0)
    with pytest.raises(ValueError, match="image_size"):
        Preprocessing(image_size=4)


def test_framing_resamples_with_pils_antialiased_bilinear_filter():
    """Shrinking and enlarging a box with fractional edges, as PIL's BILINEAR resize does (to float32 rounding)."""
    from galaxymorph.preprocess.decode import _resample_bands

    bands = np.random.default_rng(0).random((3, 150, 130)).astype(np.float32)
    box = (10.5, 7.25, 120.5, 117.25)
    for size in (64, 200):
        expected = np.stack([np.asarray(Image.fromarray(band, mode="F").resize((size, size), Image.Resampling.BILINEAR, box=box))
                             for band in bands])
        np.testing.assert_allclose(_resample_bands(bands, box, size), expected, atol=2e-5)
