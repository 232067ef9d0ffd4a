import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from astropy.table import Table

from galaxymorph import CatalogError
from galaxymorph.catalog import iter_catalog_rows, read_labelled_catalog
from galaxymorph.sources import iter_inputs


def test_csv_catalog_paths_are_relative_to_the_catalog(tmp_path):
    (tmp_path / "cat.csv").write_text("id,file\n42,images/a.jpeg\n43,/abs/b.png\n")
    rows = list(iter_catalog_rows(tmp_path / "cat.csv"))
    assert [r.id for r in rows] == ["42", "43"]
    assert rows[0].file == tmp_path / "images" / "a.jpeg"
    assert str(rows[1].file) == "/abs/b.png"


def test_zoobot_column_names_are_accepted(tmp_path):
    pq.write_table(pa.table({"id_str": ["J1", "J2"], "file_loc": ["x.png", "y.png"]}), tmp_path / "cat.parquet")
    rows = list(iter_catalog_rows(tmp_path / "cat.parquet"))
    assert [r.id for r in rows] == ["J1", "J2"] and rows[1].file.name == "y.png"


def test_fits_table_catalog(tmp_path):
    Table({"id": ["a"], "file": ["a.jpeg"]}).write(tmp_path / "cat.fits")
    assert [r.id for r in iter_catalog_rows(tmp_path / "cat.fits")] == ["a"]


def test_id_defaults_to_the_file_stem(tmp_path):
    (tmp_path / "cat.csv").write_text("file\ngalaxies/NGC1300.jpeg\n")
    assert next(iter_catalog_rows(tmp_path / "cat.csv")).id == "NGC1300"


@pytest.mark.parametrize(("content", "message"), [
    ("id,path\n1,a.jpeg\n", r"needs a column named 'file' or 'file_loc'; it has id, path"),
    ("name,RA,Dec\nNGC1300,49.92,-19.41\n", r"has sky positions \(ra, dec\) but no image files; .*classify --fetch"),
    ("", "has no header line"),
    ("id,file\n", "has no rows"),
])
def test_malformed_catalogs_raise_an_error_naming_the_file(tmp_path, content, message):
    (tmp_path / "bad.csv").write_text(content)
    with pytest.raises(CatalogError, match=message) as error:
        list(iter_catalog_rows(tmp_path / "bad.csv"))
    assert "bad.csv" in str(error.value)


def test_a_malformed_line_is_one_error_row_and_the_lines_around_it_are_read(tmp_path):
    lines = ["id,file,ra"] + [f"g{i},g{i}.jpeg,{i}" for i in range(100)]
    lines[50] = "g49,g49.jpeg,49,extra,columns"
    (tmp_path / "cat.csv").write_text("\n".join(lines) + "\n")
    rows = list(iter_catalog_rows(tmp_path / "cat.csv"))
    assert len(rows) == 100 and [row.id for row in rows if row.error] == ["line 51"]
    assert rows[49].error.endswith("cat.csv: line 51 has 5 fields; the header has 3")
    assert rows[50].id == "g50" and rows[50].columns["ra"] == "50"


def test_missing_catalog(tmp_path):
    with pytest.raises(CatalogError, match="file not found"):
        list(iter_catalog_rows(tmp_path / "nowhere.csv"))


def test_labelled_catalogs(tmp_path):
    (tmp_path / "gz1.csv").write_text("objid,file,gz1_class\n587,images/587.jpeg,edge_on_disk\n")
    gz1 = read_labelled_catalog(tmp_path / "gz1.csv")
    assert gz1.ids == ["587"] and gz1.labels == ["edge_on_disk"]
    (tmp_path / "generic.csv").write_text("file,label\na.png,0\nb.png,1\n")
    assert read_labelled_catalog(tmp_path / "generic.csv").labels == ["elliptical", "spiral"]
    (tmp_path / "unlabelled.csv").write_text("file\na.png\n")
    with pytest.raises(CatalogError, match="'label' or 'gz1_class'"):
        read_labelled_catalog(tmp_path / "unlabelled.csv")


def test_inputs_from_folders_files_and_catalogs(tmp_path):
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    for name in ["b.jpeg", "a.png", "notes.txt", "sub/c.fits", "sub/deeper/d.JPG"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "cat.csv").write_text("file\nsub/c.fits\n")
    (tmp_path / "broken.csv").write_text("nothing useful\nat all\n")
    rows = list(iter_inputs([tmp_path / "sub", tmp_path / "a.png", tmp_path / "cat.csv", tmp_path / "broken.csv",
                             tmp_path / "missing.jpeg"]))
    assert [r.file.name for r in rows] == ["c.fits", "d.JPG", "a.png", "c.fits", "broken.csv", "missing.jpeg"]
    assert "needs a column named 'file'" in rows[4].error and not rows[5].error
