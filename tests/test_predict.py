import hashlib
import importlib.metadata
import json
import math
import os
from pathlib import Path

import numpy as np
import pyarrow
import pyarrow.csv
import pyarrow.parquet as pq
import pytest
from PIL import Image

from galaxymorph import ModelError, classify, load_model, predict
from galaxymorph.prediction import Classifier, PredictOptions
from galaxymorph.preprocess.parallel import decode_in_batches
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
    assert all(row["p_spiral"] is None or math.isnan(row["p_spiral"]) for row in rows if row["error"])
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
    fine = {k: v for k, v in row.items() if k.startswith("p_") and k not in ("p_spiral", "p_spiral_std", "p_galaxy")}
    assert len(fine) == 6 and sum(fine.values()) == pytest.approx(1.0)


def test_bad_options_are_refused(tmp_path):
    with pytest.raises(ValueError, match="backend must be one of"):
        PredictOptions(backend="tpu")
    with pytest.raises(ValueError, match="output must end in .csv, .parquet, .fits or .ecsv"):
        classify([tmp_path], tmp_path / "out.txt")


@pytest.mark.parametrize("model", ["galaxynet", "galaxynet_ensemble"])
def test_test_time_augmentation_gives_the_same_answer_for_rotated_galaxies(tmp_path, model):
    """With TTA on, a galaxy and its 90-degree rotations get identical predictions (to 1e-4)."""
    path = write_examples(tmp_path, 2, seed=8, suffix=".png")[1][0]
    original = np.asarray(Image.open(path))
    paths = [path]
    for turns in (1, 2, 3):
        rotated = tmp_path / f"rotated-{turns}.png"
        Image.fromarray(np.ascontiguousarray(np.rot90(original, turns))).save(rotated)
        paths.append(rotated)
    rows = next(predict(paths, model, options=PredictOptions(workers=0, tta=True)))
    for row in rows[1:]:
        for column in ("p_spiral", "p_spiral_std", "p_elliptical", "p_edge_on_disk", "p_merger"):
            assert row[column] == pytest.approx(rows[0][column], abs=1e-4)
    assert rows[0]["p_spiral_std"] >= 0.0
    plain = next(predict(paths, model, options=PredictOptions(workers=0)))
    assert np.isnan(plain[0]["p_spiral_std"]) == (model == "galaxynet")  # an ensemble measures its members' spread
    columns = [c for c in plain[0] if c.startswith("p_") and c != "p_spiral_std"]
    assert max(abs(row[c] - plain[0][c]) for row in plain for c in columns) > 1e-4  # without TTA they differ


def test_confident_flag_follows_the_documented_threshold(tmp_path, trained_checkpoint):
    from galaxymorph.config import CONFIDENT_MARGIN

    paths = [path for path, _ in write_examples(tmp_path, 6, seed=9)]
    rows = next(predict(paths, trained_checkpoint, options=PredictOptions(workers=0, tta=True)))
    for row in rows:
        expected = abs(row["p_spiral"] - 0.5) >= CONFIDENT_MARGIN and row["p_spiral_std"] <= 0.1
        assert row["confident"] == expected


def test_workers_decode_into_shared_memory_that_leaves_nothing_behind(tmp_path):
    paths = [path for path, _ in write_examples(tmp_path, 9, seed=6)]
    preprocessing = load_model("galaxynet").preprocessing
    before = shared_memory_names()
    in_process = np.concatenate([batch.images for batch in decode_in_batches(paths, preprocessing, file_of=Path,
                                                                             batch_size=4, workers=0)])
    in_workers = np.concatenate([batch.images.copy() for batch in decode_in_batches(paths, preprocessing, file_of=Path,
                                                                                    batch_size=4, workers=2)])
    np.testing.assert_array_equal(in_workers, in_process)
    stopped_early = decode_in_batches(paths, preprocessing, file_of=Path, batch_size=4, workers=2)
    next(stopped_early)
    stopped_early.close()
    assert shared_memory_names() == before


def shared_memory_names() -> set[str]:
    return {name for name in os.listdir("/dev/shm") if name.startswith("gm-")}


def test_the_cuda_back_end_is_refused_without_a_gpu(galaxy_jpeg):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ModelError, match="torch sees no CUDA GPU"):
        next(predict([galaxy_jpeg], options=PredictOptions(workers=0, backend="cuda")))


@pytest.mark.gpu
def test_the_cuda_back_end_agrees_with_onnx_runtime(tmp_path):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    paths = [path for path, _ in write_examples(tmp_path, 16, seed=7)]
    on_gpu = next(predict(paths, options=PredictOptions(workers=2, backend="cuda")))
    on_cpu = next(predict(paths, options=PredictOptions(workers=2, backend="onnx")))
    np.testing.assert_allclose([row["p_spiral"] for row in on_gpu], [row["p_spiral"] for row in on_cpu], atol=0.02)  # bf16


def test_a_csv_catalogs_own_columns_come_back_byte_for_byte(tmp_path, galaxy_jpeg):
    (tmp_path / "catalog.csv").write_text(f"id,file,ra,dec,z\nM51,{galaxy_jpeg},202.469575,47.195258,0.001540\n")
    classify([tmp_path / "catalog.csv"], tmp_path / "out.csv", options=PredictOptions(workers=0))
    header, row = (tmp_path / "out.csv").read_text().splitlines()
    assert dict(zip(header.split(","), row.split(",")))["ra"] == "202.469575"
    assert ",202.469575,47.195258,0.001540," in f",{row},"


def test_a_catalog_keeps_its_columns_and_its_own_labels(tmp_path, galaxy_jpeg):
    (tmp_path / "labels.csv").write_text(f"objid,file,label,redshift\n7,{galaxy_jpeg},spiral,0.05\n")
    row = next(predict([tmp_path / "labels.csv"], options=PredictOptions(workers=0)))[0]
    assert (row["id"], row["redshift"], row["input_label"]) == ("7", "0.05", "spiral")  # a CSV's cells, as written
    assert row["label"] in ("elliptical", "spiral") and row["file"] == str(galaxy_jpeg)


@pytest.mark.parametrize("suffix", [".fits", ".ecsv"])
def test_fits_and_ecsv_catalogs_describe_their_columns_and_record_their_provenance(tmp_path, galaxy_jpeg, suffix,
                                                                                   trained_checkpoint):
    from astropy.table import Table

    (tmp_path / "catalog.csv").write_text(f"id,file,ra,dec,objid\nM51,{galaxy_jpeg},202.469575,47.195258,0012\n"
                                          f"gone,missing.jpeg,10.5,-3.25,0013\n")
    classify([tmp_path / "catalog.csv"], tmp_path / f"out{suffix}", model=trained_checkpoint,
             options=PredictOptions(workers=0))
    table = Table.read(tmp_path / f"out{suffix}")
    assert list(table["id"]) == ["M51", "gone"] and list(table["objid"]) == ["0012", "0013"]  # ids stay text
    assert table["ra"].unit == "deg" and table["ra"][0] == 202.469575 and table["dec"][1] == -3.25
    assert "spiral" in table["p_spiral"].description and "why" in table["error"].description
    p_spiral = np.ma.filled(table["p_spiral"], np.nan)  # FITS readers mask NaN
    assert 0 <= p_spiral[0] <= 1 and math.isnan(p_spiral[1]) and "file not found" in table["error"][1]
    record = table.meta["galaxymorph"] if suffix == ".ecsv" else {
        "model": table.meta["MODEL"], "weights_sha256": table.meta["WEIGHTS"], "version": table.meta["SWVERSN"],
        "created": table.meta["DATE"], "preprocessing": json.loads(table.meta["PREPROC"])}
    assert record["model"] == Path(trained_checkpoint).stem
    assert record["weights_sha256"] == hashlib.sha256(Path(trained_checkpoint).with_suffix(".pt").read_bytes()).hexdigest()
    assert record["version"] == importlib.metadata.version("galaxymorph") and record["created"].startswith("20")
    assert record["preprocessing"] == load_model(trained_checkpoint).preprocessing.to_dict()


def test_a_csv_catalog_has_a_sidecar_and_parquet_keeps_its_provenance_in_the_schema(tmp_path, galaxy_jpeg):
    for name in ("out.csv", "out.parquet", "dataset"):
        classify([galaxy_jpeg], tmp_path / name, options=PredictOptions(workers=0))
    sidecar = json.loads((tmp_path / "out.csv.json").read_text())
    assert sidecar["provenance"]["model"] == "galaxynet_ensemble" and "confident" in sidecar["columns"]
    rule = sidecar["provenance"]["confident"]  # what `confident` asked of these rows
    assert rule["calibrated_spiral_share"] == pytest.approx(0.285, abs=0.001) and rule["p_spiral_margin"] == 0.4
    assert rule["ood_score_limit"] == load_model("galaxynet_ensemble").metadata["typicality"]["limit"]
    for path in (tmp_path / "out.parquet", tmp_path / "dataset" / "part-000000.parquet"):
        schema = pq.read_schema(path)
        assert json.loads(schema.metadata[b"galaxymorph"])["weights_sha256"] == sidecar["provenance"]["weights_sha256"]
        assert b"p_galaxy" not in schema.field("p_spiral").metadata[b"description"]


def test_rows_with_columns_the_first_rows_lacked_do_not_end_the_job(tmp_path, galaxy_jpeg, caplog):
    (tmp_path / "catalog.csv").write_text(f"id,file,ra\nM51,{galaxy_jpeg},202.469575\n")
    inputs = [galaxy_jpeg, tmp_path / "catalog.csv"]
    summary = classify(inputs, tmp_path / "out.csv", options=PredictOptions(workers=0, batch_size=1))
    assert summary.rows == 2 and "columns ra of later inputs are left out" in caplog.text
    classify(inputs, tmp_path / "out.ecsv", options=PredictOptions(workers=0, batch_size=1))
    assert (tmp_path / "out.ecsv").read_text().splitlines()[-1].split()[-1] == "202.469575"  # FITS and ECSV keep all


def test_a_fits_catalog_keeps_the_rows_computed_before_an_interruption(tmp_path):
    from astropy.table import Table

    from galaxymorph.outputs import CatalogWriter

    with pytest.raises(KeyboardInterrupt), CatalogWriter(tmp_path / "out.fits") as writer:
        writer.write([{"id": "a", "p_spiral": 0.25}])
        raise KeyboardInterrupt
    assert list(Table.read(tmp_path / "out.fits")["p_spiral"]) == [0.25]


def test_the_progress_total_counts_files_and_catalog_rows_without_reading_images(tmp_path, galaxy_jpeg):
    from galaxymorph.sources import count_inputs

    write_examples(tmp_path / "folder", 3)
    (tmp_path / "catalog.csv").write_text(f"file\n{galaxy_jpeg}\n{galaxy_jpeg}\n")
    pq.write_table(pyarrow.table({"file": [str(galaxy_jpeg)] * 4}), tmp_path / "catalog.parquet")
    assert count_inputs([tmp_path / "folder", tmp_path / "catalog.csv", tmp_path / "catalog.parquet", galaxy_jpeg]) == 10
    assert count_inputs([tmp_path / "arrays.h5"]) is None  # counted only by reading it


def test_every_output_column_is_described_in_the_files_and_in_the_readme():
    from galaxymorph.outputs.metadata import COLUMN_DESCRIPTIONS
    from galaxymorph.prediction import OUTPUT_COLUMNS

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    search_columns = {"embedding", "query", "rank", "distance", "oddity"}  # of embed, similar and oddities
    assert set(COLUMN_DESCRIPTIONS) == set(OUTPUT_COLUMNS) | search_columns
    assert all(f"`{column}`" in readme for column in OUTPUT_COLUMNS)
    assert all(column in readme for column in search_columns)


def test_a_classifier_leaves_the_callers_torch_thread_count_as_it_was():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        classifier = Classifier(load_model("seed"), backend="torch", threads=1)
        images = np.random.default_rng(0).random((4, 3, 64, 64), dtype=np.float32)
        assert classifier.scores(images).probabilities.shape == (4, 2)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_predict_options_choose_one_decoding_process_per_core_unless_told():
    from galaxymorph.config import default_workers

    assert PredictOptions().workers == default_workers() and PredictOptions(workers=0).workers == 0
