"""Shared fixtures: generated galaxies and images, and a small model trained on them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from galaxymorph.sources.synthetic import write_examples

GZ1_SDSS = Path(__file__).resolve().parents[2] / "shared" / "data" / "gz1-sdss"


@pytest.fixture(scope="session")
def gz1_sdss() -> Path:
    """The real SDSS cutouts with Galaxy Zoo 1 labels; tests that need them skip without them."""
    if not (GZ1_SDSS / "labels.csv").is_file():
        pytest.skip("../shared/data/gz1-sdss is not present")
    return GZ1_SDSS


@pytest.fixture
def galaxy_jpeg(tmp_path: Path) -> Path:
    return write_examples(tmp_path, 1, seed=3)[0][0]


@pytest.fixture(scope="session")
def synthetic_catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A file,label catalog of 240 generated ellipticals and spirals."""
    folder = tmp_path_factory.mktemp("synthetic")
    examples = write_examples(folder / "images", 240, seed=11, size=96)
    lines = ["file,label"] + [f"images/{path.name},{kind}" for path, kind in examples]
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    return folder / "labels.csv"


@pytest.fixture(scope="session")
def trained_checkpoint(synthetic_catalog: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A GalaxyNet trained for a few epochs on the synthetic catalog."""
    from galaxymorph.training import TrainConfig, train

    output = tmp_path_factory.mktemp("model") / "synthetic.pt"
    return train(TrainConfig(labels=synthetic_catalog, output=output, architecture="galaxynet", epochs=6,
                             batch_size=32, workers=0, progress=False, use_cache=False))


def save_rgb(path: Path, array: np.ndarray, **kwargs) -> Path:
    Image.fromarray(array).save(path, **kwargs)
    return path
