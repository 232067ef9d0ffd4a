"""The Dask path: a LocalCluster with two worker processes gives the single-process output."""

import numpy as np
import pyarrow.dataset
import pyarrow.parquet
import pytest
from typer.testing import CliRunner

from galaxymorph.cli import app
from galaxymorph.prediction import PredictOptions, classify
from galaxymorph.sources.synthetic import write_examples

distributed = pytest.importorskip("distributed")
dd = pytest.importorskip("dask.dataframe")


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as local:
        yield local


@pytest.fixture
def catalog(tmp_path):
    examples = write_examples(tmp_path / "images", 30, seed=4, size=96)
    lines = ["objid,file,redshift"] + [f"{1000 + i},images/{path.name},0.0{i % 9 + 1}" for i, (path, _) in enumerate(examples)]
    lines.append("2000,images/missing.jpeg,0.05")
    (tmp_path / "catalog.csv").write_text("\n".join(lines) + "\n")
    return tmp_path / "catalog.csv"


def test_dask_dataframe_on_two_workers_gives_the_single_process_output(tmp_path, cluster, catalog):
    from galaxymorph.scale import classify_dataframe

    single = pyarrow.parquet.read_table(classify([catalog], tmp_path / "single.parquet",
                                                 options=PredictOptions(workers=0)).output).to_pandas()
    frame = dd.read_csv(catalog, dtype=str, keep_default_na=False).repartition(npartitions=4)
    with distributed.Client(cluster) as client:
        result = classify_dataframe(frame, folder=catalog.parent).compute()
        processes = client.run(lambda: __import__("os").getpid())
    assert len(set(processes.values())) == 2
    assert list(result["objid"]) == list(single["id"]) and list(result["redshift"])[:2] == ["0.01", "0.02"]
    for column in ("label", "confident", "class", "galaxy_found"):
        assert list(result[column]) == list(single[column]), column
    numbers = [c for c in single.columns if c.startswith("p_")]
    np.testing.assert_allclose(result[numbers].to_numpy(float), single[numbers].to_numpy(float), atol=1e-6)
    assert result["error"].iloc[-1].endswith("missing.jpeg: file not found") and not result["error"].iloc[0]


def test_classify_with_a_scheduler_writes_a_parquet_dataset(tmp_path, cluster, catalog):
    output = tmp_path / "morphology"
    result = CliRunner().invoke(app, ["classify", str(catalog), "-o", str(output), "--scheduler", cluster.scheduler_address])
    assert result.exit_code == 0, result.output
    assert "31 rows written" in result.output and "1 could not be classified" in result.output
    table = pyarrow.dataset.dataset(output).to_table()
    assert sorted(table.column("objid").to_pylist()) == sorted([str(1000 + i) for i in range(30)] + ["2000"])
    refused = CliRunner().invoke(app, ["classify", str(catalog), "-o", str(tmp_path / "m.csv"), "--scheduler", cluster.scheduler_address])
    assert refused.exit_code == 2 and "Parquet dataset folder" in refused.output


def test_dask_workers_fetch_the_cutouts_of_sky_positions(tmp_path, cluster, monkeypatch):
    from galaxymorph.remote import CutoutCache, CutoutService, Cutouts, FetchOptions
    from galaxymorph.remote.local_server import LocalCutoutServer
    from galaxymorph.scale import classify_dataframe

    monkeypatch.setenv("SDSS_API_KEY", "test-key")
    lines = ["name,ra,dec"] + [f"g{i},{150 + i * 0.01:.4f},{2 + i * 0.01:.4f}" for i in range(8)] + ["south,150.0,-89.5"]
    (tmp_path / "positions.csv").write_text("\n".join(lines) + "\n")
    frame = dd.read_csv(tmp_path / "positions.csv", dtype=str).repartition(npartitions=3)
    with LocalCutoutServer() as server, distributed.Client(cluster):
        cutouts = Cutouts(CutoutService("sdss", base_url=server.url), CutoutCache(tmp_path / "cache"),
                          FetchOptions(rate_limit=0, timeout=2, retries=2, backoff=0.02), id_column="name")
        result = classify_dataframe(frame, cutouts=cutouts).compute()
    assert list(result["id"]) == [f"g{i}" for i in range(8)] + ["south"]
    assert set(result["label"][:8]) <= {"elliptical", "spiral"} and not any(result["error"][:8])
    assert "HTTP 404" in result["error"].iloc[-1]


def test_a_scheduler_takes_catalogs_only(tmp_path, cluster):
    result = CliRunner().invoke(app, ["classify", str(tmp_path), "-o", str(tmp_path / "out"), "--scheduler", cluster.scheduler_address])
    assert result.exit_code == 2 and "is a folder; with a scheduler, give catalogs" in result.output
