"""Training and prediction throughput of the CellMixer U-Net on one device (CPU, CUDA GPU or MPS).

    python bench/device.py                      # --device auto: the first CUDA GPU, else MPS, else the CPU
    python bench/device.py --device cuda        # the whole GPU check, one command
    python bench/device.py --device cpu --iterations 20 --image-size 1024 --threads 2   # a quick look

Everything is generated (``cellmixer.demo.synthetic_culture``): no data, no download.

- training through the public API, ``cellmixer.train(..., device=--device, precision=--precision)``:
  a U-Net (--width 16, --depth 4) on 3 cell types x --images-per-class cultures of
  (--crop-size + 128)^2 pixels, CellMixer mixtures, all augmentations, --iterations of --batch-size
  crops of --crop-size^2. Iterations per second and crop megapixels per second come from the
  training log, the first --warmup iterations left out (CUDA start-up, allocator, cuDNN autotuning);
- prediction: the trained model loaded with ``SegmentationModel.load(folder, device=--device)``,
  one warm-up call on a 512^2 image, then ``SegmentationModel.predict`` of a generated
  --image-size^2 culture (default sliding window: tile 512, overlap 0.25, --predict-batch-size tiles
  per pass, input normalization included), in --predict-precision (default: the training's);
- peak memory: CUDA ``torch.cuda.max_memory_allocated`` of training and of prediction; always the
  process's peak RSS (``resource``).

Prints the figures and writes them with the machine and the git commit to --json
(default bench/results/device.json).
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, Timer, git_commit, machine, peak_rss_mb, save_json  # noqa: E402

import torch  # noqa: E402
import tifffile  # noqa: E402

import cellmixer  # noqa: E402
from cellmixer import CellmixerError, SegmentationModel  # noqa: E402
from cellmixer.demo import DEMO_FOREGROUND, synthetic_culture  # noqa: E402
from cellmixer.engine import PRECISIONS, describe_device, resolve_device, resolve_precision  # noqa: E402

TYPES = ("epithelial", "roundcell", "spindle")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: %(default)s)")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="training arithmetic (default: %(default)s)")
    parser.add_argument("--predict-precision", choices=PRECISIONS, default=None,
                        help="prediction arithmetic (default: the same as --precision)")
    parser.add_argument("--width", type=int, default=16, help="U-Net channels at full resolution (default: %(default)s)")
    parser.add_argument("--depth", type=int, default=4, help="U-Net down-sampling steps (default: %(default)s)")
    parser.add_argument("--iterations", type=int, default=200, help="(default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="first iterations left out of the rate (default: 10 %% of --iterations, 2 to 20)")
    parser.add_argument("--batch-size", type=int, default=8, help="(default: %(default)s)")
    parser.add_argument("--crop-size", type=int, default=256, help="(default: %(default)s)")
    parser.add_argument("--images-per-class", type=int, default=4, help="generated training cultures per type "
                                                                         "(default: %(default)s)")
    parser.add_argument("--image-size", type=int, default=2048, help="side of the predicted image (default: %(default)s)")
    parser.add_argument("--predict-batch-size", type=int, default=4, help="tiles per forward pass (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: all cores)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--progress", action="store_true", help="show the training progress bar")
    parser.add_argument("--json", type=Path, default=RESULTS / "device.json",
                        help="where to write the figures (default: bench/results/device.json)")
    args = parser.parse_args(argv)
    if args.iterations < 2:
        parser.error("--iterations: at least 2 (one is left out as warm-up)")
    if args.warmup is None:
        args.warmup = min(20, max(2, args.iterations // 10))
    args.warmup = min(args.warmup, args.iterations - 1)
    return args


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mb(device: torch.device) -> float | None:
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return None


def write_cultures(root: Path, *, per_class: int, side: int, seed: int) -> Path:
    """``root/<type>/<type>_<i>.tif``: homogeneous generated cultures, no masks (the CellMixer input)."""
    for k, name in enumerate(TYPES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            image, _, _ = synthetic_culture(name, shape=(side, side), seed=seed + 100 * k + i)
            tifffile.imwrite(root / name / f"{name}_{i}.tif", image)
    return root


def training_rate(folder: Path, *, warmup: int, batch_size: int, crop_size: int) -> dict:
    """Iterations per second from the training log, its first ``warmup`` iterations left out."""
    with open(folder / "training_log.csv") as fh:
        elapsed = [float(row["elapsed_s"]) for row in csv.DictReader(fh)]
    timed = len(elapsed) - warmup
    seconds = (elapsed[-1] - elapsed[warmup - 1]) / timed
    pixels = batch_size * crop_size**2
    return {"iterations": len(elapsed), "warmup_iterations": warmup, "timed_iterations": timed,
            "seconds_per_iteration": round(seconds, 4), "iterations_per_second": round(1 / seconds, 3),
            "crops_per_second": round(batch_size / seconds, 2),
            "crop_megapixels_per_second": round(pixels / 1e6 / seconds, 3),
            "first_iteration_at_s": elapsed[0]}


def run(args) -> dict:
    wall = Timer()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    predict_precision = resolve_precision(args.predict_precision or args.precision, device)
    results: dict = {"machine": machine(), "commit": git_commit(), "device": describe_device(device),
                     "torch": torch.__version__, "cuda": torch.version.cuda,
                     "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                     "precision": precision, "predict_precision": predict_precision}
    print(f"device: {results['device']}; torch {torch.__version__}"
          + (f" (CUDA {torch.version.cuda})" if torch.version.cuda else "")
          + f"; precision: training {precision}, prediction {predict_precision}")

    with tempfile.TemporaryDirectory(prefix="cellmixer-bench-device-") as tmp:
        tmp = Path(tmp)
        side = args.crop_size + 128
        timer = Timer()
        data = write_cultures(tmp / "data", per_class=args.images_per_class, side=side, seed=args.seed)
        results["data"] = {"types": list(TYPES), "images_per_class": args.images_per_class,
                           "image_side": side, "generation_s": timer()}

        # Training through the public API, on the device.
        _reset_peak(device)
        timer = Timer()
        model = cellmixer.train(data, tmp / "model", model_options={"width": args.width, "depth": args.depth},
                                iterations=args.iterations, batch_size=args.batch_size, crop_size=args.crop_size,
                                foreground=DEMO_FOREGROUND, precision=precision, device=device,
                                threads=args.threads, seed=args.seed, progress=args.progress)
        _synchronize(device)
        training_wall = timer()
        if model.device.type != device.type:
            raise SystemExit(f"the trained model is on {model.device}, not on {device}")
        rate = training_rate(tmp / "model", warmup=args.warmup, batch_size=args.batch_size,
                             crop_size=args.crop_size)
        parameters = sum(p.numel() for p in model.network.parameters())
        results["training"] = {
            **rate, "batch_size": args.batch_size, "crop_size": args.crop_size,
            "architecture": model.config["architecture"], "parameters": parameters,
            "final_loss": model.config["training"]["final_loss"], "wall_time_s": training_wall,
            "peak_device_memory_mb": _peak_mb(device), "peak_rss_mb": round(peak_rss_mb(), 1)}
        print(f"training: {rate['iterations_per_second']:.2f} iterations/s = {rate['crops_per_second']:.1f} crops/s "
              f"of {args.crop_size}^2 = {rate['crop_megapixels_per_second']:.2f} crop megapixels/s "
              f"({rate['seconds_per_iteration'] * 1000:.0f} ms per iteration of {args.batch_size}, "
              f"{rate['timed_iterations']} iterations timed after {rate['warmup_iterations']}); "
              f"wall {training_wall:.1f} s for {args.iterations} iterations (pseudo-labels and first iteration "
              f"{rate['first_iteration_at_s']:.1f} s); U-Net width {args.width}, depth {args.depth}, "
              f"{parameters / 1e6:.2f} M parameters")

        # Prediction of one large generated image, on the same device.
        timer = Timer()
        image, _, _ = synthetic_culture(list(TYPES), shape=(args.image_size, args.image_size), seed=args.seed + 1)
        generation = timer()
        del model
        loaded = SegmentationModel.load(tmp / "model", device=device)
        settings = dict(tile_size="auto", overlap=0.25, batch_size=args.predict_batch_size, precision=predict_precision)
        loaded.predict(image[:512, :512], **settings)  # warm-up: CUDA context, cuDNN, allocator
        _synchronize(device)
        _reset_peak(device)
        start = time.perf_counter()
        labels = loaded.predict(image, **settings)
        _synchronize(device)
        seconds = time.perf_counter() - start
        megapixels = image.size / 1e6
        results["prediction"] = {
            "image": list(image.shape), "tile_size": loaded.tile_size, "overlap": 0.25,
            "batch_size": args.predict_batch_size, "seconds": round(seconds, 3),
            "megapixels_per_second": round(megapixels / seconds, 3), "image_generation_s": generation,
            "labels_seen": sorted(int(v) for v in set(labels[::16, ::16].ravel().tolist())),
            "peak_device_memory_mb": _peak_mb(device), "peak_rss_mb": round(peak_rss_mb(), 1)}
        print(f"prediction: {megapixels / seconds:.2f} megapixels/s ({seconds:.2f} s for {args.image_size}x"
              f"{args.image_size}, tile {loaded.tile_size}, overlap 0.25, batch {args.predict_batch_size})")
    results["wall_time_s"] = wall()
    device_peaks = [results[k]["peak_device_memory_mb"] for k in ("training", "prediction")]
    memory = f"peak RSS {results['prediction']['peak_rss_mb']:.0f} MiB"
    if device.type == "cuda":
        memory = (f"peak CUDA memory: training {device_peaks[0]:.0f} MiB, prediction {device_peaks[1]:.0f} MiB; "
                  + memory)
    print(f"memory: {memory}")
    print(f"wall time: {results['wall_time_s']:.1f} s")
    return results


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        results = run(args)
    except CellmixerError as exc:
        print(f"bench/device.py: error: {exc}", file=sys.stderr)
        return 2
    path = save_json(args.json, results)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
