"""Names that moved out of ``cellseg_monai.engines`` still resolve at their old paths (configs use them), with a
``DeprecationWarning``, and are the very objects of their new home."""

from __future__ import annotations

import importlib
import sys

import pytest

import cellseg_monai.engines as engines
import cellseg_monai.handlers as handlers


@pytest.mark.parametrize("name", ["meta_of", "CenternessWarmup"])
def test_package_attribute_is_the_handlers_object(name):
    with pytest.warns(DeprecationWarning, match=f"handlers.{name}"):
        assert getattr(engines, name) is getattr(handlers, name)


@pytest.mark.parametrize(
    "module,name", [("cellseg_monai.engines.meta", "meta_of"), ("cellseg_monai.engines.detection", "CenternessWarmup")]
)
def test_old_module_is_an_alias(module, name):
    sys.modules.pop(module, None)
    with pytest.warns(DeprecationWarning, match="deprecated"):
        mod = importlib.import_module(module)
    assert getattr(mod, name) is getattr(handlers, name)


def test_unknown_name_still_raises():
    with pytest.raises(AttributeError):
        engines.no_such_name  # noqa: B018
