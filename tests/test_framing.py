import json

import numpy as np
import pytest
from PIL import Image

from galaxymorph import Preprocessing, load_image
from galaxymorph.models import create_model, save_checkpoint
from galaxymorph.prediction import PredictOptions, predict
from galaxymorph.preprocess.framing import find_central_source
from galaxymorph.sources.synthetic import synthetic_galaxy, write_examples

FRAMED = Preprocessing(framing=True)


def gaussian(size=101, sigma=6.0, centre=(50.0, 50.0), noise=0.01, seed=0):
    y, x = np.mgrid[:size, :size]
    blob = np.exp(-((x - centre[0]) ** 2 + (y - centre[1]) ** 2) / (2 * sigma**2))
    return blob + np.random.default_rng(seed).normal(0, noise, blob.shape)


def test_central_source_position_and_size():
    source = find_central_source(gaussian(centre=(52.0, 49.0)))
    assert source.found
    assert source.x == pytest.approx(52.0, abs=0.5) and source.y == pytest.approx(49.0, abs=0.5)
    # A 2-D Gaussian holds half of its light within 1.177 sigma.
    assert source.radius_50 == pytest.approx(1.177 * 6.0, rel=0.1)


def test_no_central_source_in_empty_sky():
    assert not find_central_source(np.random.default_rng(1).normal(0, 0.01, (80, 80))).found
    off_centre = gaussian(centre=(10.0, 10.0), sigma=2.0)
    assert not find_central_source(off_centre).found


def test_the_galaxy_measures_the_same_when_the_image_is_turned(tmp_path):
    """Exactly, also on even-sized 8-bit images, whose smoothed pixels often sit on the threshold."""
    path = write_examples(tmp_path, 2, seed=8, suffix=".png")[1][0]
    intensity = np.asarray(Image.open(path).convert("L"), dtype=np.float64) / 255
    source = find_central_source(intensity)
    centre = (intensity.shape[0] - 1) / 2
    for turns in (1, 2, 3):
        turned = find_central_source(np.rot90(intensity, turns))
        # np.rot90 turns anticlockwise: (x, y) -> (y, size - 1 - x) per quarter turn.
        x, y = source.x, source.y
        for _ in range(turns):
            x, y = y, 2 * centre - x
        assert (turned.x, turned.y) == pytest.approx((x, y), abs=1e-9)
        assert turned.radius_50 == pytest.approx(source.radius_50, abs=1e-9)


def test_a_turned_full_size_sdss_cutout_gives_the_turned_model_input():
    """423 px (SDSS's cutout size, as a PNG, FITS or array holds it) is searched on a copy reduced
    4x, which cannot be centred on whole pixels; 8-bit and floating-point pixels alike."""
    from galaxymorph.preprocess.decode import decode_array

    image = synthetic_galaxy("spiral", np.random.default_rng(5), size=423)
    for pixels in (image, image / 255.0):
        framed = decode_array(pixels, "galaxy").pixels
        for turns in (1, 2, 3):
            turned = decode_array(np.ascontiguousarray(np.rot90(pixels, turns)), "turned").pixels
            np.testing.assert_allclose(np.rot90(turned, -turns, axes=(1, 2)), framed, atol=1e-5)


def zoomed_out(image: np.ndarray, factor: int) -> np.ndarray:
    """The same galaxy in a frame `factor` times wider (a shrunk copy on sky of the same statistics)."""
    size = image.shape[0]
    small = np.asarray(Image.fromarray(image).resize((size // factor,) * 2, Image.Resampling.LANCZOS))
    corner = image[:40, :40].reshape(-1, 3).astype(np.float64)
    sky = np.random.default_rng(0).normal(corner.mean(axis=0), corner.std(axis=0), image.shape)
    canvas = np.clip(sky, 0, 255).astype(np.uint8)
    offset = (size - small.shape[0]) // 2
    canvas[offset:offset + small.shape[0], offset:offset + small.shape[1]] = small
    return canvas


def test_framing_gives_the_same_input_whatever_the_zoom(tmp_path):
    galaxy = synthetic_galaxy("spiral", np.random.default_rng(4), size=384)
    paths = []
    for factor in (1, 2):
        path = tmp_path / f"zoom-{factor}.png"
        Image.fromarray(galaxy if factor == 1 else zoomed_out(galaxy, factor)).save(path)
        paths.append(path)

    def similarity(preprocessing):
        a, b = (load_image(path, preprocessing).ravel() for path in paths)
        return np.corrcoef(a, b)[0, 1]

    fixed_crop = Preprocessing(framing=False)
    assert similarity(FRAMED) > 0.9
    assert similarity(FRAMED) > similarity(fixed_crop) + 0.1


def test_small_galaxies_are_measured_at_full_resolution(tmp_path):
    """A galaxy 16 times smaller than its frame is framed like the same galaxy filling it."""
    galaxy = synthetic_galaxy("spiral", np.random.default_rng(5), size=512)
    paths = []
    for factor in (2, 16):
        path = tmp_path / f"zoom-{factor}.png"
        Image.fromarray(zoomed_out(galaxy, factor)).save(path)
        paths.append(path)
    near, far = (load_image(path, FRAMED).mean(axis=0) for path in paths)
    assert np.corrcoef(near.ravel(), far.ravel())[0, 1] > 0.8


def test_framing_is_recorded_and_flags_images_without_a_galaxy(tmp_path):
    model = create_model("galaxynet", classes=("elliptical", "spiral"))
    checkpoint = save_checkpoint(model, tmp_path / "framed.pt", architecture="galaxynet", preprocessing=FRAMED)
    assert json.loads(checkpoint.with_suffix(".json").read_text())["preprocessing"]["framing"] is True
    galaxy = tmp_path / "galaxy.png"
    Image.fromarray(synthetic_galaxy("elliptical", np.random.default_rng(2), size=128)).save(galaxy)
    sky = tmp_path / "sky.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 6, (128, 128, 3), dtype=np.uint8)).save(sky)
    rows = next(predict([galaxy, sky], checkpoint, options=PredictOptions(workers=0)))
    assert [row["galaxy_found"] for row in rows] == [True, False]
    assert all(row["label"] in ("elliptical", "spiral") and not row["error"] for row in rows)
    fixed_crop = save_checkpoint(model, tmp_path / "fixed.pt", architecture="galaxynet",
                                 preprocessing=Preprocessing(framing=False))
    plain = next(predict([galaxy], fixed_crop, options=PredictOptions(workers=0)))
    assert "galaxy_found" not in plain[0]


def test_frame_fill_is_checked():
    with pytest.raises(ValueError, match="frame_fill"):
        Preprocessing(frame_fill=1.5)


def test_the_galaxy_measures_the_same_whatever_the_noise(monkeypatch):
    """The extent is an isophote relative to the galaxy's own peak, so a deeper (less noisy) image
    of the same galaxy is framed the same; a threshold set by the noise alone grew with depth."""
    import galaxymorph.preprocess.framing as framing

    y, x = np.indices((97, 97)) - 48.0
    galaxy = 0.6 * np.exp(-np.hypot(x, y / 0.7) / 4.0) + 0.1
    noises = (0.05, 0.001)
    radii = [find_central_source(galaxy + np.random.default_rng(1).normal(0, noise, galaxy.shape)).radius_50
             for noise in noises]
    assert radii[1] == pytest.approx(radii[0], rel=0.07)
    monkeypatch.setattr(framing, "PEAK_FRACTION", 0.0)
    noise_set = [find_central_source(galaxy + np.random.default_rng(1).normal(0, noise, galaxy.shape)).radius_50
                 for noise in noises]
    assert noise_set[1] > 1.2 * noise_set[0]
