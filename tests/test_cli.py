import json

import click
import pyarrow.csv
import pytest
import typer
from typer.testing import CliRunner

from galaxymorph.cli import app

runner = CliRunner()


def commands(group, path=()):
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from commands(command, (*path, name))
        else:
            yield (*path, name), command


ALL_COMMANDS = [(), ("models",), *(path for path, _ in commands(typer.main.get_command(app)))]


@pytest.mark.parametrize("path", ALL_COMMANDS, ids=" ".join)
def test_every_command_has_help(path):
    result = runner.invoke(app, [*path, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output, result.output


def test_every_help_text_renders_as_written():
    """No markup: 'h:m:s' is no emoji and '[scale]' does not vanish."""
    for path, command in commands(typer.main.get_command(app)):
        rendered = " ".join(runner.invoke(app, [*path, "--help"], terminal_width=100).output.split())
        for param in command.params:
            if getattr(param, "help", None):
                assert " ".join(param.help.split()) in rendered, (path, param.name)


def test_version_is_printed():
    from importlib.metadata import version

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"galaxymorph {version('galaxymorph')}"


def test_models_show_seed_prints_the_layers_and_a_prediction():
    result = runner.invoke(app, ["models", "show", "seed"])
    assert result.exit_code == 0, result.output
    for name in ("Conv1_Edges", "Conv2_Shapes", "Dense_Decision", "Output_Probability", "(64, 29, 29)"):
        assert name in result.output
    assert "total parameters: 822,337" in result.output
    prediction = result.output.split("prediction for a generated spiral galaxy (seed 0): ")[1]
    assert float(prediction.split("spiral ")[1]) > 0.5  # the seed model tells the generated spiral


def test_models_list():
    result = runner.invoke(app, ["models", "list"])
    assert result.exit_code == 0 and "pretrained  galaxynet" in result.output and "architecture seed" in result.output
    assert "int8 graph for CPUs" in result.output
    default, = [line for line in result.output.splitlines() if line.endswith("the default")]
    assert "galaxynet_ensemble" in default and "validation log loss 0.2" in default


def test_classify_writes_a_catalog(tmp_path, galaxy_jpeg):
    output = tmp_path / "morphology.csv"
    result = runner.invoke(app, ["classify", str(galaxy_jpeg), str(tmp_path / "gone.png"), "-o", str(output),
                                 "--workers", "0", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "2 rows written" in result.output and "1 could not be classified" in result.output
    rows = pyarrow.csv.read_csv(output).to_pylist()
    assert not rows[0]["error"] and rows[1]["error"].endswith("gone.png: file not found")


def test_classify_exit_codes(tmp_path):
    result = runner.invoke(app, ["classify", str(tmp_path / "gone.png"), "-o", str(tmp_path / "o.csv"), "--workers", "0"])
    assert result.exit_code == 1
    result = runner.invoke(app, ["classify", str(tmp_path), "-o", str(tmp_path / "o.csv"), "--model", "nonexistent"])
    assert result.exit_code == 2 and "no bundled model or checkpoint named 'nonexistent'" in result.output


def test_inputs_that_fail_whole_are_reported_on_stderr_too(tmp_path, galaxy_jpeg):
    (tmp_path / "nofile.csv").write_text("id,name\n1,a\n")
    result = runner.invoke(app, ["classify", str(tmp_path / "nofile.csv"), str(tmp_path / "gone.png"), str(galaxy_jpeg),
                                 "-o", str(tmp_path / "o.csv"), "--workers", "0", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "needs a column named 'file'" in result.stderr and "gone.png: file not found" in result.stderr
    assert "3 rows written" in result.stdout


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_no_image_found_is_an_error_and_leaves_no_empty_catalog(tmp_path, suffix):
    (tmp_path / "empty").mkdir()
    output = tmp_path / f"o{suffix}"
    result = runner.invoke(app, ["classify", str(tmp_path / "empty"), "-o", str(output), "--workers", "0"])
    assert result.exit_code == 2 and "no image found" in result.output and not output.exists()


def test_demo_runs_on_embedded_examples(tmp_path):
    result = runner.invoke(app, ["demo", "-o", str(tmp_path), "--count", "6"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "contact_sheet.png").stat().st_size > 10_000
    assert len(pyarrow.csv.read_csv(tmp_path / "morphology.csv").to_pylist()) == 6


def test_train_and_evaluate_from_the_command_line(tmp_path, synthetic_catalog):
    checkpoint = tmp_path / "tiny.pt"
    result = runner.invoke(app, ["train", str(synthetic_catalog), "-o", str(checkpoint), "--arch", "seed",
                                 "--epochs", "1", "--max-rows", "60", "--workers", "0", "--batch-size", "16",
                                 "--class-weight-power", "0", "--label-smoothing", "0.1"])
    assert result.exit_code == 0, result.output
    metadata = json.loads(checkpoint.with_suffix(".json").read_text())
    assert metadata["architecture"] == "seed" and metadata["training"]["class_weights"] == [1.0, 1.0]
    assert metadata["training"]["label_smoothing"] == 0.1
    result = runner.invoke(app, ["evaluate", str(synthetic_catalog), "--model", str(checkpoint), "--split", "val",
                                 "-o", str(tmp_path / "eval"), "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert "accuracy" in result.output and "95% interval" in result.output
    binary = json.loads((tmp_path / "eval" / "metrics.json").read_text())["spiral_vs_elliptical"]
    assert binary["accuracy_95"][0] <= binary["accuracy"] <= binary["accuracy_95"][1]


def test_train_sets_the_input_size_where_the_architecture_allows(tmp_path, synthetic_catalog, galaxy_jpeg):
    checkpoint = tmp_path / "small.pt"
    options = ["--epochs", "1", "--max-rows", "60", "--workers", "0", "--batch-size", "16", "--image-size", "48"]
    result = runner.invoke(app, ["train", str(synthetic_catalog), "-o", str(checkpoint), *options])
    assert result.exit_code == 0, result.output
    assert json.loads(checkpoint.with_suffix(".json").read_text())["preprocessing"]["image_size"] == 48
    result = runner.invoke(app, ["classify", str(galaxy_jpeg), "--model", str(checkpoint), "-o", str(tmp_path / "m.csv"),
                                 "--workers", "0", "--no-progress"])
    assert result.exit_code == 0 and not pyarrow.csv.read_csv(tmp_path / "m.csv").to_pylist()[0]["error"]
    result = runner.invoke(app, ["train", str(synthetic_catalog), "-o", str(tmp_path / "seed.pt"), "--arch", "seed", *options])
    assert result.exit_code == 2 and "seed takes 64 px inputs, not 48 px" in result.output


def test_train_reports_a_bad_catalog(tmp_path):
    (tmp_path / "labels.csv").write_text("file\na.png\n")
    result = runner.invoke(app, ["train", str(tmp_path / "labels.csv"), "-o", str(tmp_path / "m.pt")])
    assert result.exit_code == 2 and "needs a column named 'label' or 'gz1_class'" in result.output


def test_calibrate_from_the_command_line(tmp_path, trained_checkpoint, synthetic_catalog):
    import shutil

    for suffix in (".pt", ".json"):
        shutil.copy(trained_checkpoint.with_suffix(suffix), tmp_path / f"model{suffix}")
    result = runner.invoke(app, ["calibrate", str(tmp_path / "model.pt"), str(synthetic_catalog), "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert "temperature" in result.output and "ECE" in result.output
    result = runner.invoke(app, ["calibrate", str(tmp_path / "model.pt"), str(synthetic_catalog), "--split", "test"])
    assert result.exit_code == 2 and "kept for final figures" in result.output


def test_finetune_from_the_command_line(tmp_path, trained_checkpoint, synthetic_catalog):
    lines = synthetic_catalog.read_text().replace(",spiral", ",blue").replace(",elliptical", ",red")
    labels = synthetic_catalog.parent / "cli-colours.csv"
    labels.write_text(lines)
    output = tmp_path / "colours.pt"
    result = runner.invoke(app, ["finetune", "--from", str(trained_checkpoint), "--labels", str(labels), "-o", str(output),
                                 "--epochs", "2", "--freeze-epochs", "1", "--workers", "0"])
    assert result.exit_code == 0, result.output
    metadata = json.loads(output.with_suffix(".json").read_text())
    assert metadata["classes"] == ["blue", "red"] and metadata["training"]["init_from"] == str(trained_checkpoint)
    result = runner.invoke(app, ["finetune", "--from", "no-such-model", "--labels", str(labels), "-o", str(output)])
    assert result.exit_code == 2 and "no bundled model or checkpoint named 'no-such-model'" in result.output


def test_the_exported_graph_on_load_image_inputs_reproduces_classify(tmp_path, galaxy_jpeg):
    import numpy as np
    import onnx
    import onnxruntime

    from galaxymorph import load_image, load_model
    from galaxymorph.labels import spiral_probability
    from galaxymorph.prediction import PredictOptions, predict

    assert runner.invoke(app, ["export", "galaxynet", "--onnx", str(tmp_path / "g.onnx")]).exit_code == 0
    properties = {p.key: p.value for p in onnx.load(tmp_path / "g.onnx").metadata_props}
    image = load_image(galaxy_jpeg, load_model("galaxynet").preprocessing)  # framing included, as classify frames
    logits = onnxruntime.InferenceSession(str(tmp_path / "g.onnx")).run(["logits"], {"images": image[None]})[0]
    scaled = logits / float(properties["temperature"])
    probabilities = np.exp(scaled) / np.exp(scaled).sum(axis=1, keepdims=True)
    row = next(predict([galaxy_jpeg], "galaxynet", options=PredictOptions(workers=0, backend="onnx")))[0]
    p_spiral = spiral_probability(probabilities, json.loads(properties["classes"]))[0]
    assert abs(p_spiral - row["p_spiral"]) < 1e-5


def test_export_writes_an_onnx_model_that_matches_torch(tmp_path):
    import numpy as np
    import onnx
    import onnxruntime
    import torch

    from galaxymorph.models import load_model

    result = runner.invoke(app, ["export", "seed", "--onnx", str(tmp_path / "seed.onnx")])
    assert result.exit_code == 0, result.output
    assert "matches torch" in result.output
    graph = onnx.load(tmp_path / "seed.onnx")
    properties = {p.key: p.value for p in graph.metadata_props}
    assert json.loads(properties["classes"]) == ["elliptical", "spiral"] and float(properties["temperature"]) > 0
    images = np.random.default_rng(1).random((3, 3, 64, 64), dtype=np.float32)
    session = onnxruntime.InferenceSession(str(tmp_path / "seed.onnx"), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = load_model("seed").model(torch.from_numpy(images)).numpy()
    assert np.abs(session.run(None, {"images": images})[0] - expected).max() < 1e-4
