"""The GPU node's figures, phase by phase, each written as JSON as soon as it is measured.

Usage: bash benchmarks/gpu_check.sh [OUT_FOLDER]   (the node's own CUDA torch; installs nothing)
       python benchmarks/gpu_check.py --out FOLDER [--images 60000] [--agreement 2000] [--sources FOLDER]

Phases: versions; decoding alone with one process per core (framing and resampling on the CPU
kernels); classify end to end with the CUDA back-end on `--images` images (gz1-sdss JPEGs linked as
many times as needed, or generated 423 px galaxies); agreement of the CUDA back-end's p_spiral with
the CPU's (ONNX Runtime) on `--agreement` images. Framing on the GPU (issue 24 item 3) is not built:
the model inputs are the CPU's on both sides, so their largest difference is 0 by construction.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from galaxymorph import PredictOptions, classify, load_model
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
                                   "cores": os.cpu_count(), "commit": commit, "date": time.strftime("%Y-%m-%d %H:%M")})
    loaded = load_model("galaxynet_ensemble")
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        sources = sorted(args.sources.glob("*.jpeg")) if args.sources.is_dir() else \
            [path for path, _ in write_examples(scratch / "generated", 500, seed=0, size=423)]
        folder = linked(scratch / "images", sources, args.images)
        started, count = time.perf_counter(), 0
        for batch in decode_in_batches(iter_inputs([folder]), loaded.preprocessing, file_of=lambda row: row.file,
                                       batch_size=512, workers=os.cpu_count()):
            count += len(batch.items)
        write(args.out, "2-decode-alone", {"images": count, "processes": os.cpu_count(),
                                           "images_per_s": count / (time.perf_counter() - started)})
        if not cuda:
            write(args.out, "3-end-to-end", {"skipped": "torch sees no CUDA GPU"})
            return
        started = time.perf_counter()
        summary = classify([folder], scratch / "out", model=loaded,
                           options=PredictOptions(backend="cuda", batch_size=512, workers=os.cpu_count()))
        write(args.out, "3-end-to-end", {"images": summary.rows, "failed": summary.failed, "backend": "cuda",
                                         "images_per_s": summary.rows / (time.perf_counter() - started),
                                         "goal_images_per_s": 15_000})
        few = sorted(folder.rglob("*.jpeg"))[:args.agreement]
        rows = {}
        for backend in ("cuda", "onnx"):
            output = scratch / f"agreement-{backend}.parquet"
            classify(few, output, model=loaded, options=PredictOptions(backend=backend, workers=os.cpu_count()))
            import pyarrow.parquet as pq

            rows[backend] = pq.read_table(output, columns=["p_spiral", "label"]).to_pydict()
        difference = np.abs(np.array(rows["cuda"]["p_spiral"]) - np.array(rows["onnx"]["p_spiral"]))
        same = float(np.mean(np.array(rows["cuda"]["label"]) == np.array(rows["onnx"]["label"])))
        write(args.out, "4-agreement", {"images": len(few), "max_input_difference": 0.0,
                                        "input_note": "framing runs on the CPU for both back-ends",
                                        "max_p_spiral_difference": float(np.nanmax(difference)),
                                        "same_label_share": same, "goals": {"p_spiral": 0.01, "same_label": 0.999}})


if __name__ == "__main__":
    main()
