"""The `galaxymorph` command: a thin layer over the Python API."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from galaxymorph.config import BATCH_SIZE, CALIBRATION_IMAGES, DEFAULT_MODEL, MAX_PIXELS, SPLIT_SEED, Preprocessing
from galaxymorph.outputs.catalog_writer import CHUNK_ROWS

app = typer.Typer(help="Galaxy morphology from survey images: elliptical or spiral, then the finer classes.",
                  no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None)
models_app = typer.Typer(help="List and inspect models.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(models_app, name="models")

ModelOption = Annotated[str, typer.Option("--model", "-m", help="Bundled model name or checkpoint path.")]
BatchOption = Annotated[int, typer.Option(help="Images per inference batch.")]
WorkersOption = Annotated[Optional[int], typer.Option(help="Decoding processes (default: one per core).")]
DeviceOption = Annotated[Optional[str], typer.Option(help="Where the model trains: cpu, cuda, cuda:1... (default: a GPU when PyTorch sees one).")]
BackendOption = Annotated[str, typer.Option(help="Inference back-end: auto (cuda when a GPU is present, else onnx-int8 when the model has an int8 graph, else onnx), cuda, onnx, onnx-int8 or torch.")]
TtaOption = Annotated[bool, typer.Option("--tta/--no-tta", help="Average over the 8 rotations and mirror images of each galaxy (8x the inference cost); p_spiral_std then spans the views too (a single model fills it only with --tta).")]
SurveyOption = Annotated[str, typer.Option(help="Cutout service: sdss (SkyServer) or legacy (DESI Legacy Survey viewer).", rich_help_panel="Cutouts")]
SizeOption = Annotated[int, typer.Option("--size", help="Cutout side in pixels.", rich_help_panel="Cutouts")]
ScaleOption = Annotated[float, typer.Option("--pixel-scale", help="Arcseconds per pixel (SDSS native 0.396, Legacy Survey 0.262).", rich_help_panel="Cutouts")]
FormatOption = Annotated[str, typer.Option("--format", help="jpeg, or fits (Legacy Survey only).", rich_help_panel="Cutouts")]
LayerOption = Annotated[str, typer.Option(help="Legacy Survey layer.", rich_help_panel="Cutouts")]
BaseUrlOption = Annotated[Optional[str], typer.Option(help="Service base URL (default: the survey's public one; ASTRO_DB_HOST overrides).", rich_help_panel="Cutouts")]
ConcurrencyOption = Annotated[int, typer.Option(help="Requests in flight at once.", rich_help_panel="Cutouts")]
RateOption = Annotated[float, typer.Option(help="Requests started per second at most (0: no limit).", rich_help_panel="Cutouts")]
TimeoutOption = Annotated[float, typer.Option(help="Seconds before a request is abandoned (then retried).", rich_help_panel="Cutouts")]
RetriesOption = Annotated[int, typer.Option(help="Retries after a failed attempt, with exponential backoff.", rich_help_panel="Cutouts")]
RaOption = Annotated[str, typer.Option(help="Right ascension column (degrees, or hours as h:m:s text).", rich_help_panel="Cutouts")]
DecOption = Annotated[str, typer.Option(help="Declination column (degrees, or d:m:s text).", rich_help_panel="Cutouts")]
IdOption = Annotated[Optional[str], typer.Option(help="Id column (default: id, id_str or objid when present, else the row number).", rich_help_panel="Cutouts")]


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"galaxymorph {version('galaxymorph')}")
        raise typer.Exit()


@app.callback()
def _options(version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                                   help="Print the version and exit.")] = False,
             quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Errors only: no warnings.")] = False,
             verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Also say what is being done.")] = False) -> None:
    """Warnings (a missing SDSS_API_KEY, say) are one log line each on stderr, not Python warnings."""
    import logging
    import warnings

    logging.basicConfig(format="%(levelname)s: %(message)s",
                        level=logging.ERROR if quiet else logging.INFO if verbose else logging.WARNING)

    def one_line(message, category, filename, lineno, file=None, line=None) -> None:
        logging.getLogger("galaxymorph").warning("%s", message)

    warnings.showwarning = one_line


def _fail(error: Exception) -> typer.Exit:
    typer.secho(f"error: {error}", err=True, fg=typer.colors.RED)
    return typer.Exit(code=2)


def _cutout_source(survey: str, size: int, pixel_scale: float, image_format: str, layer: str, base_url: str | None,
                   concurrency: int, rate_limit: float, timeout: float, retries: int):
    from galaxymorph.remote import CutoutService, CutoutSettings, FetchOptions

    settings = CutoutSettings(size=size, pixel_scale=pixel_scale, image_format=image_format, layer=layer)
    options = FetchOptions(concurrency=concurrency, rate_limit=rate_limit, timeout=timeout, retries=retries)
    return CutoutService(survey, settings, base_url=base_url), options


def _workers(workers: int | None) -> int:
    """The --workers option, one decoding process per core when not given."""
    from galaxymorph.config import default_workers

    return default_workers() if workers is None else workers


def _predict_options(batch_size: int, workers: int | None, backend: str, tta: bool = False, progress: bool = True,
                     max_pixels: int = MAX_PIXELS):
    from galaxymorph.prediction import PredictOptions

    return PredictOptions(batch_size=batch_size, workers=_workers(workers), backend=backend, tta=tta, progress=progress,
                          max_pixels=max_pixels)


@app.command()
def classify(
    paths: Annotated[list[Path], typer.Argument(help="Image files, folders (searched recursively), catalogs (.csv/.parquet with a file column), HDF5 arrays (Galaxy10 layout) or tar shards (WebDataset layout).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output catalog: .csv (with a NAME.csv.json sidecar describing it), .parquet, .fits (binary table) or .ecsv, each with column descriptions and provenance; or a folder (no suffix) for a Parquet dataset in ordered chunks, which --resume continues.")] = Path("morphology.csv"),
    model: ModelOption = DEFAULT_MODEL,
    batch_size: BatchOption = BATCH_SIZE,
    workers: WorkersOption = None,
    backend: BackendOption = "auto",
    tta: TtaOption = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    max_pixels: Annotated[int, typer.Option(help="Larger images get an error row, judged from their header before their pixels are read (each decoding process needs about 10 bytes a pixel).")] = MAX_PIXELS,
    resume: Annotated[bool, typer.Option("--resume", help="Continue a killed run into the same dataset folder: rows it holds are skipped (same inputs, same order).", rich_help_panel="Survey scale")] = False,
    chunk_rows: Annotated[int, typer.Option(help="Rows per Parquet chunk of a dataset folder.", rich_help_panel="Survey scale")] = CHUNK_ROWS,
    scheduler: Annotated[Optional[str], typer.Option(help="Run on a Dask cluster: its scheduler address (tcp://host:8786), or 'local' for a LocalCluster; PATHS are catalogs, the output a dataset folder. Needs galaxymorph[scale].", rich_help_panel="Survey scale")] = None,
    fetch: Annotated[bool, typer.Option("--fetch", help="PATHS are catalogs of sky positions: fetch each cutout and classify it as it arrives.", rich_help_panel="Cutouts")] = False,
    cache_dir: Annotated[Optional[Path], typer.Option(help="With --fetch: where cutouts are kept (default: the galaxymorph cache).", rich_help_panel="Cutouts")] = None,
    survey: SurveyOption = "sdss",
    size: SizeOption = 424,
    pixel_scale: ScaleOption = 0.396,
    image_format: FormatOption = "jpeg",
    layer: LayerOption = "ls-dr10",
    base_url: BaseUrlOption = None,
    concurrency: ConcurrencyOption = 8,
    rate_limit: RateOption = 10.0,
    timeout: TimeoutOption = 30.0,
    retries: RetriesOption = 4,
    ra_column: RaOption = "ra",
    dec_column: DecOption = "dec",
    id_column: IdOption = None,
) -> None:
    """Classify images and write one row per image: id, file, label, p_spiral, p_spiral_std, p_galaxy, ood_score,
    confident, the class probabilities, galaxy_found, galaxy_truncated, error (README: "Columns").

    With --fetch, each catalog row's cutout is downloaded while earlier ones are classified, and the
    output keeps the catalog's own columns. With --scheduler, catalogs are classified on a Dask cluster."""
    from galaxymorph.errors import GalaxyMorphError
    from galaxymorph.prediction import classify as run_classify

    try:
        cutouts = None
        if fetch:
            from galaxymorph.remote import CutoutCache

            service, fetch_options = _cutout_source(survey, size, pixel_scale, image_format, layer, base_url,
                                                    concurrency, rate_limit, timeout, retries)
            cutouts = (service, CutoutCache(cache_dir) if cache_dir else CutoutCache.default(), fetch_options)
        if scheduler:
            summary = _classify_on_cluster(paths, output, scheduler, model, backend, tta, cutouts,
                                           (ra_column, dec_column, id_column))
        else:
            inputs = paths
            if cutouts:
                from galaxymorph.remote import iter_fetched_rows

                service, cache, fetch_options = cutouts

                def inputs(done: int):  # a resumed run fetches nothing for the rows it already has
                    return iter_fetched_rows(paths, service, cache, options=fetch_options, ra_column=ra_column,
                                             dec_column=dec_column, id_column=id_column, skip=done)
            options = _predict_options(batch_size, workers, backend, tta, progress, max_pixels)
            summary = run_classify(inputs, output, model=model, options=options, resume=resume, chunk_rows=chunk_rows,
                                   total=_progress_total(paths) if cutouts and progress else None)
    except (GalaxyMorphError, ValueError) as error:
        raise _fail(error) from error
    for reason in summary.input_errors:  # whole inputs that failed, not only in the error column
        typer.secho(f"error: {reason}", err=True, fg=typer.colors.RED)
    if summary.resumed_after:
        typer.echo(f"resumed after the {summary.resumed_after} rows already in {summary.output}")
    typer.echo(f"{summary.rows} rows written to {summary.output}; {summary.failed} could not be classified"
               + (" (reasons in the error column)" if summary.failed else ""))
    if summary.rows and summary.failed == summary.rows:
        raise typer.Exit(code=1)


def _progress_total(paths: list[Path]) -> int | None:
    """The rows of catalogs of positions, for the progress bar (only counted when it is shown)."""
    import sys

    from galaxymorph.sources import count_inputs

    return count_inputs(paths) if sys.stderr.isatty() else None


def _classify_on_cluster(paths, output, scheduler, model, backend, tta, cutouts, position_columns):
    try:
        from galaxymorph.scale import WORKER_OPTIONS, Cutouts, classify_on_cluster
    except ImportError as error:
        raise ValueError(f"--scheduler needs Dask: pip install 'galaxymorph[scale]' ({error})") from error
    from dataclasses import replace

    return classify_on_cluster(paths, output, scheduler=scheduler, model=model,
                               options=replace(WORKER_OPTIONS, backend=backend, tta=tta),
                               cutouts=Cutouts(*cutouts, *position_columns) if cutouts else None)


@app.command()
def fetch(
    catalog: Annotated[Path, typer.Argument(help="Catalog of sky positions (.csv, .parquet or .fits) with ra and dec columns.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the cutouts and manifest.csv.")] = Path("cutouts"),
    survey: SurveyOption = "sdss",
    size: SizeOption = 424,
    pixel_scale: ScaleOption = 0.396,
    image_format: FormatOption = "jpeg",
    layer: LayerOption = "ls-dr10",
    base_url: BaseUrlOption = None,
    concurrency: ConcurrencyOption = 8,
    rate_limit: RateOption = 10.0,
    timeout: TimeoutOption = 30.0,
    retries: RetriesOption = 4,
    ra_column: RaOption = "ra",
    dec_column: DecOption = "dec",
    id_column: IdOption = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Download the cutout of every catalog row into a folder, with a manifest (a catalog `classify` reads).

    Re-running fetches only what is missing; failed rows keep their reason in the manifest."""
    from galaxymorph.errors import GalaxyMorphError
    from galaxymorph.remote import fetch_catalog

    try:
        service, options = _cutout_source(survey, size, pixel_scale, image_format, layer, base_url,
                                          concurrency, rate_limit, timeout, retries)
        summary = fetch_catalog(catalog, output, service, options=options, ra_column=ra_column,
                                dec_column=dec_column, id_column=id_column, progress=progress)
    except (GalaxyMorphError, ValueError) as error:
        raise _fail(error) from error
    typer.echo(f"{summary.rows} rows: {summary.fetched} fetched, {summary.cached} already there, "
               f"{summary.failed} failed (reasons in {summary.manifest})")
    if summary.rows and summary.failed == summary.rows:
        raise typer.Exit(code=1)


@app.command()
def explain(
    images: Annotated[list[Path], typer.Argument(help="Image files, folders or catalogs to explain, as classify takes them.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the PNGs and .npy maps.")] = Path("explanations"),
    model: ModelOption = DEFAULT_MODEL,
    method: Annotated[str, typer.Option(help="gradcam (last convolutional block), smoothgrad or integrated_gradients.")] = "gradcam",
    target: Annotated[Optional[str], typer.Option(help="Class to explain (default: the predicted class).")] = None,
    feature_maps: Annotated[bool, typer.Option("--feature-maps", help="Also draw every convolutional layer's maps as grids.")] = False,
) -> None:
    """Show what the model looked at: per image, ID.png (input, overlay, map, probability) and ID.npy (the map)."""
    from galaxymorph import explain as explanations
    from galaxymorph.errors import GalaxyMorphError
    from galaxymorph.models import load_model
    from galaxymorph.sources import iter_inputs

    try:
        loaded = load_model(model)
        if method not in explanations.METHODS:
            raise ValueError(f"--method must be one of {', '.join(explanations.METHODS)}, got {method!r}")
    except (GalaxyMorphError, ValueError) as error:
        raise _fail(error) from error
    failed = explained = 0
    for row in iter_inputs(images):  # folders and catalogs give their images, as for classify
        stem = row.id.replace("/", "_").replace("\\", "_")
        try:
            if row.error or not isinstance(row.file, Path):
                raise ValueError(row.error or f"{row.id}: explain reads image files, not members of HDF5 files or shards")
            explanation = explanations.explain(loaded, row.file, method=method, target=target)
            written = explanations.save_explanation(explanation, output, stem)
            if feature_maps:
                written += tuple(explanations.save_feature_maps(explanations.feature_maps(loaded, explanation.image),
                                                                output, stem))
        except (GalaxyMorphError, ValueError) as error:
            failed += 1
            typer.secho(f"error: {error}", err=True, fg=typer.colors.RED)
            continue
        explained += 1
        typer.echo(f"{row.file}: {explanation.target} {explanation.probabilities[explanation.target]:.1%} -> "
                   + ", ".join(str(w) for w in written))
    if not explained and not failed:
        raise _fail(ValueError("no image found in the inputs"))
    if not explained:
        raise typer.Exit(code=1)


@app.command()
def report(
    catalog: Annotated[Path, typer.Argument(help="A `galaxymorph classify` output catalog (.csv or .parquet).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The HTML file to write.")] = Path("report.html"),
    labels: Annotated[Optional[Path], typer.Option(help="Labelled catalog (gz1-sdss layout or file,label with ids) for the evaluation section.")] = None,
    model: ModelOption = DEFAULT_MODEL,
    gallery_size: Annotated[int, typer.Option(help="Galaxies per gallery.")] = 12,
) -> None:
    """One self-contained HTML page (images embedded): counts, histogram, confident and uncertain galaxies, and with labels the evaluation and the misclassified galaxies with Grad-CAM overlays."""
    from galaxymorph.errors import GalaxyMorphError
    from galaxymorph.outputs.report import write_report

    try:
        written = write_report(catalog, output, labels=labels, model=model, gallery_size=gallery_size)
    except (GalaxyMorphError, ValueError) as error:
        raise _fail(error) from error
    typer.echo(f"report written: {written} ({written.stat().st_size / 1e6:.1f} MB)")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on (127.0.0.1: this machine only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    model: ModelOption = DEFAULT_MODEL,
    batch_window: Annotated[float, typer.Option(help="Seconds a request waits to be batched with others (0: no dynamic batching).")] = 0.005,
    max_upload_mb: Annotated[float, typer.Option(help="Largest image file accepted, in MB.")] = 20.0,
    max_request_mb: Annotated[float, typer.Option(help="Largest request body, in MB, counted as it arrives (JSON bodies: 1 MB).")] = 100.0,
    max_pixels: Annotated[int, typer.Option(help="Larger images are refused from their header, before decoding.")] = MAX_PIXELS,
    request_timeout: Annotated[float, typer.Option(help="Seconds a request may take (fetching cutouts included) before a 504.")] = 60.0,
    cors_origin: Annotated[Optional[list[str]], typer.Option(help="Allow browser pages from this origin (repeatable; CORS is off by default).")] = None,
    tta: TtaOption = False,
) -> None:
    """Serve the model over HTTP: POST /v1/classify, POST /v1/explain, GET /v1/models, the page at /, docs at /docs.

    With GALAXYMORPH_API_KEY set, POST endpoints need it in the X-API-Key header."""
    from galaxymorph.errors import GalaxyMorphError
    from galaxymorph.service import ServiceSettings, serve as run_service

    try:
        settings = ServiceSettings(model=model, batch_window=batch_window, max_upload_bytes=int(max_upload_mb * 2**20),
                                   max_request_bytes=int(max_request_mb * 2**20), max_pixels=max_pixels,
                                   request_timeout=request_timeout, cors_origins=tuple(cors_origin or ()), tta=tta)
        run_service(host, port, settings)
    except (GalaxyMorphError, ValueError) as error:
        raise _fail(error) from error


@app.command("cutout-server")
def cutout_server(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0: any free port).")] = 8080,
    latency: Annotated[float, typer.Option(help="Seconds each answer waits, like a distant service.")] = 0.0,
    fault_rate: Annotated[float, typer.Option(help="Share of requests whose first attempt fails (timeouts, 500, 429, truncated images...).")] = 0.0,
) -> None:
    """Run the local cutout server (SDSS and Legacy Survey protocols, generated galaxies) until Ctrl-C, for trying
    fetch and classify --fetch offline: set ASTRO_DB_HOST to the address it prints."""
    import signal
    import time

    from galaxymorph.remote.local_server import LocalCutoutServer

    try:
        server = LocalCutoutServer(port=port, latency=latency, fault_rate=fault_rate)
    except (OSError, ValueError) as error:
        raise _fail(error) from error

    def stop(signal_number: int, frame: object) -> None:
        raise KeyboardInterrupt

    for stopping in (signal.SIGINT, signal.SIGTERM):  # SIGINT too: a shell's background job starts with it ignored
        signal.signal(stopping, stop)
    with server:
        typer.echo(f"cutout server at {server.url}; in another shell: export ASTRO_DB_HOST={server.url}  (Ctrl-C stops it)")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


@app.command()
def export(
    model: Annotated[str, typer.Argument(help="Bundled model name or checkpoint path.")] = DEFAULT_MODEL,
    onnx: Annotated[Path, typer.Option("--onnx", help="ONNX file to write.")] = Path("galaxymorph.onnx"),
) -> None:
    """Export a model to ONNX (classes, preprocessing and temperature in its metadata), checked against torch.

    The graph takes model inputs, not files: make them as classify does, framing included, with
    galaxymorph.load_image(path, load_model(MODEL).preprocessing); divide the logits by the temperature."""
    from galaxymorph.errors import GalaxyMorphError
    from galaxymorph.models import load_model
    from galaxymorph.prediction import export_onnx

    try:
        path, difference = export_onnx(load_model(model), onnx)
    except (GalaxyMorphError, ValueError) as error:
        raise _fail(error) from error
    typer.echo(f"{path} written; ONNX Runtime matches torch to {difference:.1e} on 64 random images; "
               "its input is galaxymorph.load_image(path, preprocessing), as classify makes it")


@app.command()
def demo(
    output_dir: Annotated[Path, typer.Option("--output-dir", "-o", help="Folder for the images, catalog and contact sheet.")] = Path("galaxymorph-demo"),
    count: Annotated[int, typer.Option(help="Number of example galaxies.")] = 12,
    model: ModelOption = DEFAULT_MODEL,
) -> None:
    """Run the whole path on synthetic example galaxies: no data of your own needed."""
    from galaxymorph.demo import run_demo
    from galaxymorph.errors import GalaxyMorphError

    try:
        result = run_demo(output_dir, count=count, model=model)
    except (GalaxyMorphError, ValueError) as error:
        raise _fail(error) from error
    typer.echo(f"classified {result.catalog.rows} example galaxies ({result.correct} as made)\n"
               f"catalog: {result.catalog.output}\ncontact sheet: {result.contact_sheet}")


@app.command()
def train(
    labels: Annotated[Path, typer.Argument(help="Labelled catalog: gz1-sdss labels.csv or a file,label table.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Checkpoint path (NAME.pt and NAME.json are written).")] = Path("runs/model.pt"),
    arch: Annotated[str, typer.Option(help="Registered architecture (see `galaxymorph models list`).")] = "galaxynet",
    classes: Annotated[str, typer.Option(help="Class scheme: binary (elliptical/spiral), gz1 (Galaxy Zoo 1 classes) or labels (as given).")] = "binary",
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 30,
    batch_size: BatchOption = BATCH_SIZE,
    learning_rate: Annotated[float, typer.Option("--lr", help="Peak learning rate (AdamW).")] = 2e-3,
    seed: Annotated[int, typer.Option(help="Seed of the split, initialisation and augmentation.")] = SPLIT_SEED,
    split_seed: Annotated[Optional[int], typer.Option(help="Seed of the split alone, when it differs from --seed (ensemble members share a split).")] = None,
    max_rows: Annotated[Optional[int], typer.Option(help="Train on a seeded random subset of this many rows.")] = None,
    extra_labels: Annotated[Optional[Path], typer.Option(help="A second labelled catalog (file,label) whose rows are added to the training split alone, e.g. pseudo-labels of unlabelled images; the first catalog keeps its own split.")] = None,
    train_share: Annotated[float, typer.Option(help="Train on this share of the training split (stratified, seeded by the split seed); validation and test stay whole: for learning curves.")] = 1.0,
    device: DeviceOption = None,
    workers: WorkersOption = None,
    augment: Annotated[bool, typer.Option(help="Rotations, mirror flips (winding labels swapped) and zoom.")] = True,
    survey_augment: Annotated[bool, typer.Option(help="With --augment: blur, colour stretch, noise and JPEG changes.")] = True,
    tight_views: Annotated[int, typer.Option(help="With --augment: tight, zoomed renderings made of each training cutout (galaxy filling or overflowing the frame, upsampled like 0.1-0.25\"/px cutouts of a native-scale survey image); 0: none.")] = 0,
    tight_share: Annotated[float, typer.Option(help="With --tight-views: share of the training images replaced by one of their tight views each time they are drawn.")] = 0.3,
    framing: Annotated[bool, typer.Option(help="Crop around the central galaxy so that it spans --frame-fill of the input.")] = True,
    frame_fill: Annotated[float, typer.Option(help="With --framing: twice the half-light radius as a fraction of the input side.")] = Preprocessing().frame_fill,
    image_size: Annotated[int, typer.Option(help="Side of the model input in px.")] = Preprocessing().image_size,
    evidence_penalty: Annotated[float, typer.Option(help="Weight of a loss on the share of the labelled class's activation map outside the central galaxy (0: off; galaxynet only).")] = 0.0,
    class_weight_power: Annotated[float, typer.Option(help="Loss weight of each class: its count to the power minus this (0: unweighted); the weights' prior is taken out of the output after training.")] = 0.5,
    label_smoothing: Annotated[float, typer.Option(help="Share of each training label spread evenly over all classes, for catalogs with some wrong labels (0: off).")] = 0.0,
    weight_averaging: Annotated[float, typer.Option(help="Keep an exponential moving average of the weights with this decay per step, and evaluate and save it (0: off; 0.998 averages over about the last 500 steps).")] = 0.0,
    from_model: Annotated[Optional[str], typer.Option("--from", help="Go on training a model (bundled name or checkpoint): its architecture, preprocessing and weights, the output layer too when --classes gives the same classes; --arch and the framing and size options are then its own.")] = None,
) -> None:
    """Train a model on a labelled catalog; keeps the best epoch's checkpoint."""
    from galaxymorph.preprocess.augment import SurveyAugmentation

    _run_training(labels=labels, output=output, architecture=arch, classes=classes, epochs=epochs,
                  batch_size=batch_size, learning_rate=learning_rate, seed=seed, split_seed=split_seed, max_rows=max_rows,
                  train_share=train_share, device=device, workers=workers, augment=augment, survey_augmentation=SurveyAugmentation() if survey_augment else None,
                  tight_views=tight_views, tight_share=tight_share, extra_labels=extra_labels,
                  preprocessing=Preprocessing(image_size=image_size, framing=framing, frame_fill=frame_fill),
                  evidence_penalty=evidence_penalty, class_weight_power=class_weight_power,
                  label_smoothing=label_smoothing, weight_averaging=weight_averaging, init_from=from_model)


def _run_training(*, workers: int | None, **settings) -> None:
    from galaxymorph.errors import GalaxyMorphError
    from galaxymorph.training import TrainConfig, train as run_train

    try:
        weights = run_train(TrainConfig(workers=_workers(workers), **settings))
    except (GalaxyMorphError, ValueError) as error:
        raise _fail(error) from error
    typer.echo(f"checkpoint written: {weights} (+ {weights.with_suffix('.json').name})")


@app.command()
def finetune(
    from_model: Annotated[str, typer.Option("--from", help="Pretrained model: bundled name or checkpoint path.")] = DEFAULT_MODEL,
    labels: Annotated[Path, typer.Option(help="Labelled catalog of the new task (file,label).")] = ...,
    output: Annotated[Path, typer.Option("--output", "-o", help="Checkpoint path (NAME.pt and NAME.json are written).")] = Path("runs/finetuned.pt"),
    classes: Annotated[str, typer.Option(help="Class scheme: labels (as given), binary or gz1.")] = "labels",
    epochs: Annotated[int, typer.Option(help="Training epochs in all.")] = 30,
    freeze_epochs: Annotated[int, typer.Option(help="Epochs that train the new output layer alone.")] = 10,
    unfrozen_blocks: Annotated[int, typer.Option(help="Feature blocks, counted from the output, that train after those epochs.")] = 2,
    learning_rate: Annotated[float, typer.Option("--lr", help="Peak learning rate (AdamW).")] = 1e-3,
    batch_size: BatchOption = 64,
    seed: Annotated[int, typer.Option(help="Seed of the split, initialisation and augmentation.")] = SPLIT_SEED,
    device: DeviceOption = None,
    workers: WorkersOption = None,
) -> None:
    """Adapt a pretrained model to a new label set: new output layer, frozen then partly unfrozen backbone."""
    _run_training(labels=labels, output=output, classes=classes, epochs=epochs, batch_size=batch_size,
                  learning_rate=learning_rate, seed=seed, init_from=from_model, freeze_epochs=freeze_epochs,
                  unfrozen_blocks=unfrozen_blocks, device=device, workers=workers)


@app.command()
def evaluate(
    labels: Annotated[Path, typer.Argument(help="Labelled catalog (gz1-sdss labels.csv or file,label).")],
    model: ModelOption = DEFAULT_MODEL,
    split: Annotated[str, typer.Option(help="Rows to use: test, val or train (the model's saved split) or all.")] = "test",
    output_dir: Annotated[Path, typer.Option("--output-dir", "-o", help="Folder for metrics.json and the plots.")] = Path("evaluation"),
    batch_size: BatchOption = BATCH_SIZE,
    workers: WorkersOption = None,
    backend: BackendOption = "auto",
    tta: TtaOption = False,
) -> None:
    """Accuracy, ROC AUC, per-class precision/recall, confusion matrix and calibration error."""
    from galaxymorph.errors import GalaxyMorphError
    from galaxymorph.evaluation import evaluate as run_evaluate

    try:
        metrics = run_evaluate(labels, output_dir, model=model, split=split,
                               options=_predict_options(batch_size, workers, backend, tta, progress=False))
    except (GalaxyMorphError, ValueError) as error:
        raise _fail(error) from error
    if "spiral_vs_elliptical" in metrics:
        binary = metrics["spiral_vs_elliptical"]
        low, high = binary["accuracy_95"]
        typer.echo(f"{metrics['model']} on {split} ({binary['n']} spiral/elliptical galaxies): accuracy {binary['accuracy']:.4f} "
                   f"(95% interval {low:.3f}-{high:.3f}), ROC AUC {binary['roc_auc']:.4f}, ECE {binary['ece']:.4f}")
    if "classes" in metrics:
        typer.echo(f"{metrics['model']} on {split}, {len(metrics['classes']['labels'])} classes: "
                   f"accuracy {metrics['classes']['accuracy']:.4f}")
    typer.echo(f"written to {output_dir}")


@app.command()
def calibrate(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint to calibrate (its .json metadata is updated).")],
    labels: Annotated[Path, typer.Argument(help="The labelled catalog the checkpoint was trained on.")],
    split: Annotated[str, typer.Option(help="Split to fit the temperature and set the ood_score limit on (never the test split).")] = "val",
    workers: WorkersOption = None,
) -> None:
    """Fit a temperature on the validation split so that p_spiral is honest, and the feature density behind
    ood_score on the training split (its limit on the validation split); both are stored in the checkpoint."""
    from galaxymorph.errors import GalaxyMorphError
    from galaxymorph.training.calibration import calibrate as run_calibrate

    if split == "test":
        raise _fail(ValueError("the test split is kept for final figures; calibrate on 'val'"))
    try:
        result = run_calibrate(checkpoint, labels, split=split,
                               options=_predict_options(BATCH_SIZE, workers, "auto", progress=False))
    except (GalaxyMorphError, ValueError) as error:
        raise _fail(error) from error
    typer.echo(f"temperature {result['temperature']:.3f} on {result['galaxies']} {split} galaxies: "
               f"ECE {result['ece_before']:.4f} -> {result['ece_after']:.4f}, "
               f"NLL {result['nll_before']:.4f} -> {result['nll_after']:.4f}")
    typicality = result["typicality"]
    typer.echo(f"feature density fitted on {typicality['images']} training galaxies: ood_score limit {typicality['limit']:.3f} "
               f"({typicality['typical_share']:.0%} of the {split} galaxies within it)")


@app.command()
def quantize(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint to quantise (NAME.int8.onnx is written beside it).")],
    labels: Annotated[Path, typer.Argument(help="The labelled catalog the checkpoint was trained on.")],
    images: Annotated[int, typer.Option(help="Training-split images whose activations set the int8 ranges.")] = CALIBRATION_IMAGES,
    workers: WorkersOption = None,
) -> None:
    """Make an int8 ONNX graph of a checkpoint for fast CPU inference, checked on the validation split."""
    from galaxymorph.errors import GalaxyMorphError
    from galaxymorph.models.checkpoint import int8_graph_path
    from galaxymorph.quantization import quantize_checkpoint

    try:
        result = quantize_checkpoint(checkpoint, labels, images=images, workers=_workers(workers))
    except (GalaxyMorphError, ValueError) as error:
        raise _fail(error) from error
    typer.echo(f"{int8_graph_path(checkpoint).name} written from {result['calibration_images']} training images; on {result['galaxies']} "
               f"validation galaxies its probabilities differ from float32 by {result['mean_abs_difference']:.4f} on average "
               f"({result['max_abs_difference']:.4f} at most), same class for {result['same_class']:.1%}")


@app.command()
def ensemble(
    members: Annotated[list[Path], typer.Argument(help="Checkpoints trained on the same split with different --seed.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Checkpoint path of the ensemble.")] = Path("runs/ensemble.pt"),
) -> None:
    """Combine checkpoints into one model that averages their logits; calibrate it next."""
    from galaxymorph.errors import GalaxyMorphError
    from galaxymorph.training import combine_checkpoints

    try:
        weights = combine_checkpoints(members, output)
    except GalaxyMorphError as error:
        raise _fail(error) from error
    typer.echo(f"ensemble of {len(members)} written: {weights} (+ {weights.with_suffix('.json').name}); "
               f"next: galaxymorph calibrate {weights} LABELS")


@models_app.command("list")
def models_list() -> None:
    """Bundled pretrained models and registered architectures."""
    from galaxymorph.models import bundled_models, list_architectures, load_model

    for name in bundled_models():
        loaded = load_model(name)
        validation = loaded.metadata.get("metrics", {}).get("validation", {})
        architecture = loaded.metadata["architecture"] + (f" x{loaded.metadata['members']}" if "members" in loaded.metadata else "")
        typer.echo(f"pretrained  {name:20s} {architecture:16s} classes: {', '.join(loaded.classes)}"
                   + (f"; validation ROC AUC {validation['spiral_roc_auc']:.3f}" if "spiral_roc_auc" in validation else "")
                   + ("; int8 graph for CPUs" if loaded.int8_graph else ""))
    for name in list_architectures():
        typer.echo(f"architecture {name}")


@models_app.command("show")
def models_show(
    name: Annotated[str, typer.Argument(help="Architecture, bundled model or checkpoint path.")],
    seed: Annotated[int, typer.Option(help="Seed of the generated example galaxy.")] = 0,
) -> None:
    """Layer-by-layer summary and the prediction for a generated example spiral (as the demo makes them)."""
    import numpy as np
    import torch

    from galaxymorph.preprocess.decode import decode_array
    from galaxymorph.sources.synthetic import synthetic_galaxy

    from galaxymorph.errors import GalaxyMorphError
    from galaxymorph.models import bundled_models, create_model, load_model, logits_to_probabilities
    from galaxymorph.models.summary import layer_summary

    try:
        if name in bundled_models() or Path(name).with_suffix(".pt").is_file():
            loaded = load_model(name)
            model, preprocessing, origin = loaded.model, loaded.preprocessing, "pretrained"
        else:
            model, preprocessing, origin = create_model(name), Preprocessing(), "untrained"
    except GalaxyMorphError as error:
        raise _fail(error) from error
    size = preprocessing.image_size
    typer.echo(f"{name} ({origin}, {type(model).__name__}), input (3, {size}, {size}), classes: {', '.join(model.classes)}")
    typer.echo(f"{'layer':28s} {'type':14s} {'output shape':18s} {'parameters':>10s}")
    rows = layer_summary(model, size)
    for row in rows:
        typer.echo(f"{row.name:28s} {row.kind:14s} {str(row.output_shape):18s} {row.parameters:>10,d}")
    total = sum(p.numel() for p in model.parameters())
    typer.echo(f"total parameters: {total:,d}")
    galaxy = synthetic_galaxy("spiral", np.random.default_rng(seed))
    image = torch.from_numpy(decode_array(galaxy, "example", preprocessing).pixels[None])
    with torch.no_grad():
        probabilities = logits_to_probabilities(model.eval()(image))[0]
    shown = ", ".join(f"{c} {p:.4f}" for c, p in zip(model.classes, probabilities.tolist()))
    typer.echo(f"prediction for a generated spiral galaxy (seed {seed}): {shown}")
