"""networks/blocks."""

from __future__ import annotations
