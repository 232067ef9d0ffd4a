"""HDF5 arrays and tar shards as inputs, Parquet dataset folders, and resuming a killed run."""

import io
import os
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import replace

import numpy as np
import pyarrow.csv
import pyarrow.dataset
import pytest
from PIL import Image

from galaxymorph.config import DEFAULT_MODEL
from galaxymorph.models import load_model
from galaxymorph.prediction import PredictOptions, classify, predict
from galaxymorph.sources.synthetic import synthetic_galaxy, write_examples

h5py = pytest.importorskip("h5py")


def galaxies(count: int, size: int = 96) -> np.ndarray:
    rng = np.random.default_rng(5)
    return np.stack([synthetic_galaxy(("elliptical", "spiral")[i % 2], rng, size=size) for i in range(count)])


def morphology(rows: list[dict]) -> np.ndarray:
    return np.array([[row["p_spiral"], row["p_merger"]] for row in rows])


def test_hdf5_arrays_in_the_galaxy10_layout_classify_like_the_same_images_as_files(tmp_path):
    images = galaxies(6)
    with h5py.File(tmp_path / "Galaxy10.h5", "w") as handle:
        handle["images"] = images
        handle["ans"] = np.arange(6, dtype=np.uint8) % 3
    files = []
    for i, image in enumerate(images):
        files.append(tmp_path / f"galaxy-{i}.png")
        Image.fromarray(image).save(files[-1])

    from_array = next(predict([tmp_path / "Galaxy10.h5"], options=PredictOptions(workers=2)))
    from_files = next(predict(files, options=PredictOptions(workers=0)))
    assert [row["id"] for row in from_array] == [f"Galaxy10-{i}" for i in range(6)]
    assert [row["ans"] for row in from_array] == [0, 1, 2, 0, 1, 2]
    assert from_array[3]["file"].endswith("Galaxy10.h5[3]") and not any(row["error"] for row in from_array)
    np.testing.assert_allclose(morphology(from_array), morphology(from_files), atol=1e-6)


def test_hdf5_files_that_are_not_galaxy10_are_reported_and_the_job_goes_on(tmp_path, galaxy_jpeg):
    with h5py.File(tmp_path / "other.h5", "w") as handle:
        handle["pixels"] = np.zeros((2, 8, 8, 3), np.uint8)
    (tmp_path / "broken.h5").write_bytes(b"not hdf5")
    rows = next(predict([tmp_path / "other.h5", tmp_path / "broken.h5", galaxy_jpeg], options=PredictOptions(workers=0)))
    assert "other.h5: has no 'images' dataset" in rows[0]["error"]
    assert "broken.h5: cannot be read" in rows[1]["error"]
    assert not rows[2]["error"]


def write_shard(path, images, *, labels=True, compression=""):
    with tarfile.open(path, f"w:{compression}") as shard:
        for i, image in enumerate(images):
            members = {"jpg": _jpeg_bytes(image)}
            if labels:
                members["cls"] = str(i % 2).encode()
            for extension, data in members.items():
                info = tarfile.TarInfo(f"train/sample{i:04d}.{extension}")
                info.size = len(data)
                shard.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo("train/no-image.cls")
        info.size = 1
        shard.addfile(info, io.BytesIO(b"1"))


def _jpeg_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


@pytest.mark.parametrize("compression", ["", "gz"])
def test_tar_shards_in_the_webdataset_layout_classify_like_the_same_images_as_files(tmp_path, compression):
    images = galaxies(5)
    shard = tmp_path / ("shard-000.tar" + (".gz" if compression else ""))
    write_shard(shard, images, compression=compression)
    files = []
    for i, image in enumerate(images):
        files.append(tmp_path / f"sample{i:04d}.jpg")
        files[-1].write_bytes(_jpeg_bytes(image))

    from_shard = next(predict([shard], options=PredictOptions(workers=2)))
    from_files = next(predict(files, options=PredictOptions(workers=0)))
    assert [row["id"] for row in from_shard] == [f"train/sample{i:04d}" for i in range(5)] + ["train/no-image"]
    assert [row["cls"] for row in from_shard] == ["0", "1", "0", "1", "0", "1"]
    assert from_shard[0]["file"] == f"{shard}:train/sample0000.jpg"
    assert "sample 'train/no-image' has no image member" in from_shard[5]["error"]
    np.testing.assert_allclose(morphology(from_shard[:5]), morphology(from_files), atol=1e-6)


def test_a_shard_cut_short_keeps_the_samples_before_the_break(tmp_path):
    shard = tmp_path / "shard.tar"
    write_shard(shard, galaxies(4), labels=False)
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2] + b"\x01" * 700)  # a broken header after the first samples
    rows = next(predict([shard], options=PredictOptions(workers=0)))
    fine = [row for row in rows if not row["error"]]
    assert 1 <= len(fine) < 4 and len(rows) == len(fine) + 1
    assert f"shard.tar: unreadable after {len(fine)} samples" in rows[-1]["error"]


def test_dataset_folders_refuse_to_overwrite_and_to_resume_with_another_model(tmp_path, galaxy_jpeg):
    summary = classify([galaxy_jpeg] * 5, tmp_path / "results", options=PredictOptions(workers=0), chunk_rows=2)
    assert summary.rows == 5
    assert sorted(p.name for p in (tmp_path / "results").glob("part-*")) == [f"part-00000{i}.parquet" for i in range(3)]
    with pytest.raises(ValueError, match=r"already holds result chunks \(3\): continue that run with --resume"):
        classify([galaxy_jpeg], tmp_path / "results", options=PredictOptions(workers=0))
    with pytest.raises(ValueError, match="written with other settings .*model 'galaxynet_ensemble' there, 'seed' now"):
        classify([galaxy_jpeg], tmp_path / "results", model="seed", options=PredictOptions(workers=0), resume=True)
    retrained = replace(load_model(DEFAULT_MODEL), weights_sha256="0" * 64)  # the same name, other weights
    with pytest.raises(ValueError, match="weights_sha256 '[0-9a-f]{64}' there, '0{64}' now"):
        classify([galaxy_jpeg], tmp_path / "results", model=retrained, options=PredictOptions(workers=0), resume=True)
    with pytest.raises(ValueError, match="resuming needs a Parquet dataset folder"):
        classify([galaxy_jpeg], tmp_path / "out.csv", resume=True)
    resumed = classify([galaxy_jpeg] * 7, tmp_path / "results", options=PredictOptions(workers=0), resume=True, chunk_rows=2)
    assert (resumed.rows, resumed.resumed_after) == (7, 5)
    assert pyarrow.dataset.dataset(tmp_path / "results").count_rows() == 7
    (tmp_path / "results" / "_galaxymorph.json").write_text("{not json")
    with pytest.raises(ValueError, match="settings file _galaxymorph.json is missing or unreadable"):
        classify([galaxy_jpeg], tmp_path / "results", options=PredictOptions(workers=0), resume=True)


def test_a_killed_run_resumes_with_every_row_exactly_once(tmp_path):
    """Kill a 1,200-image classify run part-way (SIGKILL of its process group), resume it, and
    compare with an uninterrupted run."""
    examples = write_examples(tmp_path / "images", 200, seed=2, size=80)
    rows = [f"galaxy-{i:05d},images/{examples[i % 200][0].name}" for i in range(1200)]
    rows[234] = "galaxy-00234,images/missing.jpeg"
    catalog = tmp_path / "catalog.csv"
    catalog.write_text("id,file\n" + "\n".join(rows) + "\n")
    command = [sys.executable, "-m", "galaxymorph", "classify", str(catalog), "-o", str(tmp_path / "killed"),
               "--workers", "2", "--chunk-rows", "100", "--no-progress"]

    shared_before = {name for name in os.listdir("/dev/shm") if name.startswith("gm-")}
    run = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while len(list((tmp_path / "killed").glob("part-*.parquet"))) < 3 and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    killed_at = pyarrow.dataset.dataset(tmp_path / "killed").count_rows()
    assert 300 <= killed_at < 1200, "the run should have been killed part-way"
    assert {name for name in os.listdir("/dev/shm") if name.startswith("gm-")} == shared_before  # no leaked batches

    resumed = subprocess.run(command + ["--resume"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed after the {killed_at} rows" in resumed.stdout
    classify([catalog], tmp_path / "whole.parquet", options=PredictOptions(workers=2))

    result = pyarrow.dataset.dataset(tmp_path / "killed").to_table().to_pylist()
    whole = pyarrow.parquet.read_table(tmp_path / "whole.parquet").to_pylist()
    assert [row["id"] for row in result] == [row["id"] for row in whole] == [f"galaxy-{i:05d}" for i in range(1200)]
    assert [row["error"] for row in result] == [row["error"] for row in whole]
    assert "missing.jpeg: file not found" in result[234]["error"]
    np.testing.assert_allclose([row["p_spiral"] for row in result], [row["p_spiral"] for row in whole], atol=1e-6)
    assert not list((tmp_path / "killed").glob(".part-*"))
