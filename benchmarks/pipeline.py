"""The survey pipeline against its floor: decoding alone, classify end to end, the model alone, and
peak memory by job size.

Usage: python benchmarks/pipeline.py [--images 5000] [--model NAME] [--backend auto|onnx|onnx-int8|cuda|torch] [--batch-size 128]
                                     [--workers N] [--repeats 3] [--tta] [--memory-sizes 10000 200000] [--sources FOLDER]

Throughput runs on 423 px SDSS JPEGs, the gz1-sdss files or the `--sources` folder's, linked into a
temporary folder as many times as needed (generated 423 px galaxies when that folder is absent); decode
alone and classify read the same files with the same decoder, framing and process count, and
classify writes a Parquet dataset folder as a survey run would; the two run in turn `--repeats`
times and their medians are compared, since the load of a shared machine drifts from run to run
(on the 2-core machine, single pairs of the same code gave ratios from 0.61 to 0.92). The memory runs classify 1,000
generated 423 px JPEGs linked as many times as the job size asks (10,000 files to a folder).
Every measurement runs in a fresh process, so that its peak memory is its own. "Decode only" is what
the workers of the CUDA back-end do: JPEG pixels into shared memory, framing left to the GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from galaxymorph.config import DEFAULT_MODEL

GZ1_IMAGES = Path(__file__).resolve().parents[2] / "shared" / "data" / "gz1-sdss" / "images"
GENERATED = 1000
FILES_PER_FOLDER = 10_000


def link_folder(folder: Path, sources: list[Path], count: int) -> Path:
    """`count` links to `sources`, in subfolders of `FILES_PER_FOLDER`."""
    for i in range(count):
        subfolder = folder / f"{i // FILES_PER_FOLDER:04d}"
        if i % FILES_PER_FOLDER == 0:
            subfolder.mkdir(parents=True)
        (subfolder / f"{i:07d}.jpeg").symlink_to(sources[i % len(sources)])
    return folder


def generated_jpegs(folder: Path) -> list[Path]:
    from galaxymorph.sources.synthetic import write_examples

    return [path for path, _ in write_examples(folder, GENERATED, size=423)]


def run_job(job: str, folder: Path, args: argparse.Namespace, *, tta: bool = False) -> dict:
    """Run one measurement in a fresh process and return what it printed."""
    code = f"""
import json, resource, time
from dataclasses import replace
from pathlib import Path
import numpy as np
from galaxymorph.models import load_model
from galaxymorph.prediction import Classifier, PredictOptions, classify
from galaxymorph.preprocess.parallel import decode_in_batches
from galaxymorph.sources import iter_inputs
job, folder, workers, batch_size = {job!r}, Path({str(folder)!r}), {args.workers}, {args.batch_size}
loaded = load_model({args.model!r})
preprocessing = replace(loaded.preprocessing, framing=False) if job == "decode_fixed_crop" else loaded.preprocessing
started, failed = time.perf_counter(), 0
if job == "decode_plain":  # the floor: the same decoder at the same scale, a central crop resized to the input side
    from concurrent.futures import ProcessPoolExecutor
    from PIL import Image
    from galaxymorph.preprocess import decode
    def plain_decode(path):
        pixels = decode._decode_jpeg_reduced(path, preprocessing, None, 10**9)
        side = int(min(pixels.shape[:2]) * preprocessing.crop_fraction)
        top, left = (pixels.shape[0] - side) // 2, (pixels.shape[1] - side) // 2
        crop = Image.fromarray(pixels[top:top + side, left:left + side])
        return np.asarray(crop.resize((preprocessing.image_size,) * 2, Image.Resampling.BILINEAR)).shape
    files = [row.file for row in iter_inputs([folder])]
    with ProcessPoolExecutor(workers) as pool:
        count = sum(1 for _ in pool.map(plain_decode, files, chunksize=batch_size))
elif job.startswith("decode"):
    count = 0
    for batch in decode_in_batches(iter_inputs([folder]), preprocessing, file_of=lambda row: row.file,
                                   batch_size=batch_size, workers=workers, raw=job == "decode_raw"):
        count += len(batch.items)
        failed += sum(1 for error in batch.errors if error)
elif job == "model":
    classifier = Classifier(loaded, backend={args.backend!r})
    images = np.random.default_rng(0).random((batch_size, 3, 64, 64), dtype=np.float32)
    for _ in range(3):
        classifier.probabilities(images)
    started, count = time.perf_counter(), 0
    while time.perf_counter() - started < 5:
        classifier.probabilities(images)
        count += batch_size
elif job == "rows":  # the main process's own work per row: output rows and Parquet chunks
    from galaxymorph.catalog import CatalogRow
    from galaxymorph.outputs.catalog_writer import DatasetWriter
    from galaxymorph.preprocess.parallel import DecodedBatch
    classifier = Classifier(loaded, backend="torch")
    items = [CatalogRow(f"g{{i}}", folder / f"{{i:07d}}.jpeg") for i in range(batch_size)]
    from galaxymorph.prediction import Scores
    decoded = DecodedBatch(items, np.zeros((batch_size, 3, 64, 64), np.float32), [""] * batch_size, [True] * batch_size,
                           [False] * batch_size)
    scores = Scores(np.random.default_rng(0).dirichlet(np.ones(len(loaded.classes)), batch_size),
                    np.full(batch_size, np.nan), np.ones(batch_size))
    started, count = time.perf_counter(), 0
    with DatasetWriter(folder.parent / f"rows-{{time.time_ns()}}") as writer:
        while count < 100_000:
            writer.write(classifier.build_rows(decoded, scores))
            count += batch_size
else:
    options = PredictOptions(workers=workers, batch_size=batch_size, backend={args.backend!r}, tta={tta!r})
    output = folder.parent / f"out-{{time.time_ns()}}"
    summary = classify([folder], output, model=loaded, options=options)
    count, failed = summary.rows, summary.failed
seconds = time.perf_counter() - started
print(json.dumps({{"images": count, "failed": failed, "seconds": seconds,
                  "output_bytes": sum(f.stat().st_size for f in output.iterdir()) if job == "classify" else 0,
                  "backend": Classifier(loaded, backend={args.backend!r}).backend if job == "classify" else "",
                  "peak_main_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "peak_worker_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}}))
"""
    output = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    result = json.loads(output.strip().splitlines()[-1])
    if result["failed"]:
        raise SystemExit(f"{job}: {result['failed']} of {result['images']} images in {folder} failed to decode; "
                         "a rate over failed images would mean nothing")
    result["images_per_s"] = result["images"] / result["seconds"]
    return result


def median_run(runs: list[dict]) -> dict:
    """The run with the median rate (the shared machine's load drifts between runs)."""
    return sorted(runs, key=lambda run: run["images_per_s"])[len(runs) // 2]


def machine() -> str:
    import torch

    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    return f"{platform.machine()}, {os.cpu_count()} cores{gpu}, Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000, help="images in the throughput runs")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="bundled model name or checkpoint")
    parser.add_argument("--backend", default="auto", help="inference back-end: auto, onnx, onnx-int8, cuda or torch")
    parser.add_argument("--batch-size", type=int, default=128, help="images per batch")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="decoding processes")
    parser.add_argument("--repeats", type=int, default=3, help="decode/classify pairs to take the medians of")
    parser.add_argument("--tta", action="store_true", help="also time classify with test-time augmentation")
    parser.add_argument("--memory-sizes", type=int, nargs=2, default=[10_000, 200_000], help="job sizes for peak memory")
    parser.add_argument("--sources", type=Path, default=GZ1_IMAGES, help="folder of 423 px JPEGs for the throughput runs")
    args = parser.parse_args()

    print(f"# pipeline, {time.strftime('%Y-%m-%d %H:%M')}, {machine()}")
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        generated = generated_jpegs(scratch / "generated")
        sources = sorted(args.sources.resolve().glob("*.jpeg")) if args.sources.is_dir() else generated
        if not sources:
            raise SystemExit(f"no .jpeg files in {args.sources}")
        folder = link_folder(scratch / "throughput", sources, args.images)
        runs = [(run_job("decode", folder, args), run_job("classify", folder, args), run_job("decode_plain", folder, args))
                for _ in range(args.repeats)]
        decode = median_run([d for d, _, _ in runs])
        classify = median_run([c for _, c, _ in runs])
        plain = median_run([p for _, _, p in runs])
        model = run_job("model", folder, args)
        ratio = classify["images_per_s"] / decode["images_per_s"]
        pair_ratios = [c["images_per_s"] / d["images_per_s"] for d, c, _ in runs]
        floor_ratios = [c["images_per_s"] / p["images_per_s"] for _, c, p in runs]
        print(f"{args.images} 423 px JPEGs ({f'{len(sources)} files of {args.sources}' if sources is not generated else 'generated'}), "
              f"{args.workers} decoding processes, batches of {args.batch_size}, model {args.model}, back-end {classify['backend']}; "
              f"decode, classify and the plain decode floor alternated {args.repeats} times, medians")
        print(f"decode alone : {decode['images_per_s']:8.0f} images/s")
        print(f"classify     : {classify['images_per_s']:8.0f} images/s  ({ratio:.2f} of decode alone; goal >= 0.80; "
              f"each pair's ratio: {', '.join(f'{r:.2f}' for r in pair_ratios)})")
        print(f"model alone  : {model['images_per_s']:8.0f} images/s  (inference on decoded batches, one process)")
        rows = run_job("rows", folder, args)
        print(f"output       : {classify['output_bytes'] / classify['images']:8.0f} bytes a row (Parquet chunks); "
              f"the main process builds and writes rows at {rows['images_per_s']:.0f} rows/s")
        fixed = run_job("decode_fixed_crop", folder, args)
        print(f"decode alone without framing (fixed central crop, float resampling): {fixed['images_per_s']:8.0f} images/s")
        raw = run_job("decode_raw", folder, args)
        print(f"decode only (JPEG pixels into shared memory, as the CUDA back-end's workers): {raw['images_per_s']:8.0f} images/s")
        print(f"plain decode floor (same decoder and scale, central crop, PIL resize to the input side, same processes): "
              f"{plain['images_per_s']:8.0f} images/s; classify runs at {classify['images_per_s'] / plain['images_per_s']:.2f} "
              f"of it (goal >= 0.5; each run's ratio: {', '.join(f'{r:.2f}' for r in floor_ratios)})")
        if args.tta:
            augmented = run_job("classify", folder, args, tta=True)
            print(f"classify+TTA : {augmented['images_per_s']:8.0f} images/s  "
                  f"({augmented['images_per_s'] / decode['images_per_s']:.2f} of decode alone)")
        peaks = []
        for size in args.memory_sizes:
            result = run_job("classify", link_folder(scratch / f"memory-{size}", generated, size), args)
            peaks.append(result)
            print(f"peak memory, {size:7d} generated JPEGs: main {result['peak_main_mb']:.0f} MB, "
                  f"largest worker {result['peak_worker_mb']:.0f} MB ({result['images_per_s']:.0f} images/s)")
        small, large = peaks
        growth = (large["peak_main_mb"] - small["peak_main_mb"]) + (large["peak_worker_mb"] - small["peak_worker_mb"])
        print(f"peak memory growth from {args.memory_sizes[0]} to {args.memory_sizes[1]} images: {growth:.0f} MB (goal < 100 MB)")


if __name__ == "__main__":
    main()
