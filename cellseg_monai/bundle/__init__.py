"""Helpers that bundle configs call: where the bundle lives, which weights to load, distributed set-up, one-line
errors."""

from __future__ import annotations

from .distributed import ddp_device_ids, distributed_device, finalize_distributed, init_distributed, is_not_rank0
from .errors import install_error_report
from .paths import existing_checkpoint, is_bundle_dir, locate_bundle_root

__all__ = [
    "ddp_device_ids",
    "distributed_device",
    "existing_checkpoint",
    "finalize_distributed",
    "init_distributed",
    "install_error_report",
    "is_not_rank0",
    "locate_bundle_root",
    "is_bundle_dir",
]
