"""CPU time per image of decoding, framing and resampling: the numpy/PIL reference against the
compiled path (simplejpeg + numba), one process, and whether their model inputs are the same.

Usage: python benchmarks/framing_speed.py [--images 300] [--repeats 5] [--identity 5665] [--batched 5665]

Times are CPU seconds of this process (`time.process_time`) over the first `--images` gz1-sdss
JPEGs, each stage timed over all images in turn, the two paths alternated `--repeats` times and the
medians kept. The reference is the code before the compiled path: PIL's reduced-scale JPEG decode,
PIL's grey conversion and reduction, numpy/scipy framing and numpy resampling. The identity check
reads `--identity` images both ways (0: none). `--batched N` compares the batched torch framing
(`preprocess.batched`, the GPU's path) run on this CPU with the compiled path on N images (0: none).
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
from PIL import Image

from galaxymorph.config import Preprocessing
from galaxymorph.preprocess import compiled, decode
from galaxymorph.preprocess.decode import read_model_input
from galaxymorph.preprocess.framing import reference_kernels

GZ1_IMAGES = Path(__file__).resolve().parents[2] / "shared" / "data" / "gz1-sdss" / "images"


def pil_decode(path: Path, preprocessing: Preprocessing) -> Image.Image:
    image = Image.open(path)
    image.draft("RGB", (decode.decoded_side(preprocessing),) * 2)
    return image.convert("RGB")


def reference(files: list[Path], preprocessing: Preprocessing) -> dict[str, float]:
    started = time.process_time()
    images = [pil_decode(path, preprocessing) for path in files]
    decoded = time.process_time()
    with reference_kernels():
        for image in images:
            decode._reference_frame_rgb(image, preprocessing)
    return {"decode": decoded - started, "framing": time.process_time() - decoded}


def compiled_path(files: list[Path], preprocessing: Preprocessing) -> dict[str, float]:
    started = time.process_time()
    arrays = [decode._decode_jpeg_reduced(path, preprocessing, None, 10**9) for path in files]
    decoded = time.process_time()
    for pixels in arrays:
        decode._frame_rgb(pixels, preprocessing)
    return {"decode": decoded - started, "framing": time.process_time() - decoded}


def identity(files: list[Path], preprocessing: Preprocessing) -> tuple[float, int, int]:
    """Largest input difference, bit-identical inputs and differing framing flags over `files`."""
    worst, identical, flags = 0.0, 0, 0
    for path in files:
        fast = read_model_input(path, preprocessing)
        with reference_kernels():
            slow = decode._reference_frame_rgb(pil_decode(path, preprocessing), preprocessing)
        difference = float(np.abs(fast.pixels - slow.pixels).max())
        worst, identical = max(worst, difference), identical + (difference == 0)
        flags += (fast.galaxy_found, fast.galaxy_truncated) != (slow.galaxy_found, slow.galaxy_truncated)
    return worst, identical, flags


def batched_identity(files: list[Path], preprocessing: Preprocessing, *, device: str = "cpu", batch_size: int = 256) -> dict:
    """`frame_batch` on `device` against `read_model_input` (the CPU kernels), images grouped by
    decoded size (JPEGs that only PIL reads are left out); CPU seconds of this process per image."""
    import torch

    from galaxymorph.preprocess.batched import frame_batch

    sizes: dict[tuple, list] = {}
    for path in files:
        pixels = decode.read_jpeg_pixels(path, preprocessing)
        if pixels is not None:
            sizes.setdefault(pixels.shape, []).append((path, pixels))
    worst, flags, seconds = 0.0, 0, 0.0
    for members in sizes.values():
        for start in range(0, len(members), batch_size):
            chunk = members[start:start + batch_size]
            started = time.process_time()
            framed = frame_batch(torch.from_numpy(np.stack([pixels for _, pixels in chunk])).to(device), preprocessing)
            inputs, found, truncated = framed.inputs.cpu().numpy(), framed.galaxy_found.tolist(), framed.galaxy_truncated.tolist()
            seconds += time.process_time() - started
            for i, (path, _) in enumerate(chunk):
                expected = read_model_input(path, preprocessing)
                worst = max(worst, float(np.abs(inputs[i] - expected.pixels).max()))
                flags += (found[i], truncated[i]) != (expected.galaxy_found, expected.galaxy_truncated)
    return {"images": sum(len(m) for m in sizes.values()), "sizes": {f"{h}x{w}": len(m) for (h, w, _), m in sizes.items()},
            "worst": worst, "flags": flags, "ms": seconds / len(files) * 1e3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300, help="images timed")
    parser.add_argument("--repeats", type=int, default=5, help="alternated runs of each path")
    parser.add_argument("--identity", type=int, default=5665, help="images compared both ways (0: none)")
    parser.add_argument("--sources", type=Path, default=GZ1_IMAGES, help="folder of JPEG cutouts")
    parser.add_argument("--batched", type=int, default=0, help="images on which to compare the batched torch framing (0: none)")
    args = parser.parse_args()
    all_files = sorted(path for path in args.sources.iterdir() if path.suffix.lower() in (".jpg", ".jpeg"))
    files = all_files[:args.images]
    preprocessing = Preprocessing()
    started = time.perf_counter()
    compiled.warm_up()
    print(f"# framing speed, {time.strftime('%Y-%m-%d %H:%M')}, {platform.machine()}, Python {platform.python_version()}")
    print(f"kernels ready in {time.perf_counter() - started:.1f} s (compiled, or loaded from numba's cache)")
    runs = {"reference": [], "compiled": []}
    for _ in range(args.repeats):
        runs["reference"].append(reference(files, preprocessing))
        runs["compiled"].append(compiled_path(files, preprocessing))
    medians = {}
    for name, results in runs.items():
        medians[name] = {stage: float(np.median([r[stage] for r in results])) / len(files) * 1e3
                         for stage in ("decode", "framing")}
        total = medians[name]["decode"] + medians[name]["framing"]
        print(f"{name:9s}: decode {medians[name]['decode']:.3f} ms, framing + resampling "
              f"{medians[name]['framing']:.3f} ms, in all {total:.3f} ms of a core per image")
    before, after = (sum(medians[name].values()) for name in ("reference", "compiled"))
    print(f"compiled path: {before / after:.2f}x cheaper (goal >= 2.5x, at most 1.0 ms an image)")
    if args.identity:
        worst, identical, flags = identity(all_files[:args.identity], preprocessing)
        count = min(args.identity, len(all_files))
        print(f"identity on {count} images: largest input difference {worst:.1e} (goal <= 1e-6), "
              f"{identical} bit-identical, {flags} with other framing flags")
    if args.batched:
        import torch

        torch.set_num_threads(1)
        figures = batched_identity(all_files[:args.batched], preprocessing)
        print(f"batched torch framing on this CPU (one thread, float64): {figures['ms']:.2f} ms of a core per image; "
              f"against the compiled path on {figures['images']} images ({figures['sizes']}): largest input "
              f"difference {figures['worst']:.1e} (goal <= 1e-3 on a GPU), {figures['flags']} with other framing flags")


if __name__ == "__main__":
    main()
