"""Load on the web service: 50 concurrent clients posting images for 30 s, dynamic batching on and off.

Usage: python benchmarks/serve_load.py [--clients 50] [--seconds 30]

The service (`galaxymorph serve`, default model) runs in its own process on 127.0.0.1; the clients
are asyncio tasks of one httpx.AsyncClient in this process, each posting one 424 px JPEG (a
synthetic galaxy, as SDSS cutouts come) after the other. Reported per setting: requests, errors,
images/s and the p50/p99 latency.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def load(url: str, images: list[bytes], clients: int, seconds: float) -> tuple[list[float], int]:
    latencies, errors, reasons = [], 0, []
    stop = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        async def one_client(number: int) -> None:
            nonlocal errors
            sent = number
            while time.perf_counter() < stop:
                started = time.perf_counter()
                try:
                    answer = await client.post("/v1/classify", files={"files": ("g.jpeg", images[sent % len(images)], "image/jpeg")})
                    ok = answer.status_code == 200 and not answer.json()["results"][0]["error"]
                    if not ok:
                        reasons.append(f"HTTP {answer.status_code}: {answer.text[:200]}")
                except httpx.HTTPError as error:
                    ok = False
                    reasons.append(repr(error))
                errors += not ok
                latencies.append(time.perf_counter() - started)
                sent += clients
        await asyncio.gather(*(one_client(i) for i in range(clients)))
    return latencies, errors, reasons


def run(batch_window: float, images: list[bytes], clients: int, seconds: float) -> str:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "galaxymorph", "serve", "--port", str(port), "--batch-window", str(batch_window)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        latencies, errors, reasons = asyncio.run(load(url, images, clients, seconds))
    finally:
        server.terminate()
        server.wait()
    p50, p99 = np.percentile(latencies, [50, 99]) * 1000
    label = f"on ({batch_window * 1000:g} ms window)" if batch_window else "off"
    shown = f"; errors, e.g.: {sorted(set(reasons))[:3]}" if reasons else ""
    return f"| {label} | {len(latencies)} | {errors} | {len(latencies) / seconds:.1f} | {p50:.0f} | {p99:.0f} |{shown}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    from galaxymorph.sources.synthetic import write_examples

    with tempfile.TemporaryDirectory() as scratch:
        images = [path.read_bytes() for path, _ in write_examples(Path(scratch), 16, seed=2, size=424)]
    print(f"# serve load, {time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cores, "
          f"{args.clients} clients for {args.seconds:g} s each, one 424 px JPEG per request")
    print("| dynamic batching | requests | errors | images/s | p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|")
    for window in (0.005, 0.0):
        print(run(window, images, args.clients, args.seconds), flush=True)


if __name__ == "__main__":
    main()
