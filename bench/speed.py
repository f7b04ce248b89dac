"""Speed and memory of the CellMixer pipeline at default settings, on the CPU.

    python bench/speed.py [--data ../shared/data/deepcell_vanvalen2016] [--big 8000]

- foreground extraction of a 1080 x 1280 image (a DeepCell phase image when the data is there,
  otherwise a generated culture of that size): median of 20 runs; target <= 0.1 s;
- inference throughput (megapixels per second) of the default U-Net with the default sliding window
  (tile 512, overlap 0.25), input normalization included, on a 2048 x 2048 image;
- training speed (images per second) at the default settings (batch 8, crop 256, CellMixer mixtures,
  augmentation) from the training log, first 5 iterations excluded;
- peak memory (RSS) of predicting a --big x --big image read from a memory-mapped TIFF, in a fresh
  process, next to the size of the image and of its label image;
- the paper's architecture beside the U-Net: DINOv2 ViT-S/14 + Segmenter decoder (random weights) at
  518 x 518, its training step (CellMixer mixtures, batch --vit-batch-size) and its inference throughput
  on the same 2048 x 2048 image with its own sliding window (tile 518, overlap 0.25). --skip-vit leaves
  these rows out.

Writes bench/results/speed.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_DATA, RESULTS, git_commit, machine, peak_rss_mb, save_json  # noqa: E402

import cellmixer  # noqa: E402
from cellmixer.demo import synthetic_culture  # noqa: E402

BIG_IMAGE_SCRIPT = """
import sys, time, resource, json, tifffile
from cellmixer import SegmentationModel
model = SegmentationModel.load(sys.argv[1])
image = tifffile.memmap(sys.argv[2])
start = time.perf_counter()
labels = model.predict(image)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "labels_dtype": str(labels.dtype)}))
"""


def median_time(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def training_speed(folder: Path, model, wall: float, warm: int) -> dict:
    """Seconds per iteration from a training log (the first ``warm`` iterations left out)."""
    with open(folder / "training_log.csv") as fh:
        log = list(csv.DictReader(fh))
    settings = model.config["training"]
    seconds = (float(log[-1]["elapsed_s"]) - float(log[warm - 1]["elapsed_s"])) / (len(log) - warm)
    return {"settings": {k: settings[k] for k in ("mode", "batch_size", "crop_size", "optimizer", "augment",
                                                  "precision")},
            "architecture": model.config["architecture"], "iterations": len(log),
            "seconds_per_iteration": round(seconds, 3), "images_per_second": round(settings["batch_size"] / seconds, 2),
            "wall_time_s": round(wall, 1)}


def vit_rows(tmp: Path, big: np.ndarray, *, iterations: int, batch_size: int) -> dict:
    """Training step and inference throughput of DINOv2 ViT-S/14 + Segmenter at 518 (random weights)."""
    import tifffile

    for name in ("roundcell", "spindle", "epithelial"):  # cultures larger than the 518-pixel crops
        (tmp / "vit_data" / name).mkdir(parents=True)
        for i in range(2):
            tifffile.imwrite(tmp / "vit_data" / name / f"{i}.tif",
                             synthetic_culture(name, shape=(640, 640), seed=i)[0])
    start = time.perf_counter()
    model = cellmixer.train(tmp / "vit_data", tmp / "vit_model", model="segmenter", model_options={"size": "small"},
                            crop_size=518, batch_size=batch_size, iterations=iterations, progress=False)
    training = training_speed(tmp / "vit_model", model, time.perf_counter() - start, warm=min(3, iterations - 1))
    print(f"ViT-S/14 + Segmenter training: {training['seconds_per_iteration']:.2f} s per batch of "
          f"{batch_size} x 518^2 ({training['images_per_second']} images/s)")
    seconds = median_time(lambda: model.predict(big), 1)
    inference = {"image": list(big.shape), "tile_size": model.tile_size, "overlap": 0.25, "batch_size": 4,
                 "seconds": round(seconds, 2), "megapixels_per_second": round(big.size / 1e6 / seconds, 3)}
    print(f"ViT-S/14 + Segmenter inference: {inference['megapixels_per_second']} MP/s on {big.shape[0]}x{big.shape[1]}"
          f" (tile {model.tile_size})")
    parameters = sum(p.numel() for p in model.network.parameters())
    return {"vit_segmenter_training": {**training, "parameters": parameters},
            "vit_segmenter_inference": inference}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA / "deepcell_vanvalen2016")
    parser.add_argument("--big", type=int, default=8000, help="side of the large image for the memory test")
    parser.add_argument("--train-iterations", type=int, default=40)
    parser.add_argument("--vit-iterations", type=int, default=10, help="training iterations of the ViT row")
    parser.add_argument("--vit-batch-size", type=int, default=2, help="518 x 518 crops per ViT training step")
    parser.add_argument("--skip-vit", action="store_true")
    args = parser.parse_args(argv)
    results: dict = {"machine": machine(), "commit": git_commit()}

    # Foreground extraction, 1080 x 1280.
    phase = args.data / "training_data" / "HeLa_joint" / "set1" / "phase.png"
    if phase.is_file():
        image, source = cellmixer.read_image(phase), str(phase)
    else:
        image, source = synthetic_culture(["epithelial", "spindle"], shape=(1080, 1280), seed=0)[0], "generated"
    seconds = median_time(lambda: cellmixer.extract_foreground(image), 20)
    results["foreground_1080x1280"] = {"seconds": round(seconds, 4), "image": source, "target_s": 0.1,
                                       "meets_target": seconds <= 0.1}
    print(f"foreground extraction 1080x1280: {seconds * 1000:.1f} ms (target 100 ms)")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # Training speed at the default settings on generated cultures.
        for name in ("roundcell", "spindle", "epithelial"):
            (tmp / "data" / name).mkdir(parents=True)
            for i in range(2):
                import tifffile

                tifffile.imwrite(tmp / "data" / name / f"{i}.tif", synthetic_culture(name, shape=(512, 512), seed=i)[0])
        start = time.perf_counter()
        model = cellmixer.train(tmp / "data", tmp / "model", iterations=args.train_iterations, progress=False)
        results["training"] = {**training_speed(tmp / "model", model, time.perf_counter() - start, warm=5),
                               "peak_rss_mb": round(peak_rss_mb(), 1)}
        settings = results["training"]["settings"]
        print(f"training: {results['training']['images_per_second']} images/s "
              f"({results['training']['seconds_per_iteration']:.3f} s per batch of {settings['batch_size']} x "
              f"{settings['crop_size']}^2)")

        # Inference throughput at the default sliding window, 2048 x 2048.
        big = np.tile(synthetic_culture(["epithelial", "spindle", "roundcell"], shape=(1024, 1024), seed=1)[0], (2, 2))
        seconds = median_time(lambda: model.predict(big), 3)
        results["inference"] = {"image": list(big.shape), "tile_size": 512, "overlap": 0.25, "batch_size": 4,
                                "seconds": round(seconds, 2),
                                "megapixels_per_second": round(big.size / 1e6 / seconds, 2)}
        print(f"inference: {results['inference']['megapixels_per_second']} MP/s on {big.shape[0]}x{big.shape[1]}")

        if not args.skip_vit:
            results.update(vit_rows(tmp, big, iterations=args.vit_iterations, batch_size=args.vit_batch_size))

        # Peak memory of a very large image, predicted from a memory-mapped file in a fresh process.
        import tifffile

        path = tmp / "big.tif"
        field = synthetic_culture(["epithelial", "spindle", "roundcell"], shape=(1000, 1000), seed=2)[0]
        memmap = tifffile.memmap(path, shape=(args.big, args.big), dtype=np.uint16)
        for y in range(0, args.big, 1000):
            memmap[y:y + 1000] = np.tile(field, (1, -(-args.big // 1000)))[: min(1000, args.big - y), : args.big]
        memmap.flush()
        del memmap
        run = subprocess.run([sys.executable, "-c", BIG_IMAGE_SCRIPT, str(tmp / "model"), str(path)],
                             capture_output=True, text=True, check=True)
        big_result = json.loads(run.stdout.strip().splitlines()[-1])
        pixels = args.big * args.big
        results["large_image"] = {
            "side": args.big, "input_mb": round(pixels * 2 / 2**20, 1), "labels_mb": round(pixels / 2**20, 1),
            "float32_probabilities_would_need_mb": round(pixels * 4 * model.num_classes / 2**20, 1),
            "peak_rss_mb": round(big_result["peak_rss_mb"], 1), "seconds": round(big_result["seconds"], 1),
            "megapixels_per_second": round(pixels / 1e6 / big_result["seconds"], 2)}
        print(f"{args.big}x{args.big} image: peak RSS {big_result['peak_rss_mb']:.0f} MB "
              f"(input {pixels * 2 / 2**20:.0f} MB, labels {pixels / 2**20:.0f} MB), {big_result['seconds']:.1f} s")
    path = save_json(RESULTS / "speed.json", results)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
