"""The README's "Use from Python" example runs as written, and its labels are what the bundle's inference gives."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import numpy as np
import tifffile

REPO = Path(__file__).resolve().parents[1]


def _python_block(markdown: str, heading: str) -> str:
    """The first fenced ```python block after ``heading``."""
    section = markdown[markdown.index(heading) :]
    match = re.search(r"```python\n(.*?)```", section, flags=re.S)
    assert match, f"no python block under {heading!r}"
    return match.group(1)


def test_the_use_from_python_example_runs_on_the_sample():
    code = _python_block((REPO / "README.md").read_text(), "### Use from Python")
    namespace: dict = {}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "README.md: Use from Python", "exec"), namespace)
    labels, table, image = namespace["labels"], namespace["table"], namespace["image"]
    assert labels.shape == image.shape[:2] and labels.dtype == np.uint16
    ids = np.unique(labels[labels > 0])
    assert len(ids) > 0 and printed.getvalue().startswith(f"{len(ids)} objects")
    np.testing.assert_array_equal(table["id"], ids)
    np.testing.assert_array_equal(table["area"], [np.count_nonzero(labels == i) for i in ids])
    # the example reads the first sample image as a file would be read by the CLI: same array
    first = sorted((REPO / "cellseg_monai" / "data" / "sample" / "images").glob("*.tif"))[0]
    np.testing.assert_array_equal(image, tifffile.imread(first))
