"""The GPU node's figures, phase by phase, each written as JSON as soon as it is measured.

Usage: bash benchmarks/gpu_check.sh [OUT_FOLDER]   (the node's own CUDA torch; installs nothing)
       python benchmarks/gpu_check.py --out FOLDER [--images 60000] [--agreement 2000] [--sources FOLDER]

Phases: versions; decoding with one process per core, JPEG decoding alone (the workers of the
CUDA back-end) and with framing and resampling on the CPU kernels; framing and resampling alone on
the GPU (`preprocess.batched`, batches of decoded pixels already there); classify end to end with
the CUDA back-end on `--images` images (gz1-sdss JPEGs linked as many times as needed, or generated
423 px galaxies); agreement on `--agreement` images: the GPU's model inputs and galaxy flags against
the CPU kernels' (`framing_speed.batched_identity`), and p_spiral, labels and flags of classify with
the CUDA back-end and GPU framing against the same back-end with the workers' framing, and against
the CPU's (ONNX Runtime).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from framing_speed import batched_identity

from galaxymorph import PredictOptions, classify, load_model
from galaxymorph.preprocess.batched import frame_batch
from galaxymorph.preprocess.decode import read_jpeg_pixels
from galaxymorph.preprocess.parallel import decode_in_batches
from galaxymorph.sources import iter_inputs
from galaxymorph.sources.synthetic import write_examples

GZ1_IMAGES = Path(__file__).resolve().parents[2] / "shared" / "data" / "gz1-sdss" / "images"


def write(out: Path, phase: str, figures: dict) -> None:
    (out / f"{phase}.json").write_text(json.dumps(figures, indent=1))
    print(phase, json.dumps(figures))


def linked(folder: Path, sources: list[Path], count: int) -> Path:
    for i in range(count):
        target = folder / f"{i // 10_000:04d}" / f"{i:07d}{sources[i % len(sources)].suffix}"
        target.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(sources[i % len(sources)].resolve(), target)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--images", type=int, default=60_000)
    parser.add_argument("--agreement", type=int, default=2_000)
    parser.add_argument("--sources", type=Path, default=GZ1_IMAGES)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    import torch

    cuda = torch.cuda.is_available()
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    write(args.out, "1-versions", {"python": platform.python_version(), "torch": torch.__version__,
                                   "cuda": torch.version.cuda, "gpu": torch.cuda.get_device_name(0) if cuda else None,
                                   "cores": os.cpu_count(), "commit": commit, "date": time.strftime("%Y-%m-%d %H:%M"),
                                   "dev_shm_free_gb": shutil.disk_usage("/dev/shm").free / 2**30 if os.path.isdir("/dev/shm") else None})
    loaded = load_model("galaxynet_ensemble")
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        sources = sorted(args.sources.glob("*.jpeg")) if args.sources.is_dir() else \
            [path for path, _ in write_examples(scratch / "generated", 500, seed=0, size=423)]
        folder = linked(scratch / "images", sources, args.images)
        decoding = {}
        for name, raw in (("jpeg_decode_only", True), ("with_cpu_framing", False)):
            started, count = time.perf_counter(), 0
            for batch in decode_in_batches(iter_inputs([folder]), loaded.preprocessing, file_of=lambda row: row.file,
                                           batch_size=512, workers=os.cpu_count(), raw=raw):
                count += len(batch.items)
            decoding[name] = count / (time.perf_counter() - started)
        write(args.out, "2-decode", {"images": count, "processes": os.cpu_count(), "images_per_s": decoding})
        if not cuda:
            write(args.out, "3-gpu-framing", {"skipped": "torch sees no CUDA GPU"})
            return
        few = sorted(folder.rglob("*.jpeg"))[:args.agreement]
        pixels = [image for image in (read_jpeg_pixels(path, loaded.preprocessing) for path in few[:512]) if image is not None]
        on_gpu = torch.from_numpy(np.stack([image for image in pixels if image.shape == pixels[0].shape])).cuda()
        write(args.out, "3-gpu-framing", framing_speed(on_gpu, loaded.preprocessing))
        started = time.perf_counter()
        summary = classify([folder], scratch / "out", model=loaded,
                           options=PredictOptions(backend="cuda", batch_size=512, workers=os.cpu_count()))
        write(args.out, "4-end-to-end", {"images": summary.rows, "failed": summary.failed, "backend": "cuda",
                                         "framing": "batched on the GPU",
                                         "images_per_s": summary.rows / (time.perf_counter() - started),
                                         "goal_images_per_s": 15_000})
        inputs = batched_identity(few, loaded.preprocessing, device="cuda", batch_size=512)
        rows = {}
        for name, backend, batched in (("gpu_framing", "cuda", True), ("cpu_framing", "cuda", False), ("onnx", "onnx", False)):
            output = scratch / f"agreement-{name}.parquet"
            classify(few, output, model=loaded,
                     options=PredictOptions(backend=backend, workers=os.cpu_count(), batched_framing=batched))
            rows[name] = pq.read_table(output, columns=["p_spiral", "label", "galaxy_found", "galaxy_truncated"]).to_pydict()
        figures = {"images": len(few), "gpu_framing_inputs": {key: inputs[key] for key in ("images", "worst", "flags")},
                   "goals": {"input": 1e-3, "p_spiral": 0.01, "same_label": 0.999}}
        for other in ("cpu_framing", "onnx"):  # the CUDA back-end with GPU framing against the same with CPU framing, and the CPU's
            figures[f"against_{other}"] = {
                "max_p_spiral_difference": float(np.nanmax(np.abs(np.array(rows["gpu_framing"]["p_spiral"]) - np.array(rows[other]["p_spiral"])))),
                "same_label_share": float(np.mean(np.array(rows["gpu_framing"]["label"]) == np.array(rows[other]["label"]))),
                "same_flags_share": float(np.mean([(a, b) == (c, d) for a, b, c, d in zip(
                    rows["gpu_framing"]["galaxy_found"], rows["gpu_framing"]["galaxy_truncated"],
                    rows[other]["galaxy_found"], rows[other]["galaxy_truncated"])]))}
        write(args.out, "5-agreement", figures)


def framing_speed(pixels, preprocessing, batch_size: int = 512, repeats: int = 5) -> dict:
    """Images a second that `frame_batch` frames and resamples on the GPU, batches already there."""
    import torch

    batch = pixels[torch.arange(batch_size, device=pixels.device) % len(pixels)]
    frame_batch(batch, preprocessing)  # warm-up
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(repeats):
        frame_batch(batch, preprocessing)
    torch.cuda.synchronize()
    return {"batch_size": batch_size, "images_per_s": batch_size * repeats / (time.perf_counter() - started),
            "peak_gpu_memory_mb": torch.cuda.max_memory_allocated() / 2**20}


if __name__ == "__main__":
    main()
