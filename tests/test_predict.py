import numpy as np
import pyarrow.csv
import pyarrow.parquet as pq
import pytest
from PIL import Image

from galaxymorph import classify, load_model, predict
from galaxymorph.prediction import Classifier, PredictOptions
from galaxymorph.sources.synthetic import write_examples


@pytest.fixture
def mixed_folder(tmp_path):
    """Six good galaxies and one of each kind of broken file, in nested folders."""
    write_examples(tmp_path / "good", 4, seed=5)
    write_examples(tmp_path / "good" / "more", 2, seed=6, suffix=".png")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "empty.jpeg").write_bytes(b"")
    (broken / "notes.png").write_text("not an image")
    (broken / "truncated.jpeg").write_bytes((tmp_path / "good" / "synthetic-0000-elliptical.jpeg").read_bytes()[:500])
    Image.new("RGB", (4, 4)).save(broken / "tiny.png")
    return tmp_path


def read_rows(path):
    return pyarrow.csv.read_csv(path).to_pylist() if path.suffix == ".csv" else pq.read_table(path).to_pylist()


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
@pytest.mark.parametrize("workers", [0, 2])
def test_classify_a_mixed_folder(mixed_folder, tmp_path, suffix, workers, trained_checkpoint):
    output = tmp_path / f"out{suffix}"
    summary = classify([mixed_folder, mixed_folder / "missing.jpeg"], output, model=trained_checkpoint,
                       options=PredictOptions(batch_size=3, workers=workers))
    rows = read_rows(output)
    assert summary.rows == len(rows) == 11 and summary.failed == 5
    by_id = {row["id"]: row for row in rows}
    assert set(by_id["empty"]) >= {"id", "file", "p_spiral", "label", "error"}
    assert "file is empty" in by_id["empty"]["error"] and "not a readable image" in by_id["notes"]["error"]
    assert "truncated" in by_id["truncated"]["error"] and "4x4 px" in by_id["tiny"]["error"]
    assert "file not found" in by_id["missing"]["error"]
    good = [row for row in rows if not row["error"]]
    assert len(good) == 6
    assert all(0.0 <= row["p_spiral"] <= 1.0 and row["label"] in ("elliptical", "spiral") for row in good)
    assert all(row["label"] == ("spiral" if row["p_spiral"] >= 0.5 else "elliptical") for row in good)
    assert sum(row["label"] in row["id"] for row in good) >= 5  # the ids name the kind that was made


def test_predict_streams_batches_in_input_order(tmp_path, trained_checkpoint):
    paths = [path for path, _ in write_examples(tmp_path, 7, seed=2)]
    batches = list(predict(paths, trained_checkpoint, options=PredictOptions(batch_size=3, workers=2)))
    assert [len(batch) for batch in batches] == [3, 3, 1]
    assert [row["file"] for batch in batches for row in batch] == [str(p) for p in paths]


def test_onnx_and_torch_back_ends_agree(trained_checkpoint):
    loaded = load_model(trained_checkpoint)
    images = np.random.default_rng(0).uniform(size=(5, 3, 64, 64)).astype(np.float32)
    onnx, _ = Classifier(loaded, backend="onnx").probabilities(images)
    torch, _ = Classifier(loaded, backend="torch").probabilities(images)
    np.testing.assert_allclose(onnx, torch, atol=1e-5)


def test_fine_classes_get_their_own_columns(tmp_path, galaxy_jpeg):
    rows = next(predict([galaxy_jpeg], "galaxynet", options=PredictOptions(workers=0)))
    row = rows[0]
    assert row["class"] in load_model("galaxynet").classes
    fine = {k: v for k, v in row.items() if k.startswith("p_") and k not in ("p_spiral", "p_spiral_std")}
    assert len(fine) == 6 and sum(fine.values()) == pytest.approx(1.0)


def test_bad_options_are_refused(tmp_path):
    with pytest.raises(ValueError, match="backend must be one of"):
        PredictOptions(backend="tpu")
    with pytest.raises(ValueError, match="output must end in .csv or .parquet"):
        classify([tmp_path], tmp_path / "out.txt")


def test_test_time_augmentation_gives_the_same_answer_for_rotated_galaxies(tmp_path):
    """With TTA on, a galaxy and its 90-degree rotations get identical predictions (to 1e-4)."""
    path = write_examples(tmp_path, 2, seed=8, suffix=".png")[1][0]
    original = np.asarray(Image.open(path))
    paths = [path]
    for turns in (1, 2, 3):
        rotated = tmp_path / f"rotated-{turns}.png"
        Image.fromarray(np.ascontiguousarray(np.rot90(original, turns))).save(rotated)
        paths.append(rotated)
    rows = next(predict(paths, "galaxynet", options=PredictOptions(workers=0, tta=True)))
    for row in rows[1:]:
        for column in ("p_spiral", "p_spiral_std", "p_elliptical", "p_edge_on_disk", "p_merger"):
            assert row[column] == pytest.approx(rows[0][column], abs=1e-4)
    assert rows[0]["p_spiral_std"] >= 0.0
    plain = next(predict(paths, "galaxynet", options=PredictOptions(workers=0)))
    assert np.isnan(plain[0]["p_spiral_std"])
    columns = [c for c in plain[0] if c.startswith("p_") and c != "p_spiral_std"]
    assert max(abs(row[c] - plain[0][c]) for row in plain for c in columns) > 1e-4  # without TTA they differ


def test_confident_flag_follows_the_documented_threshold(tmp_path, trained_checkpoint):
    from galaxymorph.config import CONFIDENT_MARGIN

    paths = [path for path, _ in write_examples(tmp_path, 6, seed=9)]
    rows = next(predict(paths, trained_checkpoint, options=PredictOptions(workers=0, tta=True)))
    for row in rows:
        expected = abs(row["p_spiral"] - 0.5) >= CONFIDENT_MARGIN and row["p_spiral_std"] <= 0.1
        assert row["confident"] == expected
