"""The HTML report: self-contained, with every section, and every image loads in a real browser."""

import re
import shutil
import subprocess

import pytest
from typer.testing import CliRunner

from galaxymorph.cli import app
from galaxymorph.prediction import PredictOptions, classify
from galaxymorph.sources.synthetic import write_examples

BROWSER = shutil.which("chromium")


@pytest.fixture(scope="module")
def classified(tmp_path_factory):
    folder = tmp_path_factory.mktemp("report")
    examples = write_examples(folder / "images", 30, seed=5, size=256)
    labels = folder / "labels.csv"
    labels.write_text("id,file,label\n" + "".join(f"{path.stem},images/{path.name},{kind}\n" for path, kind in examples))
    catalog = folder / "morphology.csv"
    classify([folder / "images"], catalog, options=PredictOptions(workers=0))
    return catalog, labels


def test_report_has_every_section_and_embeds_its_images(tmp_path, classified):
    catalog, labels = classified
    output = tmp_path / "report.html"
    result = CliRunner().invoke(app, ["report", str(catalog), "--labels", str(labels), "-o", str(output),
                                      "--gallery-size", "4"])
    assert result.exit_code == 0, result.output
    page = output.read_text()
    for heading in ("Summary", "Most confident spirals", "Most confident ellipticals", "Most uncertain",
                    "Evaluation against the labels", "Misclassified"):
        assert f"<h2>{heading}" in page
    assert "30 classified galaxies" in page and "30 labelled galaxies" in page
    sources = re.findall(r"<img src='([^']*)'", page)
    assert len(sources) >= 4 * 3 + 4 and all(source.startswith("data:image/") for source in sources)
    assert "http" not in page.replace("http-equiv", "")  # nothing fetched from anywhere


def test_report_refuses_a_catalog_that_is_not_a_classify_output(tmp_path, classified):
    _, labels = classified
    result = CliRunner().invoke(app, ["report", str(labels), "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 2 and "p_spiral" in result.output


@pytest.mark.skipif(BROWSER is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_every_image_of_the_report_loads_in_headless_chromium(tmp_path, classified):
    catalog, labels = classified
    output = tmp_path / "report.html"
    CliRunner().invoke(app, ["report", str(catalog), "--labels", str(labels), "-o", str(output)])
    dom = subprocess.run(
        [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom", output.as_uri()],
        capture_output=True, text=True, timeout=120).stdout
    loaded, total = map(int, re.search(r'data-images-loaded="(\d+)/(\d+)"', dom).groups())
    assert total > 20 and loaded == total
