"""A single, self-contained HTML report of a morphology catalog: counts, the probability histogram,
the most confident galaxies of each class, the most uncertain ones and, with labels, the evaluation
figures and the misclassified galaxies with their explanation overlays. Every image is embedded, so
the file opens in a browser with no server and travels as one attachment.
"""

from __future__ import annotations

import base64
import html
import os
from collections import Counter
from pathlib import Path

import numpy as np

from galaxymorph.catalog import read_catalog, read_labelled_catalog
from galaxymorph.config import DEFAULT_MODEL, THUMBNAIL_SIZE
from galaxymorph.errors import CatalogError, GalaxyMorphError
from galaxymorph.evaluation import spiral_evaluation
from galaxymorph.explain import attributions
from galaxymorph.labels import BINARY_CLASSES, binary_label
from galaxymorph.models import LoadedModel, load_model
from galaxymorph.outputs import plots
from galaxymorph.preprocess.decode import read_model_input

GALLERY_SIZE = 12


def write_report(catalog: str | os.PathLike, output: str | os.PathLike, *, labels: str | os.PathLike | None = None,
                 model: str | os.PathLike | LoadedModel = DEFAULT_MODEL, gallery_size: int = GALLERY_SIZE) -> Path:
    """Write the report of a `classify` output catalog (`id, file, label, p_spiral, ..., error`), or
    the gallery of an `oddities` list (`rank, id, file, oddity`)."""
    catalog = Path(catalog)
    loaded = load_model(model)
    all_rows = read_catalog(catalog).to_pylist()
    rows = [row for row in all_rows if not row.get("error")]
    if rows and {"id", "file", "oddity"} <= set(rows[0]):
        return _write_page(_oddities_page(loaded, rows, catalog), output, f"galaxymorph oddities: {catalog.name}")
    missing = {"id", "file", "label", "p_spiral"} - set(rows[0] if rows else {})
    if not rows or missing:
        raise CatalogError(f"catalog {catalog}: needs classified rows with id, file, label and p_spiral "
                           f"(a `galaxymorph classify` output){'; missing ' + ', '.join(sorted(missing)) if missing else ''}")
    for row in rows:  # a CSV catalog's cells are read as text
        row["id"], row["path"], row["p_spiral"] = str(row["id"]), _resolve(row["file"], catalog.parent), float(row["p_spiral"])
    page = _Page(loaded)
    counts = Counter(row["label"] for row in rows)
    page.section("Summary", f"<p>{len(rows)} classified galaxies by model <b>{html.escape(loaded.name)}</b>: "
                 + ", ".join(f"{count} {html.escape(label)}" for label, count in counts.most_common())
                 + f"; {len(all_rows) - len(rows)} could not be classified.</p>"
                 + page.figure(plots.png_bytes(plots.histogram_figure([row["p_spiral"] for row in rows]), dpi=90),
                                "Distribution of p_spiral"))
    by_p = sorted(rows, key=lambda row: row["p_spiral"])
    page.section("Most confident spirals", page.gallery([row for row in by_p[::-1] if row["label"] == "spiral"][:gallery_size]))
    page.section("Most confident ellipticals", page.gallery([row for row in by_p if row["label"] == "elliptical"][:gallery_size]))
    page.section("Most uncertain", page.gallery(sorted(rows, key=lambda row: abs(row["p_spiral"] - 0.5))[:gallery_size]))
    if labels is not None:
        labelled = read_labelled_catalog(labels)
        truth = dict(zip(labelled.ids, labelled.labels))
        scored = [dict(row, truth=binary_label(truth[row["id"]])) for row in rows
                  if row["id"] in truth and binary_label(truth[row["id"]])]
        if not scored:
            raise CatalogError(f"labels {labels}: no id in common with {catalog} (or no spiral/elliptical labels)")
        page.section("Evaluation against the labels", _evaluation(page, scored))
        wrong = sorted((row for row in scored if (row["p_spiral"] >= 0.5) != (row["truth"] == "spiral")),
                       key=lambda row: -abs(row["p_spiral"] - 0.5))
        page.section(f"Misclassified ({len(wrong)}), most confident first, with Grad-CAM overlays",
                     page.gallery(wrong[:gallery_size], explained=True))
    return _write_page(page, output, f"galaxymorph report: {catalog.name}")


def _oddities_page(loaded: LoadedModel, rows: list[dict], catalog: Path) -> _Page:
    """All the listed galaxies, oddest first, captioned with their rank and oddity."""
    for row in rows:
        row["id"], row["path"] = str(row["id"]), _resolve(row["file"], catalog.parent)
        row["caption"] = f"{row.get('rank', '')}. {row['id']}: oddity {float(row['oddity']):.3f}"
    page = _Page(loaded)
    page.section(f"The {len(rows)} least typical galaxies, oddest first (distance to the 10th nearest neighbour)",
                 page.gallery(rows))
    return page


def _write_page(page: _Page, output: str | os.PathLike, title: str) -> Path:
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(page.render(title))
    return output


def _resolve(file: str, folder: Path) -> Path:
    path = Path(file)
    return path if path.is_absolute() or path.exists() else folder / path


def _evaluation(page: _Page, scored: list[dict]) -> str:
    p_spiral = np.array([row["p_spiral"] for row in scored])
    is_spiral = np.array([row["truth"] == "spiral" for row in scored])
    evaluation = spiral_evaluation(p_spiral, is_spiral)
    figures = {**evaluation.figures(page.loaded.name), "confusion": plots.confusion_figure(evaluation.matrix, BINARY_CLASSES)}
    images = "".join(page.figure(plots.png_bytes(figure), stem) for stem, figure in figures.items())
    summary = evaluation.summary
    return (f"<p>{len(scored)} labelled galaxies: accuracy {summary['accuracy']:.4f}, ROC AUC "
            f"{summary['roc_auc']:.4f}, expected calibration error {summary['ece']:.4f}.</p><div class='row'>{images}</div>")


class _Page:
    """Sections of HTML with embedded images."""

    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded = loaded
        self.sections: list[str] = []

    def section(self, title: str, body: str) -> None:
        self.sections.append(f"<section><h2>{html.escape(title)}</h2>{body}</section>")

    @staticmethod
    def figure(png: bytes, caption: str) -> str:
        return (f"<figure><img src='data:image/png;base64,{base64.b64encode(png).decode()}' alt='{html.escape(caption)}'>"
                f"<figcaption>{html.escape(caption)}</figcaption></figure>")

    def gallery(self, rows: list[dict], *, explained: bool = False) -> str:
        """Thumbnails of what the model saw, with id, label and p_spiral (and truth when known)."""
        if not rows:
            return "<p>none</p>"
        cards = []
        for row in rows:
            try:
                pixels = read_model_input(row["path"], self.loaded.preprocessing).pixels
            except GalaxyMorphError as error:
                cards.append(f"<div class='card'><p class='error'>{html.escape(str(error))}</p></div>")
                continue
            caption = row.get("caption") or f"{row['id']}: {row['label']} (p_spiral {row['p_spiral']:.3f})"
            if "truth" in row:
                caption += f", labelled {row['truth']}"
            thumbnail = _jpeg(pixels)
            images = f"<img src='data:image/jpeg;base64,{thumbnail}' alt='{html.escape(row['id'])}'>"
            if explained:
                images += f"<img src='data:image/jpeg;base64,{_jpeg(_overlay(self.loaded, pixels))}' alt='Grad-CAM'>"
            cards.append(f"<div class='card'>{images}<p>{html.escape(caption)}</p></div>")
        return f"<div class='gallery'>{''.join(cards)}</div>"

    def render(self, title: str) -> str:
        return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
section {{ margin-bottom: 2em; }}
.gallery {{ display: flex; flex-wrap: wrap; gap: 0.8em; }}
.card {{ width: {2 * THUMBNAIL_SIZE + 8}px; font-size: 0.8em; }}
.card img {{ width: {THUMBNAIL_SIZE}px; height: {THUMBNAIL_SIZE}px; margin-right: 4px; }}
.row {{ display: flex; flex-wrap: wrap; gap: 1em; }}
figure {{ margin: 0; }} .error {{ color: #a00; }}
</style></head>
<body><h1>{html.escape(title)}</h1>
{''.join(self.sections)}
<footer id="image-check"></footer>
<script>
window.addEventListener("load", () => {{
  const images = [...document.images];
  const loaded = images.filter(image => image.complete && image.naturalWidth > 0).length;
  const check = document.getElementById("image-check");
  check.dataset.imagesLoaded = loaded + "/" + images.length;
  check.textContent = loaded + " of " + images.length + " images shown.";
}});
</script>
</body></html>
"""


def _jpeg(pixels: np.ndarray) -> str:
    """A (3, S, S) image in [0, 1] as a base64 JPEG thumbnail."""
    return base64.b64encode(plots.thumbnail_jpeg(pixels)).decode()


def _overlay(loaded: LoadedModel, pixels: np.ndarray) -> np.ndarray:
    """The image with its Grad-CAM map for the predicted class blended in (inferno colours)."""
    from matplotlib import colormaps

    maps, _ = attributions(loaded, pixels[None])
    heat = colormaps["inferno"](maps[0])[..., :3].transpose(2, 0, 1)
    return 0.45 * pixels + 0.55 * heat
