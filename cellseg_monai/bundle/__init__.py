"""Helpers that bundle configs call: where the bundle lives, which weights to load."""

from __future__ import annotations

from .paths import existing_checkpoint, locate_bundle_root

__all__ = ["existing_checkpoint", "locate_bundle_root"]
