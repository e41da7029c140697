"""Helpers that bundle configs call and that find bundles: where a bundle lives (by name or folder), which weights
to load, distributed set-up, one-line errors."""

from __future__ import annotations

from .distributed import ddp_device_ids, distributed_device, finalize_distributed, init_distributed, is_not_rank0
from .errors import install_error_report
from .paths import (
    BUNDLE_ALIASES,
    bundle_names,
    bundles_dir,
    existing_checkpoint,
    find_bundle,
    is_bundle_dir,
    locate_bundle_root,
)

__all__ = [
    "BUNDLE_ALIASES",
    "bundle_names",
    "bundles_dir",
    "find_bundle",
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
