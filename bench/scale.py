"""Large images: throughput and peak memory of chunked prediction (dask, OME-Zarr out) against the in-memory path.

Each measurement runs in a fresh process (peak RSS is that process's ``ru_maxrss``) on a synthetic tiled
TIFF of the given size (generated once, row band by row band, so that writing it needs no memory either):

- ``memory``: today's path: ``read_image`` then ``SegmentationModel.predict`` (streamed in row bands),
  then the label TIFF written;
- ``chunked``: ``predict_chunked`` from the TIFF read lazily, written to OME-Zarr with its pyramid, on
  dask's threads (``--workers`` threads) or a LocalCluster (``--scheduler local``).

- ``plate``: a plate of ``--plate-fields`` fields of 1080 x 1280 (two wells) through ``cellmixer predict``:
  the sequential loop in one process (``--threads`` torch threads) against the images sent to a
  LocalCluster of ``--workers`` single-threaded worker processes, one task per image (``--scheduler``
  with its address); images per second, the cluster's start-up timed apart.

The network is the default U-Net (width 16, depth 4) with random weights: speed and memory do not depend
on what it learned. Prints one line per run and writes JSON (``--output``).

    python bench/scale.py --sizes 1 16 --threads 2 --output bench/results/scale.json
    python bench/scale.py --modes plate --plate-fields 200 --workers 2 --output bench/results/scale_plate.json
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


PLATE_FIELD = (1080, 1280)


def make_plate(folder: Path, fields: int, *, width: int) -> tuple[Path, Path]:
    """``fields`` uint16 fields of 1080 x 1280 in two well folders, and a model folder (random weights)."""
    from cellmixer.engine import SegmentationModel

    plate, model = folder / f"plate_{fields}", folder / f"plate_model_w{width}"
    if not model.is_dir():
        SegmentationModel.new(["a", "b"], seed=0, width=width).save(model)
    yy, xx = np.mgrid[:PLATE_FIELD[0], :PLATE_FIELD[1]]
    rng = np.random.default_rng(0)
    for i in range(fields):
        path = plate / f"well_{i % 2}" / f"field_{i:03d}.tif"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            texture = 300 + 800 * (np.sin((yy + 37 * i) / 9.0) * np.cos(xx / 11.0) > 0.6)
            tifffile.imwrite(path, (texture + rng.normal(0, 30, PLATE_FIELD)).clip(0, 65535).astype(np.uint16))
    return plate, model


def run_plate(mode: str, plate: Path, model: Path, out: Path, *, workers: int) -> dict:
    """``cellmixer predict`` on the plate: ``sequential`` (the loop here) or ``cluster`` (a LocalCluster of
    ``workers`` single-threaded processes, its address given as ``--scheduler``)."""
    from cellmixer.engine import Chunking
    from cellmixer.methods.cellmixer import predict

    options = dict(tile_size=512, batch_size=4, overwrite=True, progress=False)
    started = 0.0
    if mode == "cluster":
        from distributed import LocalCluster

        start = time.perf_counter()
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
        started = time.perf_counter() - start
        options["chunking"] = Chunking(scheduler=cluster.scheduler_address)
    start = time.perf_counter()
    rows = predict(model, plate, out, **options)
    wall = time.perf_counter() - start
    if mode == "cluster":
        cluster.close()
    return {"mode": f"plate-{mode}", "workers": workers if mode == "cluster" else None, "images": len(rows),
            "shape": list(PLATE_FIELD), "wall_s": round(wall, 2), "images_per_s": round(len(rows) / wall, 4),
            "cluster_start_s": round(started, 2)}


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


def measure(command: list[str], env: dict) -> dict | None:
    """One measurement in a fresh process (``command``, with ``env`` added): its JSON line, or None if it failed."""
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **env}, check=False)
    if done.returncode != 0:
        print(done.stderr[-2000:], file=sys.stderr)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1, 16, 100, 400], help="megapixels")
    parser.add_argument("--modes", nargs="+", default=["memory", "chunked"],
                        choices=["memory", "chunked", "overhead", "plate"],
                        help="overhead: chunks without a network (scheduler, reading, writing), per chunk; plate: "
                             "many fields, sequential against a LocalCluster of --workers processes")
    parser.add_argument("--plate-fields", type=int, default=200, help="fields of 1080x1280 of the plate part")
    parser.add_argument("--memory-up-to", type=float, default=100, help="largest size for the in-memory path (Mpx)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (in-memory) / dask threads (chunked)")
    parser.add_argument("--chunk", type=int, default=None, help="chunk side (default: the package's)")
    parser.add_argument("--scheduler", default="threads", help="threads, local or an address")
    parser.add_argument("--workers", type=int, default=2, help="LocalCluster workers (--scheduler local)")
    parser.add_argument("--width", type=int, default=16, help="U-Net width (16: the default network)")
    parser.add_argument("--work", default="/tmp/cellmixer-bench-scale")
    parser.add_argument("--output", default="bench/results/scale.json")
    parser.add_argument("--one", nargs=2, metavar=("MODE", "IMAGE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.chunk is None:
        from cellmixer.engine import Chunking

        args.chunk = Chunking().chunk_size
    work = Path(args.work)
    if args.one and args.one[0].startswith("plate-"):
        import torch

        torch.set_num_threads(args.threads)
        plate, model = make_plate(work, args.plate_fields, width=args.width)
        out = work / f"out-{args.one[0]}-{args.plate_fields}"
        print(json.dumps(run_plate(args.one[0].removeprefix("plate-"), plate, model, out, workers=args.workers)))
        return
    if args.one:
        mode, image = args.one
        out = work / f"out-{mode}-{Path(image).stem}"
        out.mkdir(parents=True, exist_ok=True)
        # chunked on threads: the chunks in flight share the torch threads (predict_chunked does that)
        result = run_one(mode, Path(image), out, threads=args.threads, chunk=args.chunk, scheduler=args.scheduler,
                         workers=args.workers, width=args.width)
        if mode != "memory" and args.scheduler == "threads":
            result["workers"] = args.threads
        print(json.dumps(result))
        return
    work.mkdir(parents=True, exist_ok=True)
    results = []
    started = time.perf_counter()
    if "plate" in args.modes:
        make_plate(work, args.plate_fields, width=args.width)
        for mode in ("sequential", "cluster"):
            command = [sys.executable, __file__, "--one", f"plate-{mode}", "-", "--threads", str(args.threads),
                       "--workers", str(args.workers), "--width", str(args.width), "--work", str(work),
                       "--plate-fields", str(args.plate_fields)]
            result = measure(command, {"OMP_NUM_THREADS": str(args.threads if mode == "sequential" else 1)})
            if result is None:
                continue
            print(f"{result['mode']:16s} {result['images']} fields  {result['wall_s']:8.1f} s  "
                  f"{result['images_per_s']:.3f} images/s  (cluster start {result['cluster_start_s']:.1f} s)",
                  flush=True)
            results.append(result)
        rates = {r["mode"]: r["images_per_s"] for r in results if r["mode"].startswith("plate-")}
        if len(rates) == 2:
            print(f"plate: cluster / sequential = {rates['plate-cluster'] / rates['plate-sequential']:.2f}x")
    for size in args.sizes if set(args.modes) - {"plate"} else ():
        image = work / f"image_{size:g}mpx.tif"
        make_image(image, size)
        for mode in args.modes:
            if mode == "plate" or mode == "memory" and size > args.memory_up_to:
                continue
            command = [sys.executable, __file__, "--one", mode, str(image), "--threads", str(args.threads),
                       "--chunk", str(args.chunk), "--scheduler", args.scheduler, "--workers", str(args.workers),
                       "--width", str(args.width), "--work", str(work)]
            result = measure(command, {"DASK_NUM_WORKERS": str(args.threads), "OMP_NUM_THREADS": str(args.threads)})
            if result is None:
                continue
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
