"""Embeddings, neighbours and oddities: `galaxymorph embed`, `similar` and `oddities`."""

import numpy as np
import pyarrow.csv
import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from galaxymorph import Classifier, EmbeddingIndex, load_model, similar
from galaxymorph.cli import app
from galaxymorph.preprocess.decode import decode_array
from galaxymorph.sources.synthetic import synthetic_galaxy, write_examples
from galaxymorph import similarity

runner = CliRunner()


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    """24 generated galaxies, one uniform-noise image, one corrupt file and a symlink to itself, embedded."""
    folder = tmp_path_factory.mktemp("embed")
    write_examples(folder / "images", 24, seed=11)
    noise = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    Image.fromarray(noise).save(folder / "images" / "noise.png")
    (folder / "images" / "broken.jpeg").write_bytes(b"\xff\xd8\xff not a jpeg")
    (folder / "images" / "loop.jpeg").symlink_to("loop.jpeg")
    result = runner.invoke(app, ["embed", str(folder / "images"), "-o", str(folder / "emb.parquet"), "--no-progress",
                                 "--workers", "0"])
    assert result.exit_code == 0, result.output
    return folder


def test_embeddings_are_unit_vectors_that_turning_or_mirroring_a_galaxy_leaves_alone():
    loaded = load_model("galaxynet")
    image = decode_array(synthetic_galaxy("spiral", np.random.default_rng(2)), "spiral", loaded.preprocessing).pixels
    views = np.stack([image, np.rot90(image, 1, axes=(1, 2)), np.flip(image, axis=2), np.rot90(np.flip(image, 1), 3, axes=(1, 2))])
    vectors = Classifier(loaded, backend="torch").embeddings(np.ascontiguousarray(views))
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    assert np.abs(vectors - vectors[0]).max() < 1e-5


def test_embed_writes_one_row_per_input_with_error_rows(embedded):
    table = pq.read_table(embedded / "emb.parquet")
    assert table.num_rows == 27 and str(table.schema.field("embedding").type).startswith("fixed_size_list<element: float>")
    rows = {row["id"]: row for row in table.to_pylist()}
    for failed in ("broken", "loop"):
        assert np.isnan(rows[failed]["embedding"]).all() and f"{failed}.jpeg" in rows[failed]["error"]
    assert all(np.isfinite(row["embedding"]).all() for row_id, row in rows.items() if row_id not in ("broken", "loop"))
    assert b"galaxymorph" in table.schema.metadata


def test_embed_refuses_a_csv_output(tmp_path):
    write_examples(tmp_path, 2, seed=1)
    result = runner.invoke(app, ["embed", str(tmp_path), "-o", str(tmp_path / "emb.csv")])
    assert result.exit_code == 2 and "parquet" in result.output


def test_similar_lists_k_neighbours_nearest_first_without_the_query(embedded, tmp_path):
    index = EmbeddingIndex.load(embedded / "emb.parquet")
    query = index.ids[0]
    outside = tmp_path / "new.jpeg"
    Image.fromarray(synthetic_galaxy("elliptical", np.random.default_rng(99))).save(outside)
    result = runner.invoke(app, ["similar", str(embedded / "emb.parquet"), "--query", query, "--query", str(outside),
                                 "-k", "5", "-o", str(tmp_path / "near.csv")])
    assert result.exit_code == 0, result.output
    rows = pyarrow.csv.read_csv(tmp_path / "near.csv").to_pylist()
    assert [row["rank"] for row in rows] == [1, 2, 3, 4, 5] * 2
    first = [row for row in rows if row["query"] == query]
    assert query not in {row["id"] for row in first}
    assert [row["distance"] for row in first] == sorted(row["distance"] for row in first)
    assert {row["query"] for row in rows} == {query, str(outside)}


def test_an_image_outside_the_index_is_embedded_as_the_index_was(embedded, tmp_path):
    index = EmbeddingIndex.load(embedded / "emb.parquet")
    copy = tmp_path / "copy.jpeg"
    copy.write_bytes((embedded / "images" / f"{index.ids[2]}.jpeg").read_bytes())
    (nearest,) = similar(index, [str(copy)], k=1)
    assert index.backend in ("onnx", "onnx-int8", "torch")
    assert nearest["id"] == index.ids[2] and nearest["distance"] < 1e-5


def test_an_unknown_query_is_a_clear_error(embedded):
    result = runner.invoke(app, ["similar", str(embedded / "emb.parquet"), "--query", "no-such-galaxy"])
    assert result.exit_code == 2 and "no-such-galaxy" in result.output


def test_the_graph_index_finds_what_exact_search_finds_and_is_kept(embedded, monkeypatch):
    index = EmbeddingIndex.load(embedded / "emb.parquet")
    exact = similar(index, index.ids[:6], k=4)
    monkeypatch.setattr(similarity, "EXACT_LIMIT", 5)
    assert [row["id"] for row in similar(index, index.ids[:6], k=4)] == [row["id"] for row in exact]
    assert (embedded / "emb.parquet.hnsw.faiss").is_file()


def test_a_dataset_folder_index_reads_again_after_its_graph_is_kept(embedded, tmp_path, monkeypatch):
    folder = tmp_path / "emb"
    result = runner.invoke(app, ["embed", str(embedded / "images"), "-o", str(folder), "--chunk-rows", "10",
                                 "--batch-size", "1", "--no-progress", "--workers", "0"])
    assert result.exit_code == 0, result.output  # batches of one: the first written batch may be an error alone
    monkeypatch.setattr(similarity, "EXACT_LIMIT", 5)
    first = similar(EmbeddingIndex.load(folder), ["noise"], k=3)
    again = similar(EmbeddingIndex.load(folder), ["noise"], k=3)
    assert first == again and (tmp_path / "emb.hnsw.faiss").is_file()


def test_duplicate_ids_and_more_neighbours_than_the_index_holds(embedded, tmp_path):
    index = EmbeddingIndex.load(embedded / "emb.parquet")
    twice = EmbeddingIndex(index.path, index.ids + index.ids[:1], index.files + index.files[:1],
                           np.concatenate([index.vectors, index.vectors[:1]]), index.model)
    rows = similar(twice, [index.ids[0]], k=3)
    assert index.ids[0] not in {row["id"] for row in rows}
    outside = tmp_path / "outside.jpeg"
    Image.fromarray(synthetic_galaxy("spiral", np.random.default_rng(7))).save(outside)
    rows = similar(index, [index.ids[0], str(outside)], k=1000)
    assert sum(row["query"] == index.ids[0] for row in rows) == len(index.ids) - 1
    assert sum(row["query"] == str(outside) for row in rows) == len(index.ids)


def test_oddities_put_the_noise_image_first(embedded, tmp_path):
    result = runner.invoke(app, ["oddities", str(embedded / "emb.parquet"), "-n", "3", "-o", str(tmp_path / "odd.csv")])
    assert result.exit_code == 0, result.output
    rows = pyarrow.csv.read_csv(tmp_path / "odd.csv").to_pylist()
    assert [row["rank"] for row in rows] == [1, 2, 3] and rows[0]["id"] == "noise"
    assert rows[0]["oddity"] >= rows[1]["oddity"] >= rows[2]["oddity"]


def test_oddities_asks_for_at_least_one(embedded):
    result = runner.invoke(app, ["oddities", str(embedded / "emb.parquet"), "-n", "0"])
    assert result.exit_code == 2 and "at least 1" in result.output


def test_report_shows_an_oddities_list_as_a_gallery(embedded, tmp_path):
    assert runner.invoke(app, ["oddities", str(embedded / "emb.parquet"), "-n", "4", "-o", str(tmp_path / "odd.csv")]).exit_code == 0
    result = runner.invoke(app, ["report", str(tmp_path / "odd.csv"), "-o", str(tmp_path / "odd.html")])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "odd.html").read_text()
    assert page.count("<div class='card'><img") == 4 and "1. noise: oddity" in page


def test_the_service_finds_neighbours_of_an_upload_or_an_id_and_serves_only_indexed_thumbnails(embedded):
    from test_service import RunningService

    from galaxymorph.service import ServiceSettings

    index = EmbeddingIndex.load(embedded / "emb.parquet")
    with RunningService(ServiceSettings(index=str(embedded / "emb.parquet"))) as client:
        by_id = client.post("/v1/similar?k=3", json={"id": index.ids[0]}).json()
        upload = (embedded / "images" / f"{index.ids[1]}.jpeg").read_bytes()
        by_file = client.post("/v1/similar?k=3", files={"file": ("mine.jpeg", upload, "image/jpeg")}).json()
        thumbnail = client.get(by_id["neighbours"][0]["thumbnail"])
        missing = client.get(f"/v1/thumbnails/{len(index.ids)}")
        unknown = client.post("/v1/similar", json={"id": "nobody"})
        assert client.get("/v1/models").json()["index"] == len(index.ids)
    assert [n["rank"] for n in by_id["neighbours"]] == [1, 2, 3] and index.ids[0] not in {n["id"] for n in by_id["neighbours"]}
    assert by_file["neighbours"][0]["id"] == index.ids[1]  # the uploaded galaxy is in the index: itself comes first
    assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/jpeg"
    assert missing.status_code == 404 and unknown.status_code == 422


def test_a_service_without_an_index_says_how_to_get_one(embedded):
    from test_service import RunningService

    from galaxymorph.service import ServiceSettings

    with RunningService(ServiceSettings()) as client:
        answer = client.post("/v1/similar", json={"id": "x"})
    assert answer.status_code == 404 and "--index" in answer.json()["error"]


def test_an_index_of_another_model_is_refused_at_start(embedded):
    from galaxymorph import ModelError
    from galaxymorph.service import ServiceSettings, create_app

    with pytest.raises(ModelError, match="serve that model"):
        create_app(ServiceSettings(model="seed", index=str(embedded / "emb.parquet")))


@pytest.mark.skipif(__import__("shutil").which("chromium") is None, reason="Debian's chromium is not installed")
def test_the_page_shows_more_galaxies_like_an_upload(embedded):
    playwright = pytest.importorskip("playwright.sync_api")
    from test_service import RunningService, headless_chromium

    from galaxymorph.service import ServiceSettings

    upload = next((embedded / "images").glob("*.jpeg"))
    with RunningService(ServiceSettings(index=str(embedded / "emb.parquet"))) as client, \
            playwright.sync_playwright() as driver:
        browser = headless_chromium(driver)
        page = browser.new_page()
        page.goto(str(client.base_url.join("/")))
        page.set_input_files("#files", str(upload))
        page.click(".result button.more", timeout=30_000)
        page.wait_for_function("""() => { const images = [...document.querySelectorAll(".similar img")];
            return images.length === 8 && images.every(image => image.complete && image.naturalWidth > 0); }""",
                               timeout=30_000)
        captions = page.eval_on_selector_all(".similar figcaption", "captions => captions.map(caption => caption.textContent)")
        browser.close()
    assert len(captions) == 8 and captions[0] == upload.stem  # an indexed galaxy's nearest is itself
