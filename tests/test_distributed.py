"""Training on several processes (torch.distributed, launched by torchrun; gloo on the CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from safetensors.torch import load_file

from cellmixer._errors import CellmixerError
from cellmixer.engine._distributed import Distributed

# A training whose loss is a mean over samples and whose network normalizes each sample on its own (group
# norm): one process on the whole batch and two on its halves must then take the same steps.
SCRIPT = textwrap.dedent('''
    import sys
    from dataclasses import dataclass

    import numpy as np
    import torch

    from cellmixer.engine import METHODS, Method, OptimizationSettings, SegmentationModel, Training


    class Mean(Method):
        name, task, model_title, train_command = "mean", "mean", "mean model", "python script.py"


    METHODS["mean"] = Mean


    class MeanTraining(Training):
        task = "mean"

        def new_model(self):
            return SegmentationModel.new(["x"], width=4, depth=1, norm="group", normalization={"method": "percentile"})

        def objective(self, model):
            def next_batch(rng, batch_size):
                images = rng.normal(size=(batch_size, 1, 16, 16)).astype(np.float32)
                return images, (images[:, 0] > 0).astype(np.float32)

            def loss_fn(output, target):
                return torch.mean((torch.sigmoid(output[:, 1].float()) - target) ** 2)

            return next_batch, loss_fn, None


    # fp32: bfloat16 (the CPU default where it is native) rounds a half batch differently from a whole one
    config = OptimizationSettings(iterations=6, batch_size=4, learning_rate=0.5, checkpoint_every=3, precision="fp32")
    MeanTraining(config, sys.argv[1], device="cpu", threads=1, progress=False).fit()
''')


def _run(command, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]


def test_two_processes_train_as_one(tmp_path):
    """torchrun with 2 CPU processes (gloo): each trains on half of every batch; the gradients averaged
    across them are those of the whole batch, so the weights are those of one process, up to rounding."""
    (tmp_path / "script.py").write_text(SCRIPT)
    _run([sys.executable, "script.py", "one"], tmp_path)
    _run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29541",
          "script.py", "two"], tmp_path)
    one, two = (load_file(str(tmp_path / run / "weights.safetensors")) for run in ("one", "two"))
    assert one.keys() == two.keys()
    assert max(float((one[k] - two[k]).abs().max()) for k in one) < 1e-5
    # ... although process 0 saw only its half of each batch: its losses are not the whole batch's
    losses = [[row["loss"] for row in json.loads((tmp_path / run / "checkpoint" / "state.json").read_text())[
        "history"]] for run in ("one", "two")]
    assert len(losses[1]) == 6 and losses[0][0] != losses[1][0]
    record = json.loads((tmp_path / "two" / "config.json").read_text())["training"]
    assert record["processes"] == 2 and record["iterations"] == 6


def test_environment_and_batch_share():
    run = Distributed.from_environment({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"})
    images, targets = run.share(np.arange(8), np.arange(8) * 10)
    assert images.tolist() == [1, 3, 5, 7] and targets.tolist() == [10, 30, 50, 70]
    with pytest.raises(CellmixerError, match="--batch-size 5: with 2 processes it must be a multiple of 2"):
        run.check_batch(5)
    assert Distributed.from_environment({"WORLD_SIZE": "1"}) is None
