"""The `galaxymorph` command: a thin layer over the public names of `galaxymorph`.

Every command runs inside one error boundary (`_command`): the project's own errors, bad values and
file-system errors become one red `error:` line and exit status 2.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Optional

import typer

import galaxymorph
from galaxymorph import (BATCH_SIZE, CALIBRATION_IMAGES, CHUNK_ROWS, DEFAULT_MODEL, MAX_PIXELS, SPLIT_SEED,
                         GalaxyMorphError, Preprocessing)

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
ProgressOption = Annotated[bool, typer.Option(help="Show a progress bar.")]
MaxPixelsOption = Annotated[int, typer.Option(help="Larger images get an error row, judged from their header before their pixels are read (each decoding process needs about 10 bytes a pixel).")]
FetchOption = Annotated[bool, typer.Option("--fetch", help="PATHS are catalogs of sky positions: fetch each cutout and use it as it arrives.", rich_help_panel="Cutouts")]
CacheDirOption = Annotated[Optional[Path], typer.Option(help="With --fetch: where cutouts are kept (default: the galaxymorph cache).", rich_help_panel="Cutouts")]
ResumeOption = Annotated[bool, typer.Option("--resume", help="Continue a killed run into the same dataset folder: rows it holds are skipped (same inputs, same order).", rich_help_panel="Survey scale")]
ChunkRowsOption = Annotated[int, typer.Option(help="Rows per Parquet chunk of a dataset folder.", rich_help_panel="Survey scale")]


def _command(name: str | None = None, *, group: typer.Typer = app):
    """Register a command behind the one error boundary of the CLI."""
    def register(command):
        @functools.wraps(command)
        def guarded(*args, **kwargs):
            try:
                return command(*args, **kwargs)
            except (GalaxyMorphError, ValueError, OSError) as error:
                _echo_error(str(error))
                raise typer.Exit(code=2) from error
        return group.command(name)(guarded)
    return register


def _cutout_option(kind: type, text: str, *flags: str):
    return Annotated[kind, typer.Option(*flags, help=text, rich_help_panel="Cutouts")]


def _cutout_parameters() -> dict[str, inspect.Parameter]:
    """The cutout options of `classify --fetch` and `fetch`, with the defaults of the remote API's dataclasses."""
    settings, fetching, cutouts = galaxymorph.CutoutSettings, galaxymorph.FetchOptions, galaxymorph.Cutouts
    options = {
        "survey": (_cutout_option(str, "Cutout service: sdss (SkyServer) or legacy (DESI Legacy Survey viewer)."),
                   galaxymorph.DEFAULT_SURVEY),
        "size": (_cutout_option(int, "Cutout side in pixels.", "--size"), settings.size),
        "pixel_scale": (_cutout_option(float, "Arcseconds per pixel (SDSS native 0.396, Legacy Survey 0.262).",
                                       "--pixel-scale"), settings.pixel_scale),
        "image_format": (_cutout_option(str, "jpeg, or fits (Legacy Survey only).", "--format"), settings.image_format),
        "layer": (_cutout_option(str, "Legacy Survey layer."), settings.layer),
        "base_url": (_cutout_option(Optional[str], "Service base URL (default: the survey's public one; ASTRO_DB_HOST overrides)."), None),
        "concurrency": (_cutout_option(int, "Requests in flight at once."), fetching.concurrency),
        "rate_limit": (_cutout_option(float, "Requests started per second at most (0: no limit)."), fetching.rate_limit),
        "timeout": (_cutout_option(float, "Seconds before a request is abandoned (then retried)."), fetching.timeout),
        "retries": (_cutout_option(int, "Retries after a failed attempt, with exponential backoff."), fetching.retries),
        "widen_truncated": (_cutout_option(int, "Times (at most 4) a cutout whose galaxy runs off its edge is asked again at twice the field (pixel scale doubled, same size; 0: never)."),
                            fetching.widen_truncated),
        "ra_column": (_cutout_option(str, "Right ascension column (degrees, or hours as h:m:s text)."), cutouts.ra_column),
        "dec_column": (_cutout_option(str, "Declination column (degrees, or d:m:s text)."), cutouts.dec_column),
        "id_column": (_cutout_option(Optional[str], "Id column (default: id, id_str or objid when present, else the row number)."),
                      cutouts.id_column),
    }
    return {name: inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=kind, default=default)
            for name, (kind, default) in options.items()}


def _with_cutout_options(command):
    """Give a command the cutout options; it receives them as `cutouts`, a function that builds the
    `galaxymorph.Cutouts` (service, cache, fetch options, position columns) when it is called."""
    parameters = _cutout_parameters()
    own = inspect.signature(command, eval_str=True)

    def with_cutouts(**values):
        chosen = {name: values.pop(name) for name in parameters}
        return command(**values, cutouts=functools.partial(_cutouts, **chosen))

    functools.update_wrapper(with_cutouts, command, assigned=("__module__", "__name__", "__qualname__", "__doc__"),
                             updated=())
    with_cutouts.__signature__ = own.replace(parameters=[p for p in own.parameters.values() if p.name != "cutouts"]
                                             + list(parameters.values()))
    return with_cutouts


def _cutouts(*, survey, size, pixel_scale, image_format, layer, base_url, concurrency, rate_limit, timeout, retries,
             widen_truncated, ra_column, dec_column, id_column, cache=None):
    options = galaxymorph.FetchOptions(concurrency=concurrency, rate_limit=rate_limit, timeout=timeout, retries=retries,
                                       widen_truncated=widen_truncated)
    settings = galaxymorph.CutoutSettings(size=size, pixel_scale=pixel_scale, image_format=image_format, layer=layer)
    return galaxymorph.Cutouts(galaxymorph.CutoutService(survey, settings, base_url=base_url),
                               cache or galaxymorph.CutoutCache.default(), options,
                               ra_column=ra_column, dec_column=dec_column, id_column=id_column)


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


def _echo_error(message: str) -> None:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)


@_command()
@_with_cutout_options
def classify(
    paths: Annotated[list[Path], typer.Argument(help="Image files, folders (searched recursively), catalogs (.csv/.parquet with a file column), HDF5 arrays (Galaxy10 layout) or tar shards (WebDataset layout).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output catalog: .csv (with a NAME.csv.json sidecar describing it), .parquet, .fits (binary table) or .ecsv, each with column descriptions and provenance; or a folder (no suffix) for a Parquet dataset in ordered chunks, which --resume continues.")] = Path("morphology.csv"),
    model: ModelOption = DEFAULT_MODEL,
    batch_size: BatchOption = BATCH_SIZE,
    workers: WorkersOption = None,
    backend: BackendOption = "auto",
    tta: TtaOption = False,
    progress: ProgressOption = True,
    max_pixels: MaxPixelsOption = MAX_PIXELS,
    resume: ResumeOption = False,
    chunk_rows: ChunkRowsOption = CHUNK_ROWS,
    scheduler: Annotated[Optional[str], typer.Option(help="Run on a Dask cluster: its scheduler address (tcp://host:8786), or 'local' for a LocalCluster; PATHS are catalogs, the output a dataset folder. Needs galaxymorph[scale].", rich_help_panel="Survey scale")] = None,
    fetch: FetchOption = False,
    cache_dir: CacheDirOption = None,
    *,
    cutouts,
) -> None:
    """Classify images and write one row per image: id, file, label, p_spiral, p_spiral_std, p_galaxy, ood_score,
    confident, the class probabilities, galaxy_found, galaxy_truncated, error (README: "Columns").

    With --fetch, each catalog row's cutout is downloaded while earlier ones are classified, and the
    output keeps the catalog's own columns. With --scheduler, catalogs are classified on a Dask cluster."""
    fetched = _fetched_cutouts(fetch, cache_dir, cutouts)
    if scheduler:
        try:
            on_cluster, worker_options = galaxymorph.classify_on_cluster, galaxymorph.WORKER_OPTIONS
        except ImportError as error:
            raise ValueError(f"--scheduler needs Dask: pip install 'galaxymorph[scale]' ({error})") from error
        summary = on_cluster(paths, output, scheduler=scheduler, model=model, cutouts=fetched,
                             options=replace(worker_options, backend=backend, tta=tta))
    else:
        options = galaxymorph.PredictOptions(batch_size=batch_size, workers=workers, backend=backend, tta=tta,
                                             progress=progress, max_pixels=max_pixels)
        summary = galaxymorph.classify(_inputs(paths, fetched), output, model=model,
                                       options=options, resume=resume, chunk_rows=chunk_rows,
                                       total=_progress_total(paths) if fetched and progress else None,
                                       source=fetched.what_is_asked() if fetched else None)
    _report_rows(summary, "classified")


def _report_rows(summary, done: str) -> None:
    """What a classify or embed run wrote; exit status 1 when no image could be used."""
    for reason in summary.input_errors:  # whole inputs that failed, not only in the error column
        _echo_error(reason)
    if summary.resumed_after:
        typer.echo(f"resumed after the {summary.resumed_after} rows already in {summary.output}: "
                   f"{summary.rows - summary.resumed_after} more written, {summary.rows} in all")
    else:
        typer.echo(f"{summary.rows} rows written to {summary.output}")
    typer.echo(f"{summary.failed} could not be {done}" + (" (reasons in the error column)" if summary.failed else ""))
    if summary.rows and summary.failed == summary.rows:
        raise typer.Exit(code=1)


def _fetched_cutouts(fetch: bool, cache_dir: Path | None, cutouts):
    """With --fetch, the `galaxymorph.Cutouts` of the cutout options, kept in `cache_dir` when given."""
    return cutouts(cache=galaxymorph.CutoutCache(cache_dir) if cache_dir else None) if fetch else None


def _inputs(paths: list[Path], fetched):
    """The paths as they are, or with --fetch the rows of their positions, fetched as they are used;
    a resumed run fetches nothing for the rows it already has."""
    if fetched is None:
        return paths

    def rows(done: int):
        return galaxymorph.iter_fetched_rows(paths, fetched.service, fetched.cache, options=fetched.options,
                                             ra_column=fetched.ra_column, dec_column=fetched.dec_column,
                                             id_column=fetched.id_column, skip=done)
    return rows


def _progress_total(paths: list[Path]) -> int | None:
    """The rows of catalogs of positions, for the progress bar (only counted when it is shown)."""
    import sys

    return galaxymorph.count_inputs(paths) if sys.stderr.isatty() else None


@_command()
@_with_cutout_options
def fetch(
    catalog: Annotated[Path, typer.Argument(help="Catalog of sky positions (.csv, .parquet or .fits) with ra and dec columns.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the cutouts and manifest.csv.")] = Path("cutouts"),
    progress: ProgressOption = True,
    *,
    cutouts,
) -> None:
    """Download the cutout of every catalog row into a folder, with a manifest (a catalog `classify` reads).

    Re-running fetches only what is missing; failed rows keep their reason in the manifest."""
    chosen = cutouts()
    summary = galaxymorph.fetch_catalog(catalog, output, chosen.service, options=chosen.options,
                                        ra_column=chosen.ra_column, dec_column=chosen.dec_column,
                                        id_column=chosen.id_column, progress=progress)
    typer.echo(f"{summary.rows} rows: {summary.fetched} fetched, {summary.cached} already there, "
               f"{summary.failed} failed (reasons in {summary.manifest})")
    if summary.rows and summary.failed == summary.rows:
        raise typer.Exit(code=1)


@_command()
@_with_cutout_options
def embed(
    paths: Annotated[list[Path], typer.Argument(help="Image files, folders, catalogs, HDF5 arrays or tar shards, as classify takes them.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="A .parquet file, or a folder (no suffix) for a Parquet dataset in ordered chunks, which --resume continues.")] = Path("embeddings.parquet"),
    model: ModelOption = DEFAULT_MODEL,
    batch_size: BatchOption = BATCH_SIZE,
    workers: WorkersOption = None,
    backend: BackendOption = "auto",
    progress: ProgressOption = True,
    max_pixels: MaxPixelsOption = MAX_PIXELS,
    resume: ResumeOption = False,
    chunk_rows: ChunkRowsOption = CHUNK_ROWS,
    fetch: FetchOption = False,
    cache_dir: CacheDirOption = None,
    *,
    cutouts,
) -> None:
    """Write one embedding per image (id, file, embedding, error, and a catalog's own columns): the
    index that `similar` and `oddities` search. Embeddings are the model's features averaged over
    the 8 rotations and mirror images of each galaxy, so a turned galaxy has the same one. With
    --fetch, catalogs of sky positions are fetched as for classify."""
    options = galaxymorph.PredictOptions(batch_size=batch_size, workers=workers, backend=backend, progress=progress,
                                         max_pixels=max_pixels)
    fetched = _fetched_cutouts(fetch, cache_dir, cutouts)
    summary = galaxymorph.embed(_inputs(paths, fetched), output, model=model, options=options, resume=resume,
                                chunk_rows=chunk_rows, source=fetched.what_is_asked() if fetched else None)
    _report_rows(summary, "embedded")


@_command()
def similar(
    index: Annotated[Path, typer.Argument(help="Embeddings from `galaxymorph embed` (.parquet file or dataset folder).")],
    query: Annotated[list[str], typer.Option("--query", help="An id in the index, or an image file (repeatable).")],
    k: Annotated[int, typer.Option("-k", help="Neighbours per query.")] = 10,
    output: Annotated[Path, typer.Option("--output", "-o", help="CSV (or .parquet) of query, rank, id, file, distance.")] = Path("neighbours.csv"),
) -> None:
    """The K galaxies most like each query, nearest first (cosine distance of the embeddings; the query itself left out)."""
    rows = galaxymorph.similar(galaxymorph.EmbeddingIndex.load(index), query, k=k)
    with galaxymorph.CatalogWriter(output) as writer:
        writer.write(rows)
    typer.echo(f"{len(rows)} neighbours of {len(query)} queries written to {output}")


@_command()
def oddities(
    index: Annotated[Path, typer.Argument(help="Embeddings from `galaxymorph embed` (.parquet file or dataset folder).")],
    count: Annotated[int, typer.Option("-n", help="How many to list.")] = 100,
    output: Annotated[Path, typer.Option("--output", "-o", help="CSV (or .parquet) of rank, id, file, oddity.")] = Path("oddities.csv"),
) -> None:
    """The N least typical galaxies of an index: those farthest from their 10th nearest neighbour
    (the lowest local density of the embeddings), oddest first; `galaxymorph report` shows the CSV as a gallery."""
    rows = galaxymorph.oddities(galaxymorph.EmbeddingIndex.load(index), count=count)
    with galaxymorph.CatalogWriter(output) as writer:
        writer.write(rows)
    typer.echo(f"{len(rows)} oddities written to {output}")


@_command()
def explain(
    images: Annotated[list[Path], typer.Argument(help="Image files, folders or catalogs to explain, as classify takes them.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the PNGs and .npy maps.")] = Path("explanations"),
    model: ModelOption = DEFAULT_MODEL,
    method: Annotated[str, typer.Option(help="gradcam (last convolutional block), smoothgrad or integrated_gradients.")] = "gradcam",
    target: Annotated[Optional[str], typer.Option(help="Class to explain (default: the predicted class).")] = None,
    feature_maps: Annotated[bool, typer.Option("--feature-maps", help="Also draw every convolutional layer's maps as grids.")] = False,
) -> None:
    """Show what the model looked at: per image, ID.png (input, overlay, map, probability) and ID.npy (the map)."""
    failed = explained = 0
    for result in galaxymorph.explain_inputs(images, output, model=model, method=method, target=target,
                                             with_feature_maps=feature_maps):
        if result.error:
            failed += 1
            _echo_error(result.error)
            continue
        explained += 1
        explanation = result.explanation
        typer.echo(f"{result.row.file}: {explanation.target} {explanation.probabilities[explanation.target]:.1%} -> "
                   + ", ".join(str(path) for path in result.written))
    if not explained and not failed:
        raise ValueError("no image found in the inputs")
    if not explained:
        raise typer.Exit(code=1)


@_command()
def report(
    catalog: Annotated[Path, typer.Argument(help="A `galaxymorph classify` output catalog (.csv or .parquet).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The HTML file to write.")] = Path("report.html"),
    labels: Annotated[Optional[Path], typer.Option(help="Labelled catalog (gz1-sdss layout or file,label with ids) for the evaluation section.")] = None,
    model: ModelOption = DEFAULT_MODEL,
    gallery_size: Annotated[int, typer.Option(help="Galaxies per gallery.")] = 12,
) -> None:
    """One self-contained HTML page (images embedded): counts, histogram, confident and uncertain galaxies, and with labels the evaluation and the misclassified galaxies with Grad-CAM overlays."""
    written = galaxymorph.write_report(catalog, output, labels=labels, model=model, gallery_size=gallery_size)
    typer.echo(f"report written: {written} ({written.stat().st_size / 1e6:.1f} MB)")


@_command()
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
    index: Annotated[Optional[Path], typer.Option(help="Embeddings from `galaxymorph embed` with the served model: POST /v1/similar and, on the page, the most similar galaxies of each upload.")] = None,
) -> None:
    """Serve the model over HTTP: POST /v1/classify, POST /v1/explain, POST /v1/similar (with --index), GET /v1/models, the page at /, docs at /docs.

    With GALAXYMORPH_API_KEY set, POST endpoints need it in the X-API-Key header."""
    settings = galaxymorph.ServiceSettings(model=model, batch_window=batch_window, max_upload_bytes=int(max_upload_mb * 2**20),
                                           max_request_bytes=int(max_request_mb * 2**20), max_pixels=max_pixels,
                                           request_timeout=request_timeout, cors_origins=tuple(cors_origin or ()), tta=tta,
                                           index=str(index) if index else None)
    galaxymorph.serve(host, port, settings)


@_command("cutout-server")
def cutout_server(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0: any free port).")] = 8080,
    latency: Annotated[float, typer.Option(help="Seconds each answer waits, like a distant service.")] = 0.0,
    fault_rate: Annotated[float, typer.Option(help="Share of requests whose first attempt fails (timeouts, 500, 429, truncated images...).")] = 0.0,
    galaxy_field: Annotated[Optional[float], typer.Option(help="Arcseconds across a cutout that frames each galaxy whole, so that smaller fields cut galaxies off (default: every cutout framed to its galaxy).")] = None,
) -> None:
    """Run the local cutout server (SDSS and Legacy Survey protocols, generated galaxies) until Ctrl-C, for trying
    fetch and classify --fetch offline: set ASTRO_DB_HOST to the address it prints."""
    import signal
    import time

    server = galaxymorph.LocalCutoutServer(port=port, latency=latency, fault_rate=fault_rate, galaxy_field=galaxy_field)

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


@_command()
def export(
    model: Annotated[str, typer.Argument(help="Bundled model name or checkpoint path.")] = DEFAULT_MODEL,
    onnx: Annotated[Path, typer.Option("--onnx", help="ONNX file to write.")] = Path("galaxymorph.onnx"),
) -> None:
    """Export a model to ONNX (classes, preprocessing and temperature in its metadata), checked against torch.

    The graph takes model inputs, not files: make them as classify does, framing included, with
    galaxymorph.load_image(path, load_model(MODEL).preprocessing); divide the logits by the temperature."""
    path, difference = galaxymorph.export_onnx(galaxymorph.load_model(model), onnx)
    typer.echo(f"{path} written; ONNX Runtime matches torch to {difference:.1e} on 64 random images; "
               "its input is galaxymorph.load_image(path, preprocessing), as classify makes it")


@_command()
def demo(
    output_dir: Annotated[Path, typer.Option("--output-dir", "-o", help="Folder for the images, catalog and contact sheet.")] = Path("galaxymorph-demo"),
    count: Annotated[int, typer.Option(help="Number of example galaxies.")] = 12,
    model: ModelOption = DEFAULT_MODEL,
) -> None:
    """Run the whole path on synthetic example galaxies: no data of your own needed."""
    result = galaxymorph.run_demo(output_dir, count=count, model=model)
    typer.echo(f"classified {result.catalog.rows} example galaxies ({result.correct} as made)\n"
               f"catalog: {result.catalog.output}\ncontact sheet: {result.contact_sheet}")


@_command()
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
    teacher: Annotated[Optional[str], typer.Option(help="Learn this model's probabilities (bundled name or checkpoint) instead of the labels: knowledge distillation, with one head per member of an ensemble so that p_spiral_std stays.")] = None,
    distill_weight: Annotated[float, typer.Option(help="With --teacher: the share of the loss that is the teacher's; the rest is the labels' (unweighted).")] = 1.0,
) -> None:
    """Train a model on a labelled catalog; keeps the best epoch's checkpoint."""
    _run_training(labels=labels, output=output, architecture=arch, classes=classes, epochs=epochs,
                  batch_size=batch_size, learning_rate=learning_rate, seed=seed, split_seed=split_seed, max_rows=max_rows,
                  train_share=train_share, device=device, workers=workers, augment=augment, survey_augmentation=galaxymorph.SurveyAugmentation() if survey_augment else None,
                  tight_views=tight_views, tight_share=tight_share, extra_labels=extra_labels,
                  preprocessing=Preprocessing(image_size=image_size, framing=framing, frame_fill=frame_fill),
                  evidence_penalty=evidence_penalty, class_weight_power=class_weight_power,
                  label_smoothing=label_smoothing, weight_averaging=weight_averaging, init_from=from_model, teacher=teacher,
                  distill_weight=distill_weight)


def _run_training(**settings) -> None:
    weights = galaxymorph.train(galaxymorph.TrainConfig(**settings))
    typer.echo(f"checkpoint written: {weights} (+ {weights.with_suffix('.json').name})")


@_command()
def pretrain(
    inputs: Annotated[list[Path], typer.Argument(help="Unlabelled images: files, folders or catalogs (a file column).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Encoder checkpoint path (NAME.pt and NAME.json are written, again after each epoch).")] = Path("runs/encoder.pt"),
    arch: Annotated[str, typer.Option(help="Registered architecture (see `galaxymorph models list`).")] = "galaxynet",
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 40,
    batch_size: Annotated[int, typer.Option(help="Galaxies per batch; each is contrasted with the batch's other 2N - 2 views.")] = 256,
    learning_rate: Annotated[float, typer.Option("--lr", help="Peak learning rate (AdamW).")] = 2e-3,
    temperature: Annotated[float, typer.Option(help="Temperature of the contrastive loss.")] = 0.2,
    seed: Annotated[int, typer.Option(help="Seed of the initialisation and augmentation.")] = SPLIT_SEED,
    device: DeviceOption = None,
    workers: WorkersOption = None,
) -> None:
    """Learn an encoder from unlabelled images (SimCLR): for `train --from` and `embed`, not `classify`."""
    weights = galaxymorph.pretrain(galaxymorph.PretrainConfig(
        inputs=inputs, output=output, architecture=arch, epochs=epochs, batch_size=batch_size,
        learning_rate=learning_rate, temperature=temperature, seed=seed, device=device, workers=workers))
    typer.echo(f"encoder written: {weights} (+ {weights.with_suffix('.json').name})")


@_command()
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


@_command()
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
    options = galaxymorph.PredictOptions(batch_size=batch_size, workers=workers, backend=backend, tta=tta)
    metrics = galaxymorph.evaluate(labels, output_dir, model=model, split=split, options=options)
    if "spiral_vs_elliptical" in metrics:
        binary = metrics["spiral_vs_elliptical"]
        low, high = binary["accuracy_95"]
        typer.echo(f"{metrics['model']} on {split} ({binary['n']} spiral/elliptical galaxies): accuracy {binary['accuracy']:.4f} "
                   f"(95% interval {low:.3f}-{high:.3f}), ROC AUC {binary['roc_auc']:.4f}, ECE {binary['ece']:.4f}")
    if "classes" in metrics:
        typer.echo(f"{metrics['model']} on {split}, {len(metrics['classes']['labels'])} classes: "
                   f"accuracy {metrics['classes']['accuracy']:.4f}")
    typer.echo(f"written to {output_dir}")


@_command()
def calibrate(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint to calibrate (its .json metadata is updated).")],
    labels: Annotated[Path, typer.Argument(help="The labelled catalog the checkpoint was trained on.")],
    split: Annotated[str, typer.Option(help="Split to fit the temperature and set the ood_score limit on (never the test split).")] = "val",
    workers: WorkersOption = None,
) -> None:
    """Fit a temperature on the validation split so that p_spiral is honest, and the feature density behind
    ood_score on the training split (its limit on the validation split); both are stored in the checkpoint."""
    if split == "test":
        raise ValueError("the test split is kept for final figures; calibrate on 'val'")
    result = galaxymorph.calibrate(checkpoint, labels, split=split, options=galaxymorph.PredictOptions(workers=workers))
    typer.echo(f"temperature {result['temperature']:.3f} on {result['galaxies']} {split} galaxies: "
               f"ECE {result['ece_before']:.4f} -> {result['ece_after']:.4f}, "
               f"NLL {result['nll_before']:.4f} -> {result['nll_after']:.4f}")
    typicality = result["typicality"]
    typer.echo(f"feature density fitted on {typicality['images']} training galaxies: ood_score limit {typicality['limit']:.3f} "
               f"({typicality['typical_share']:.0%} of the {split} galaxies within it)")


@_command()
def quantize(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint to quantise (NAME.int8.onnx is written beside it).")],
    labels: Annotated[Path, typer.Argument(help="The labelled catalog the checkpoint was trained on.")],
    images: Annotated[int, typer.Option(help="Training-split images whose activations set the int8 ranges.")] = CALIBRATION_IMAGES,
    workers: WorkersOption = None,
) -> None:
    """Make an int8 ONNX graph of a checkpoint for fast CPU inference, checked on the validation split."""
    result = galaxymorph.quantize_checkpoint(checkpoint, labels, images=images, workers=workers)
    typer.echo(f"{Path(result['graph']).name} written from {result['calibration_images']} training images; on {result['galaxies']} "
               f"validation galaxies its probabilities differ from float32 by {result['mean_abs_difference']:.4f} on average "
               f"({result['max_abs_difference']:.4f} at most), same class for {result['same_class']:.1%}")


@_command()
def ensemble(
    members: Annotated[list[Path], typer.Argument(help="Checkpoints trained on the same split with different --seed.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Checkpoint path of the ensemble.")] = Path("runs/ensemble.pt"),
) -> None:
    """Combine checkpoints into one model that averages their logits; calibrate it next."""
    weights = galaxymorph.combine_checkpoints(members, output)
    typer.echo(f"ensemble of {len(members)} written: {weights} (+ {weights.with_suffix('.json').name}); "
               f"next: galaxymorph calibrate {weights} LABELS")


@_command("list", group=models_app)
def models_list() -> None:
    """Bundled pretrained models and registered architectures."""
    for name in galaxymorph.bundled_models():
        loaded = galaxymorph.load_model(name)
        calibration = loaded.metadata.get("calibration", {})
        architecture = loaded.metadata["architecture"] + (f" x{loaded.metadata['members']}" if "members" in loaded.metadata else "") \
            + (f" ({loaded.metadata['heads']} heads)" if "heads" in loaded.metadata else "")
        typer.echo(f"pretrained  {name:20s} {architecture:19s} classes: {', '.join(loaded.classes)}"
                   + (f"; p_spiral's validation log loss {calibration['nll_after']:.4f}" if "nll_after" in calibration else "")
                   + ("; int8 graph for CPUs" if loaded.int8_graph else "") + ("; the default" if name == DEFAULT_MODEL else ""))
    for name in galaxymorph.list_architectures():
        typer.echo(f"architecture {name}")


@_command("show", group=models_app)
def models_show(
    name: Annotated[str, typer.Argument(help="Architecture, bundled model or checkpoint path.")],
    seed: Annotated[int, typer.Option(help="Seed of the generated example galaxy.")] = 0,
) -> None:
    """Layer-by-layer summary and the prediction for a generated example spiral (as the demo makes them)."""
    model = galaxymorph.describe_model(name, seed=seed)
    size = model.image_size
    typer.echo(f"{name} ({model.origin}, {model.kind}), input (3, {size}, {size}), classes: {', '.join(model.classes)}")
    typer.echo(f"{'layer':28s} {'type':14s} {'output shape':18s} {'parameters':>10s}")
    for row in model.layers:
        typer.echo(f"{row.name:28s} {row.kind:14s} {str(row.output_shape):18s} {row.parameters:>10,d}")
    typer.echo(f"total parameters: {model.parameters:,d}")
    shown = ", ".join(f"{c} {p:.4f}" for c, p in model.example_probabilities.items())
    typer.echo(f"prediction for a generated spiral galaxy (seed {seed}): {shown}")
