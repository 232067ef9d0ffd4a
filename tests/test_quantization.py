import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from galaxymorph.cli import app
from galaxymorph.errors import ModelError
from galaxymorph.models import load_checkpoint, load_model, save_checkpoint
from galaxymorph.models.checkpoint import int8_graph_path
from galaxymorph.prediction import Classifier
from galaxymorph.preprocess.parallel import decode_files
from galaxymorph.sources.synthetic import write_examples

runner = CliRunner()


@pytest.fixture
def checkpoint(trained_checkpoint, tmp_path):
    for suffix in (".pt", ".json"):
        shutil.copy(trained_checkpoint.with_suffix(suffix), tmp_path / f"mine{suffix}")
    return tmp_path / "mine.pt"


def test_quantize_writes_an_int8_graph_that_auto_picks_on_a_cpu(checkpoint, synthetic_catalog):
    result = runner.invoke(app, ["quantize", str(checkpoint), str(synthetic_catalog), "--images", "64", "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert "mine.int8.onnx written from 64 training images" in result.output
    recorded = json.loads(checkpoint.with_suffix(".json").read_text())["int8"]
    assert recorded["galaxies"] == 36 and recorded["same_class"] >= 0.9

    loaded = load_checkpoint(checkpoint)
    assert loaded.int8_graph == int8_graph_path(checkpoint) and Classifier(loaded).backend == "onnx-int8"
    images = np.random.default_rng(0).uniform(size=(8, 3, 64, 64)).astype(np.float32)
    int8, _ = Classifier(loaded, backend="onnx-int8").probabilities(images)
    exact, _ = Classifier(loaded, backend="onnx").probabilities(images)
    assert 0 < np.abs(int8 - exact).max() < 0.05  # int8 arithmetic, close to float32


def test_new_weights_remove_a_stale_int8_graph(checkpoint, synthetic_catalog):
    from galaxymorph.quantization import quantize_checkpoint

    quantize_checkpoint(checkpoint, synthetic_catalog, images=32)
    loaded = load_checkpoint(checkpoint)
    save_checkpoint(loaded.model, checkpoint, architecture=loaded.metadata["architecture"], preprocessing=loaded.preprocessing)
    assert not int8_graph_path(checkpoint).exists()
    assert Classifier(load_checkpoint(checkpoint)).backend == "onnx"


def test_int8_back_end_without_a_graph_is_refused_naming_the_model(checkpoint):
    with pytest.raises(ModelError, match="model mine has no int8 graph; make one with `galaxymorph quantize"):
        Classifier(load_checkpoint(checkpoint), backend="onnx-int8")


@pytest.mark.parametrize("name", ["galaxynet_ensemble", "galaxynet", "galaxynet_distilled"])
def test_bundled_int8_graphs_are_quantised_from_the_bundled_weights(name, tmp_path):
    """A graph left over from earlier weights would disagree with the float model far more than this."""
    loaded = load_model(name)
    assert loaded.int8_graph is not None and loaded.metadata["int8"]["same_class"] > 0.98
    files = [path for path, _ in write_examples(tmp_path, 16, seed=3, size=128)]
    images = decode_files(files, loaded.preprocessing).images
    int8, _ = Classifier(loaded, backend="onnx-int8").probabilities(images)
    exact, _ = Classifier(loaded, backend="onnx").probabilities(images)
    assert np.abs(int8 - exact).mean() < 0.01
