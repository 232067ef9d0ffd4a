"""Throughput of `classify` on a folder of JPEGs beside decoding alone, and peak memory by job size.

Usage: python benchmarks/classify_throughput.py [--images 5000] [--workers N] [--threads N]

Images are the gz1-sdss cutouts (423 px JPEGs) when ../shared/data/gz1-sdss is present, linked
into a temporary folder as many times as needed; otherwise generated 423 px synthetic galaxies.
Decode-alone runs the same decoder, resize and process count as classify, and throws the pixels away.
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

GZ1_IMAGES = Path(__file__).resolve().parents[2] / "shared" / "data" / "gz1-sdss" / "images"


def make_folder(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if GZ1_IMAGES.is_dir():
        sources = sorted(GZ1_IMAGES.glob("*.jpeg"))
        for i in range(count):
            (folder / f"{i:07d}.jpeg").symlink_to(sources[i % len(sources)])
    else:
        from galaxymorph.sources.synthetic import write_examples

        write_examples(folder, min(count, 2000), size=423)
        made = sorted(folder.glob("*.jpeg"))
        for i in range(len(made), count):
            (folder / f"copy-{i:07d}.jpeg").symlink_to(made[i % len(made)])
    return folder


def run_job(job: str, folder: Path, workers: int, threads: int | None, tta: bool = False) -> dict:
    """Run one measurement in a fresh process, so that its peak memory is its own."""
    code = f"""
import json, resource, time
from dataclasses import replace
from pathlib import Path
from galaxymorph.prediction import PredictOptions, classify
from galaxymorph.preprocess.parallel import decode_in_batches
from galaxymorph.models import load_model
from galaxymorph.sources import iter_inputs
folder, workers, threads = Path({str(folder)!r}), {workers}, {threads!r}
loaded = load_model("galaxynet")
preprocessing = loaded.preprocessing
if {job!r} == "decode_fixed_crop":
    preprocessing = replace(preprocessing, framing=False)
started = time.perf_counter()
if {job!r}.startswith("decode"):
    count = 0
    for batch in decode_in_batches(iter_inputs([folder]), preprocessing,
                                   file_of=lambda row: row.file, batch_size=128, workers=workers):
        count += len(batch.items)
else:
    count = classify([folder], folder.parent / "out.parquet", model=loaded,
                     options=PredictOptions(workers=workers, threads=threads, tta={tta!r})).rows
seconds = time.perf_counter() - started
print(json.dumps({{"images": count, "seconds": seconds,
                  "peak_main_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "peak_worker_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}}))
"""
    output = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    result = json.loads(output.strip().splitlines()[-1])
    result["images_per_s"] = result["images"] / result["seconds"]
    return result


def loaded_framing() -> bool:
    from galaxymorph.models import load_model

    return load_model("galaxynet").preprocessing.framing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000, help="images in the throughput run")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="decoding processes")
    parser.add_argument("--threads", type=int, default=None, help="inference threads (default: the back-end's)")
    parser.add_argument("--tta", action="store_true", help="also time classify with test-time augmentation")
    parser.add_argument("--memory-sizes", type=int, nargs=2, default=[1000, 20000], help="job sizes for peak memory")
    args = parser.parse_args()

    print(f"# classify throughput, {time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, images from {'gz1-sdss' if GZ1_IMAGES.is_dir() else 'synthetic'}")
    with tempfile.TemporaryDirectory() as scratch:
        folder = make_folder(Path(scratch) / "throughput", args.images)
        decode = run_job("decode", folder, args.workers, args.threads)
        classify = run_job("classify", folder, args.workers, args.threads)
        ratio = classify["images_per_s"] / decode["images_per_s"]
        print(f"{args.images} images, {args.workers} decoding processes, inference threads {args.threads or 'default'}")
        print(f"decode alone : {decode['images_per_s']:8.0f} images/s")
        print(f"classify     : {classify['images_per_s']:8.0f} images/s  ({ratio:.2f} of decode alone; goal >= 0.60)")
        if loaded_framing():
            fixed = run_job("decode_fixed_crop", folder, args.workers, args.threads)
            print(f"decode alone without framing (fixed central crop): {fixed['images_per_s']:8.0f} images/s")
        if args.tta:
            augmented = run_job("classify", folder, args.workers, args.threads, tta=True)
            print(f"classify+TTA : {augmented['images_per_s']:8.0f} images/s  "
                  f"({augmented['images_per_s'] / decode['images_per_s']:.2f} of decode alone)")
        peaks = {}
        for size in args.memory_sizes:
            result = run_job("classify", make_folder(Path(scratch) / f"memory-{size}", size), args.workers, args.threads)
            peaks[size] = result
            print(f"peak memory, {size:6d} images: main {result['peak_main_mb']:.0f} MB, "
                  f"largest worker {result['peak_worker_mb']:.0f} MB ({result['images_per_s']:.0f} images/s)")
        small, large = (peaks[s] for s in args.memory_sizes)
        growth = (large["peak_main_mb"] - small["peak_main_mb"]) + (large["peak_worker_mb"] - small["peak_worker_mb"])
        print(f"peak memory growth from {args.memory_sizes[0]} to {args.memory_sizes[1]} images: {growth:.0f} MB (goal < 100 MB)")


if __name__ == "__main__":
    main()
