"""Optimisation helpers (MONAI's ``monai.optimizers`` room): learning-rate schedules."""

from __future__ import annotations

from .lr_scheduler import BudgetOneCycleLR

__all__ = ["BudgetOneCycleLR"]
