"""Fetch + classify as one streaming pipeline against a local cutout server with added latency.

Usage: python benchmarks/fetch_classify.py [--positions 2000] [--latency 0.1] [--concurrency 8 16 32]
       python benchmarks/fetch_classify.py --widening 2 [--galaxy-field 256] [--positions 400]

The server (galaxymorph.remote.local_server, SDSS protocol, 424 px JPEGs) runs in its own process
and sleeps `latency` seconds in every answer. The pipeline (`classify --fetch`: downloads on an
event loop, decoding in worker processes, inference in the main thread) starts with an empty
cache, once per concurrency. Two floors: classifying the same images from disk once fetched, and
positions x latency / concurrency (the downloads alone, perfectly overlapped). Also timed: the downloads alone, without
classification, at the largest concurrency. Goal: the pipeline
within 1.25x of the larger floor, i.e. downloads and compute overlap instead of adding up.

`--widening N`: instead, the server gives galaxies an angular size (`--galaxy-field`), the cutouts
are tight (128 px at 0.25"/px, 32"), and `classify --fetch` runs at the first concurrency without
and with `--widen-truncated N`: the share of rows `galaxy_truncated`, the requests made and the time.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import tempfile
import time
from pathlib import Path


def serve(port_queue: multiprocessing.Queue, latency: float, galaxy_field: float | None) -> None:
    from galaxymorph.remote.local_server import LocalCutoutServer, prerender

    prerender(424)
    with LocalCutoutServer(latency=latency, galaxy_field=galaxy_field) as server:
        port_queue.put(server.url)
        while True:
            time.sleep(3600)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--positions", type=int, default=2000)
    parser.add_argument("--latency", type=float, default=0.1, help="seconds added to every answer")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--widening", type=int, help="compare classify --fetch without and with --widen-truncated N")
    parser.add_argument("--galaxy-field", type=float, default=256.0, help="with --widening: the server's galaxy field in arcsec")
    args = parser.parse_args()

    from galaxymorph.prediction import PredictOptions, classify
    from galaxymorph.catalog import iter_sky_positions
    from galaxymorph.remote import CutoutCache, CutoutService, FetchOptions, iter_fetched, iter_fetched_rows

    urls: multiprocessing.Queue = multiprocessing.Queue()
    server = multiprocessing.Process(target=serve, daemon=True,
                                     args=(urls, args.latency, args.galaxy_field if args.widening else None))
    server.start()
    os.environ["ASTRO_DB_HOST"] = urls.get(timeout=120)
    os.environ.setdefault("SDSS_API_KEY", "benchmark")
    options = PredictOptions()
    print(f"# fetch + classify, {time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cores, "
          f"{args.positions} positions, {args.latency * 1000:.0f} ms latency per request")
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        catalog = scratch / "positions.csv"
        catalog.write_text("id,ra,dec\n" + "".join(f"p{i},{(i * 0.37) % 360:.5f},{-30 + (i * 0.011) % 60:.5f}\n"
                                                   for i in range(args.positions)))
        if args.widening:
            widening(catalog, scratch, args.widening, args.concurrency[0], options)
            server.terminate()
            return
        timings = {}
        for concurrency in args.concurrency:
            cache = CutoutCache(scratch / f"cache-{concurrency}")
            fetch_options = FetchOptions(concurrency=concurrency, rate_limit=0)
            started = time.perf_counter()
            rows = iter_fetched_rows(catalog, CutoutService("sdss"), cache, options=fetch_options)
            summary = classify(rows, scratch / "fetched.csv", options=options)
            timings[concurrency] = (time.perf_counter() - started, summary.failed)
        files = sorted(cache.root.rglob("*.jpeg"))
        busiest = max(args.concurrency)
        started = time.perf_counter()
        fetched = sum(1 for _ in iter_fetched(iter_sky_positions(catalog), CutoutService("sdss"), CutoutCache(scratch / "alone"),
                                              FetchOptions(concurrency=busiest, rate_limit=0)))
        downloads_alone = time.perf_counter() - started
        started = time.perf_counter()
        classify(files, scratch / "disk.csv", options=options)
        from_disk = time.perf_counter() - started
    server.terminate()
    print(f"floor 1, classify the same {len(files)} images from disk: {from_disk:.2f} s")
    print(f"downloads alone (no classification) of {fetched} cutouts at concurrency {busiest}: {downloads_alone:.2f} s")
    print("| concurrency | fetch + classify s | images/s | failed | floor 2: positions x latency / concurrency s | ratio to the larger floor (goal <= 1.25) |")
    print("|---|---|---|---|---|---|")
    for concurrency, (seconds, failed) in timings.items():
        download_floor = args.positions * args.latency / concurrency
        ratio = seconds / max(from_disk, download_floor)
        print(f"| {concurrency} | {seconds:.2f} | {args.positions / seconds:.0f} | {failed} | {download_floor:.2f} | {ratio:.2f} |")


def widening(catalog: Path, scratch: Path, widenings: int, concurrency: int, options) -> None:
    import csv

    from galaxymorph.prediction import classify
    from galaxymorph.remote import CutoutCache, CutoutService, CutoutSettings, FetchOptions, iter_fetched_rows

    service = CutoutService("sdss", CutoutSettings(size=128, pixel_scale=0.25))
    print("| --widen-truncated | seconds | cutouts fetched | rows galaxy_truncated | rows failed |\n|---|---|---|---|---|")
    for widen in (0, widenings):
        cache = CutoutCache(scratch / f"widen-{widen}")
        fetch_options = FetchOptions(concurrency=concurrency, rate_limit=0, widen_truncated=widen)
        started = time.perf_counter()
        summary = classify(iter_fetched_rows(catalog, service, cache, options=fetch_options), scratch / f"widen-{widen}.csv",
                           options=options)
        seconds = time.perf_counter() - started
        rows = list(csv.DictReader(open(scratch / f"widen-{widen}.csv")))
        truncated = sum(row["galaxy_truncated"] == "True" for row in rows) / len(rows)
        print(f"| {widen} | {seconds:.2f} | {len(list(cache.root.rglob('*.jpeg')))} | {truncated:.3f} | {summary.failed} |")


if __name__ == "__main__":
    main()
