"""Data-parallel processes through torch.distributed, started as torchrun starts them.

`grove train R --nproc N` re-launches itself through torchrun's own launcher; `torchrun -m grove
train R` works the same. Each process finds its rank in the environment torchrun sets.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Processes:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_processes(device_type: str) -> Processes:
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        return Processes()
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        dist.init_process_group(backend)
    return Processes(dist.get_rank(), int(os.environ["LOCAL_RANK"]), dist.get_world_size())


def close_processes() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def broadcast(obj, procs: Processes):
    """rank 0's value of a picklable object, on every rank."""
    if not procs.active:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj, procs: Processes) -> list:
    if not procs.active:
        return [obj]
    out = [None] * procs.world_size
    dist.all_gather_object(out, obj)
    return out


def any_rank(flag: torch.Tensor, procs: Processes) -> bool:
    """True if the flag is set on any rank (one host sync)."""
    flag = flag.clone().float()
    if procs.active:
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def barrier(procs: Processes) -> None:
    if procs.active:
        dist.barrier()


def launch(argv: list[str], nproc: int, nnodes: str = "1", node_rank: int = 0, rdzv_endpoint: str | None = None) -> None:
    """Run `python -m grove <argv>` in nproc processes per node, as torchrun would."""
    from torch.distributed.run import main as torchrun

    # Share the cores instead of torchrun's one thread per process; keep its log to errors.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    os.environ.setdefault("LOGLEVEL", "ERROR")
    args = [f"--nproc-per-node={nproc}", f"--nnodes={nnodes}"]
    if rdzv_endpoint:
        args += [f"--node-rank={node_rank}", "--rdzv-backend=c10d", f"--rdzv-endpoint={rdzv_endpoint}"]
    else:
        args += ["--standalone"]
    torchrun(args + ["-m", "grove", *argv])
