"""Large images: throughput and peak memory of chunked prediction (dask, OME-Zarr out) against the in-memory path.

Each measurement runs in a fresh process (peak RSS is that process's ``ru_maxrss``) on a synthetic tiled
TIFF of the given size (generated once, row band by row band, so that writing it needs no memory either):

- ``memory``: today's path: ``read_image`` then ``SegmentationModel.predict`` (streamed in row bands),
  then the label TIFF written;
- ``chunked``: ``predict_chunked`` from the TIFF read lazily, written to OME-Zarr with its pyramid, on
  dask's threads (``--workers`` threads) or a LocalCluster (``--scheduler local``).

The network is the default U-Net (width 16, depth 4) with random weights: speed and memory do not depend
on what it learned. Prints one line per run and writes JSON (``--output``).

    python bench/scale.py --sizes 1 16 --threads 2 --output bench/results/scale.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import tifffile


def make_image(path: Path, megapixels: float, seed: int = 0) -> tuple[int, int]:
    """A uint16 TIFF of about ``megapixels`` (square), tiled 512 x 512, written tile by tile."""
    side = int(round((megapixels * 1e6) ** 0.5 / 16)) * 16
    if path.is_file():
        return side, side
    rng = np.random.default_rng(seed)
    tile = 512
    yy, xx = np.mgrid[:tile, :tile]

    def tiles():
        for top in range(0, side, tile):
            for left in range(0, side, tile):
                texture = 300 + 800 * (np.sin((yy + top) / 9.0) * np.cos((xx + left) / 11.0) > 0.6)
                yield (texture + rng.normal(0, 30, (tile, tile))).clip(0, 65535).astype(np.uint16)

    tifffile.imwrite(path, tiles(), shape=(side, side), dtype=np.uint16, tile=(tile, tile), compression="zlib")
    return side, side


def blank_map(region, window, statistics):
    """A chunk task without a network: what remains is the scheduler, the reading and the writing."""
    return np.zeros(window.area_shape, np.uint8)


def run_one(mode: str, image: Path, out: Path, *, threads: int, chunk: int, scheduler: str, workers: int,
            width: int) -> dict:
    """One measurement in this process."""
    import torch

    from cellmixer.engine import Chunking, SegmentationModel, Tiling, dask_scheduler, predict_chunked, semantic_task
    from cellmixer.io import open_lazy, read_image, write_tiff

    torch.set_num_threads(threads)
    model = SegmentationModel.new(["a", "b"], seed=0, width=width)
    tiling = Tiling(tile_size=512, batch_size=4)
    start = time.perf_counter()
    if mode == "overhead":
        from cellmixer.engine import ChunkTask

        task = ChunkTask(blank_map, name="classes", instances=False, tile_context=0, num_classes=1)
        with dask_scheduler(scheduler, workers=workers):
            summary = predict_chunked(open_lazy(image), task, out / "blank.ome.zarr", overwrite=True, progress=False,
                                      chunking=Chunking(chunk_size=chunk))
        extra = {"chunks": summary["chunks"]}
    elif mode == "memory":
        labels = model.predict(read_image(image), tiling=tiling)
        write_tiff(out / "labels.tif", labels, overwrite=True)
        extra = {}
    else:
        with dask_scheduler(scheduler, workers=workers):
            summary = predict_chunked(open_lazy(image), semantic_task(model, tiling), out / "labels.ome.zarr",
                                      chunking=Chunking(chunk_size=chunk), overwrite=True, progress=False)
        extra = {"chunks": summary["chunks"]}
    wall = time.perf_counter() - start
    side = tifffile.TiffFile(image).pages[0].shape
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2  # kB -> GB
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024 ** 2
    return {"mode": mode, "scheduler": scheduler if mode != "memory" else None, "workers": workers, "width": width,
            "megapixels": round(side[0] * side[1] / 1e6, 2), "shape": list(side), "chunk": chunk,
            "wall_s": round(wall, 2), "mpx_per_s": round(side[0] * side[1] / 1e6 / wall, 3),
            "peak_rss_gb": round(rss, 3), "peak_rss_worker_gb": round(children, 3), **extra,
            **({"s_per_chunk": round(wall / extra["chunks"], 4)} if mode == "overhead" else {})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1, 16, 100, 400], help="megapixels")
    parser.add_argument("--modes", nargs="+", default=["memory", "chunked"], choices=["memory", "chunked", "overhead"],
                        help="overhead: chunks without a network (scheduler, reading, writing), per chunk")
    parser.add_argument("--memory-up-to", type=float, default=100, help="largest size for the in-memory path (Mpx)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (in-memory) / dask threads (chunked)")
    parser.add_argument("--chunk", type=int, default=4096)
    parser.add_argument("--scheduler", default="threads", help="threads, local or an address")
    parser.add_argument("--workers", type=int, default=2, help="LocalCluster workers (--scheduler local)")
    parser.add_argument("--width", type=int, default=16, help="U-Net width (16: the default network)")
    parser.add_argument("--work", default="/tmp/cellmixer-bench-scale")
    parser.add_argument("--output", default="bench/results/scale.json")
    parser.add_argument("--one", nargs=2, metavar=("MODE", "IMAGE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    work = Path(args.work)
    if args.one:
        mode, image = args.one
        out = work / f"out-{mode}-{Path(image).stem}"
        out.mkdir(parents=True, exist_ok=True)
        # chunked on threads: each chunk's torch runs on one thread, the chunks in parallel
        threads = args.threads if mode == "memory" or args.scheduler != "threads" else 1
        result = run_one(mode, Path(image), out, threads=threads, chunk=args.chunk, scheduler=args.scheduler,
                         workers=args.workers, width=args.width)
        if mode != "memory" and args.scheduler == "threads":
            result["workers"] = args.threads
        print(json.dumps(result))
        return
    work.mkdir(parents=True, exist_ok=True)
    results = []
    started = time.perf_counter()
    for size in args.sizes:
        image = work / f"image_{size:g}mpx.tif"
        make_image(image, size)
        for mode in args.modes:
            if mode == "memory" and size > args.memory_up_to:
                continue
            command = [sys.executable, __file__, "--one", mode, str(image), "--threads", str(args.threads),
                       "--chunk", str(args.chunk), "--scheduler", args.scheduler, "--workers", str(args.workers),
                       "--width", str(args.width), "--work", str(work)]
            env = {**os.environ, "DASK_NUM_WORKERS": str(args.threads), "OMP_NUM_THREADS": str(args.threads)}
            done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
            if done.returncode != 0:
                print(done.stderr[-2000:], file=sys.stderr)
                continue
            result = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"{mode:8s} {result['megapixels']:7.1f} Mpx  {result['wall_s']:8.1f} s  "
                  f"{result['mpx_per_s']:6.3f} Mpx/s  peak RSS {result['peak_rss_gb']:.2f} GB "
                  f"(workers {result['peak_rss_worker_gb']:.2f} GB)  {result.get('chunks', 1)} chunks "
                  f"[{args.scheduler}]", flush=True)
            results.append(result)
    report = {"benchmark": "scale", "command": " ".join(sys.argv), "machine": {
        "platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "wall_time_s": round(time.perf_counter() - started, 1), "results": results}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    print(f"-> {args.output}")


if __name__ == "__main__":
    main()
