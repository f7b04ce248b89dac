"""Predict whole slides and plates on a SLURM cluster with dask-jobqueue (not run in the test suite).

    pip install 'cellmixer[distributed]' dask-jobqueue
    python examples/slurm_dask_jobqueue.py models/nuclei slides/ --output nuclei/ --jobs 8

Each SLURM job is one dask worker (one process, ``--cores`` threads for torch); the chunks of every large
image (Zarr, OME-Zarr, TIFFs larger than --chunk-size) go to the workers, and the results are written to
OME-Zarr on the shared file system, which every node must see at the same path. Run it again after a
failure: finished chunks are kept and only the rest is predicted. On the command line the same is
`cellmixer nuclei predict ... --scheduler tcp://SCHEDULER:8786` against a cluster started by other means
(for example `dask scheduler` and `dask worker` in your own job scripts).
"""

from __future__ import annotations

import argparse

from dask_jobqueue import SLURMCluster  # pip install dask-jobqueue

from cellmixer.engine import Chunking
from cellmixer.methods.nuclei import predict_nuclei


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("inputs", nargs="+")
    parser.add_argument("--output", required=True)
    parser.add_argument("--jobs", type=int, default=4, help="SLURM jobs, one dask worker each")
    parser.add_argument("--cores", type=int, default=4, help="cores per job")
    parser.add_argument("--memory", default="16GB", help="memory per job")
    parser.add_argument("--partition", default=None, help="SLURM partition (queue)")
    parser.add_argument("--walltime", default="02:00:00")
    parser.add_argument("--chunk-size", type=int, default=4096)
    args = parser.parse_args()

    cluster = SLURMCluster(cores=args.cores, processes=1, memory=args.memory, queue=args.partition,
                           walltime=args.walltime, job_extra_directives=["--exclusive"] if args.cores > 8 else [])
    cluster.scale(jobs=args.jobs)
    print(cluster.job_script())  # what each SLURM job runs
    try:
        rows = predict_nuclei(args.model, args.inputs, args.output, device="auto",
                              chunking=Chunking(chunk_size=args.chunk_size, scheduler=cluster.scheduler_address))
        print(f"segmented {len(rows)} images -> {args.output}")
    finally:
        cluster.close()


if __name__ == "__main__":
    main()
