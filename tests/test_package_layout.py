"""Every module is reachable by its dotted path, as bundle configs (``"_target_": "cellseg_monai.x.y.Name"``) and
MONAI's ``locate`` need: a package must not re-export a name that hides one of its submodules."""

from __future__ import annotations

import importlib
import pkgutil

import pytest
from monai.utils.module import locate

import cellseg_monai

MODULES = [m.name for m in pkgutil.walk_packages(cellseg_monai.__path__, "cellseg_monai.")]


@pytest.mark.parametrize("name", MODULES)
def test_submodule_is_not_shadowed(name):
    module = importlib.import_module(name)
    parent, _, child = name.rpartition(".")
    assert getattr(importlib.import_module(parent), child) is module, f"{parent} re-exports a name {child!r}"
    public = [n for n in getattr(module, "__all__", []) if not n.isupper()]
    for attr in public[:3]:  # what a config would write
        assert locate(f"{name}.{attr}") is getattr(module, attr)
