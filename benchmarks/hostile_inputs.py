"""Issue 22's goals under hostile input, measured.

1. `galaxymorph classify` on a folder of good JPEGs (real gz1-sdss cutouts when ../shared has
   them, else generated) mixed with every hostile file of tests/test_hostile_input.py plus a
   13000x13000 16-bit PNG and a 1 MB tile-compressed 64x2000x2000 cube: exit status, rows, and the
   peak memory of the whole run (the sum of the resident memory of the process and its children,
   sampled every 20 ms).
2. `galaxymorph serve` under the same files and hostile requests (16 16-bit 5000x5000 PNGs in one
   upload, JSON garbage, a declared 99,999,999,999-byte body, a 170 MB JSON body, slow bodies and
   slow headers): the statuses seen, the server's memory growth, and /healthz afterwards.

    python benchmarks/hostile_inputs.py [--good 300]
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from astropy.io import fits
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_hostile_input import fits_header_claiming, fits_with_card, float_tiff, forged_jpeg  # noqa: E402
from test_service import raw_exchange  # noqa: E402

from galaxymorph.sources.synthetic import write_examples  # noqa: E402

GZ1 = Path(__file__).resolve().parents[2] / "shared" / "data" / "gz1-sdss"


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
                parents[int(entry)] = (int(fields[1]), int(fields[21]) * os.sysconf("SC_PAGE_SIZE"))
            except (OSError, IndexError):
                pass
    family = {pid}
    while True:
        more = {child for child, (parent, _) in parents.items() if parent in family} - family
        if not more:
            break
        family |= more
    return sum(parents[member][1] for member in family if member in parents)


class PeakSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.running = pid, 0, True

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, tree_rss(self.pid))
            time.sleep(0.02)


def hostile_files(folder: Path) -> list[Path]:
    folder.mkdir(parents=True)
    files = [fits_with_card(folder / "bitpix.fits", "BITPIX", "BITPIX  =                   12"),
             fits_with_card(folder / "naxis.fits", "NAXIS1", "NAXIS1  = 'abc'"),
             forged_jpeg(folder / "forged.jpeg", 4000, 4000), forged_jpeg(folder / "huge.jpeg", 12000, 12000),
             fits_header_claiming(folder / "claims.fits.gz", 10000, 10000),
             float_tiff(folder / "nan.tiff", np.full((64, 64), np.nan))]
    holes = np.random.default_rng(0).random((256, 256))
    holes[100:150, 100:150] = np.nan
    files.append(float_tiff(folder / "holes.tiff", holes))
    Image.new("I;16", (13000, 13000)).save(folder / "huge16.png")
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(np.zeros((64, 2000, 2000), np.float32))]).writeto(folder / "cube.fits")
    (folder / "empty.jpeg").write_bytes(b"")
    return files + [folder / "huge16.png", folder / "cube.fits", folder / "empty.jpeg"]


def good_files(folder: Path, count: int) -> str:
    folder.mkdir(parents=True)
    real = sorted((GZ1 / "images").glob("*.jp*g"))[:count] if GZ1.is_dir() else []
    for path in real:
        shutil.copy(path, folder / path.name)
    if not real:
        write_examples(folder, count, seed=1, size=424)
    return "gz1-sdss" if real else "generated"


def run_cli(folder: Path, output: Path) -> dict:
    job = subprocess.Popen([sys.executable, "-m", "galaxymorph", "classify", str(folder), "-o", str(output),
                            "--workers", "2", "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sampler = PeakSampler(job.pid)
    sampler.start()
    started = time.monotonic()
    out, err = job.communicate()
    sampler.running = False
    rows = output.read_text().splitlines()[1:] if output.exists() else []
    errors = [row for row in rows if not row.rstrip().endswith(",")]
    return {"exit": job.returncode, "rows": len(rows), "error_rows": len(errors), "peak_mb": sampler.peak / 2**20,
            "seconds": time.monotonic() - started, "stdout": out.strip().splitlines()[-1:], "stderr": err.strip()[-300:]}


def run_service(files: list[Path], good: list[Path]) -> dict:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "galaxymorph", "serve", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    client = httpx.Client(base_url=url, timeout=120)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if client.get("/healthz").status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.5)
    client.post("/v1/classify", files={"files": (good[0].name, good[0].read_bytes(), "image/jpeg")})  # warm
    baseline = tree_rss(server.pid)
    sampler = PeakSampler(server.pid)
    sampler.start()
    statuses = []
    for path in files:
        statuses.append(client.post("/v1/classify", files=[("files", (good[1].name, good[1].read_bytes(), "image/jpeg")),
                                                           ("files", (path.name, path.read_bytes(), "image/png"))]).status_code)
    png = io.BytesIO()
    Image.fromarray(np.add.outer(np.arange(5000), np.arange(5000)).astype(np.uint16)).save(png, "PNG")  # ~1 MB of 16
    sixteen = [("files", (f"p{i}.png", png.getvalue(), "image/png")) for i in range(16)]
    statuses.append(client.post("/v1/classify", files=sixteen).status_code)
    sixteen_status, sixteen_mb = statuses[-1], 16 * len(png.getvalue()) / 2**20
    for body in (b"NaN", b"[]", b'[{"ra": 1e400, "dec": 1}]', b"[" * 50_000 + b"]" * 50_000):
        statuses.append(client.post("/v1/classify", content=body, headers={"Content-Type": "application/json"}).status_code)
    statuses.append(int(raw_exchange(url, b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                  b"Content-Length: 99999999999\r\n\r\n[")[9:12] or 0))
    statuses.append(client.post("/v1/classify", content=b" " * (170 << 20), headers={"Content-Type": "application/json"}).status_code)
    slow = [threading.Thread(target=raw_exchange, args=(url, request), kwargs={"wait": 60}) for request in
            [b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n["] * 3 + [b"GET /healthz HTTP/1.1\r\n"] * 3]
    started = time.monotonic()
    for thread in slow:
        thread.start()
    for thread in slow:
        thread.join()
    slow_seconds = time.monotonic() - started
    healthy = client.get("/healthz").status_code
    sampler.running = False
    server.terminate()
    server.wait()
    return {"statuses": sorted(set(statuses)), "server_errors": [s for s in statuses if s >= 500],
            "growth_mb": (sampler.peak - baseline) / 2**20, "sixteen_pngs": (sixteen_status, round(sixteen_mb, 1)), "slow_clients_cut_off_after_s": round(slow_seconds, 1),
            "healthz_after": healthy}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--good", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "inputs"
        source = good_files(folder / "good", args.good)
        bad = hostile_files(folder / "bad")
        print(f"{platform.node()} ({os.cpu_count()} cores), {time.strftime('%Y-%m-%d')}: {args.good} {source} JPEGs + {len(bad)} hostile files")
        print("classify:", run_cli(folder, Path(scratch) / "out.csv"))
        print("serve:", run_service(bad, sorted((folder / "good").iterdir())[:2]))


if __name__ == "__main__":
    main()
