"""Training on several processes or GPUs with torch.distributed (DistributedDataParallel), launched by torchrun.

    torchrun --nproc-per-node 2 -m cellmixer nuclei train images/ --output models/nuclei --batch-size 8

Every process draws the same batch from the same random state (the run's seed) and trains on its share
(process ``r`` of ``n`` takes crops ``r, r + n, ...``); DistributedDataParallel averages the gradients,
so each step sees the whole batch, as one process would. Process 0 alone writes checkpoints, the model
and its record. What differs from one process (the documented nondeterminism, docs/scale.md):

- losses computed over a whole batch (the Tversky and log-Dice losses sum over all the batch's pixels
  before dividing) are computed over each process's share; the averaged gradient is then close to, not
  equal to, the whole batch's;
- batch normalization takes its statistics over each process's share (on GPUs the layers become
  SyncBatchNorm, whose statistics are over the whole batch; torch has no SyncBatchNorm on the CPU);
- sums of gradients across processes are rounded in another order.
"""

from __future__ import annotations

import dataclasses
import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from .._errors import CellmixerError


@dataclasses.dataclass(frozen=True)
class Distributed:
    """This process's place in a run of several (``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``)."""

    rank: int
    world_size: int
    local_rank: int

    @classmethod
    def from_environment(cls, environ=None) -> "Distributed | None":
        """The run that ``torchrun`` started, or None for a single process.

        >>> Distributed.from_environment({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}).is_main
        False
        >>> Distributed.from_environment({}) is None
        True
        """
        environ = os.environ if environ is None else environ
        size = int(environ.get("WORLD_SIZE", "1"))
        if size <= 1:
            return None
        return cls(int(environ["RANK"]), size, int(environ.get("LOCAL_RANK", environ["RANK"])))

    @property
    def is_main(self) -> bool:
        """Process 0: the one that writes files and shows progress."""
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """This process's device: its own GPU (``LOCAL_RANK``) when training on GPUs."""
        return torch.device("cuda", self.local_rank) if device.type == "cuda" else device

    def start(self, device: torch.device) -> None:
        """Join the process group (NCCL on GPUs, gloo on the CPU)."""
        if not dist.is_initialized():
            if device.type == "cuda":
                torch.cuda.set_device(device)
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")

    def stop(self) -> None:
        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()

    def check_batch(self, batch_size: int) -> None:
        if batch_size % self.world_size:
            raise CellmixerError(f"--batch-size {batch_size}: with {self.world_size} processes it must be a multiple "
                                 f"of {self.world_size} (each process trains on an equal share).")

    def wrap(self, network: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """``network`` in DistributedDataParallel (batch norms synchronized on GPUs)."""
        if device.type == "cuda":
            network = torch.nn.SyncBatchNorm.convert_sync_batchnorm(network)
        return DistributedDataParallel(network, device_ids=[device.index] if device.type == "cuda" else None)

    def share(self, images, targets):
        """This process's share of a batch drawn by every process alike."""
        return images[self.rank::self.world_size], targets[self.rank::self.world_size]
