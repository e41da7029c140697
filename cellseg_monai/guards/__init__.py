"""guards: checks that keep the ``cellseg-monai`` commands safe by default.

Nothing is lost (outputs never overlap or silently replace inputs, earlier outputs or user-made labels), a bad
option is refused before anything runs, and every problem reaches the user as one line naming the file or option
(see ``cellseg_monai/cli.py``).
"""

from __future__ import annotations

from cellseg_monai.guards.errors import (
    EXIT_DATA,
    EXIT_USAGE,
    SkippedInputs,
    UsageError,
    describe_error,
    hidden_tracebacks,
    root_cause,
)
from cellseg_monai.guards.inputs import protected_folders, screen_images
from cellseg_monai.guards.lock import LOCK_FILE, FolderInUseError, RunLock, hold_folder, lock_holder, release_held
from cellseg_monai.guards.options import check_device, check_flag, check_overrides, check_setting, refuse_unknown
from cellseg_monai.guards.outputs import check_existing_outputs, check_output_dir
from cellseg_monai.guards.weights import check_weights

__all__ = [
    "EXIT_DATA",
    "EXIT_USAGE",
    "LOCK_FILE",
    "FolderInUseError",
    "RunLock",
    "SkippedInputs",
    "UsageError",
    "check_device",
    "check_existing_outputs",
    "check_flag",
    "check_output_dir",
    "check_overrides",
    "check_setting",
    "check_weights",
    "describe_error",
    "hidden_tracebacks",
    "hold_folder",
    "lock_holder",
    "protected_folders",
    "refuse_unknown",
    "release_held",
    "root_cause",
    "screen_images",
]
