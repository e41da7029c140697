"""Distributed-training helpers that bundle configs call (``torchrun`` + PyTorch DDP), so configs hold no conditions.

    torchrun --nproc_per_node=N -m monai.bundle run --config_file "['configs/train.json','configs/multi_gpu_train.json']"

NCCL on GPUs (one GPU per process, ``LOCAL_RANK``), gloo on CPU.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

__all__ = ["ddp_device_ids", "distributed_device", "finalize_distributed", "init_distributed", "is_not_rank0"]


def is_not_rank0() -> bool:
    """True in the processes of a distributed run other than rank 0 (they skip logging and writing)."""
    return dist.is_available() and dist.is_initialized() and dist.get_rank() > 0


def distributed_device() -> torch.device:
    """``cuda:<LOCAL_RANK>`` when CUDA is available, else the CPU."""
    if torch.cuda.is_available():
        return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
    return torch.device("cpu")


def ddp_device_ids(device: torch.device) -> list[torch.device] | None:
    """``device_ids`` argument of ``DistributedDataParallel``: the process's GPU, or None on the CPU."""
    return [device] if device.type == "cuda" else None


def init_distributed(device: torch.device | None = None) -> None:
    """Join the process group started by ``torchrun`` (NCCL for CUDA, gloo for CPU) once; select the process's GPU."""
    device = device or distributed_device()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)


def finalize_distributed() -> None:
    """Leave the process group, if one was joined, once every rank has arrived (no rank tears gloo/NCCL down while
    another still has work in flight)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
