"""The random number generator states of a training, saved in its checkpoints so that a resumed run continues exactly.

An interrupted training resumed from its ``checkpoint_epoch=k.pt`` repeats, bit for bit on CPU, what the run would
have done had it not been interrupted, only if every random draw after epoch k is the same. The draws come from:

- the global generators: torch (CPU and CUDA: shuffling, DataLoader worker seeds, dropout), numpy, Python ``random``;
- the generators that objects hold: each MONAI ``Randomizable`` transform has its own ``R`` (``numpy.random.
  RandomState``), seeded once when the ``DataLoader`` is built, so a resumed run would restart them from their seeds.

:class:`RandomStates` gathers both kinds as a ``state_dict`` (only tensors, numbers, strings, lists and dicts, so
``torch.load(..., weights_only=True)`` reads it back, as MONAI's ``CheckpointLoader`` does).
"""

from __future__ import annotations

import random
import types
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import torch

__all__ = ["RandomStates", "find_generators"]

_Generator = np.random.RandomState | np.random.Generator | torch.Generator | random.Random
_GENERATOR_TYPES = (np.random.RandomState, np.random.Generator, torch.Generator, random.Random)
# values that hold no generator: not searched
_LEAVES = (str, bytes, int, float, complex, bool, type(None), torch.Tensor, np.ndarray, np.generic, type)
_ROUTINES = (types.FunctionType, types.BuiltinFunctionType, types.MethodType, types.ModuleType)


def find_generators(*roots: Any) -> list[_Generator]:
    """Random generators held by ``roots`` and by everything they reference (attributes, dict values, list items).

    Args:
        roots: objects to search, e.g. a ``DataLoader`` (its dataset's transforms), a loss, a batch preparer.

    Returns:
        ``numpy.random.RandomState`` / ``Generator``, ``torch.Generator`` and ``random.Random`` objects, each once,
        in a depth-first order fixed by how the objects were built (attribute insertion order, list order), so two
        runs built from one config list them in the same order. Tensors, arrays, functions and modules are not
        searched.
    """
    found: list[_Generator] = []
    seen: set[int] = set()
    stack: list[Any] = list(reversed(roots))
    while stack:
        obj = stack.pop()
        if isinstance(obj, _LEAVES) or isinstance(obj, _ROUTINES) or id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, _GENERATOR_TYPES):
            found.append(obj)
            continue
        if isinstance(obj, Mapping):
            children: Iterable[Any] = list(obj.values())
        elif isinstance(obj, (list, tuple)):
            children = obj
        elif hasattr(obj, "__dict__"):
            children = list(vars(obj).values())
        else:
            continue
        stack.extend(reversed(list(children)))
    return found


def _encode(value: Any) -> Any:
    """numpy arrays/scalars → tensors/numbers (for ``weights_only`` loading); containers recursively."""
    if isinstance(value, np.ndarray):
        return {"ndarray": torch.from_numpy(value.astype(np.int64)), "dtype": str(value.dtype)}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, Mapping):
        if set(value) == {"ndarray", "dtype"}:
            return value["ndarray"].numpy().astype(value["dtype"])
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def _get_state(gen: _Generator) -> Any:
    if isinstance(gen, np.random.RandomState):
        return _encode(gen.get_state(legacy=False))
    if isinstance(gen, np.random.Generator):
        return _encode(gen.bit_generator.state)
    if isinstance(gen, torch.Generator):
        return gen.get_state()
    return _encode(gen.getstate())


def _set_state(gen: _Generator, state: Any) -> None:
    if isinstance(gen, np.random.RandomState):
        gen.set_state(_decode(state))
    elif isinstance(gen, np.random.Generator):
        gen.bit_generator.state = _decode(state)
    elif isinstance(gen, torch.Generator):
        gen.set_state(state)
    else:
        version, internal, gauss = _decode(state)
        gen.setstate((version, tuple(internal), gauss))


class RandomStates:
    """A stateful object (``state_dict`` / ``load_state_dict``) for a checkpoint: every random generator state that a
    training draws from — the global torch (CPU, and CUDA once initialised), numpy and Python generators and those
    that :func:`find_generators` finds in ``roots()``.

    Args:
        roots: returns the objects to search when a state is taken or restored (a callable, so that objects built
            after this one, e.g. a trainer's loss, are found).

    ``load_state_dict`` raises ``ValueError`` when the checkpoint holds a different number or kind of generators
    (it was written by a training built differently).
    """

    def __init__(self, roots: Callable[[], Iterable[Any]]) -> None:
        self.roots = roots

    def _generators(self) -> list[_Generator]:
        return find_generators(*self.roots())

    def state_dict(self) -> dict[str, Any]:
        gens = self._generators()
        state: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "numpy": _encode(np.random.get_state(legacy=False)),
            "python": _encode(random.getstate()),
            "kinds": [type(g).__name__ for g in gens],
            "generators": [_get_state(g) for g in gens],
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        gens = self._generators()
        kinds = [type(g).__name__ for g in gens]
        if list(state["kinds"]) != kinds:
            raise ValueError(
                f"the checkpoint holds {len(state['kinds'])} random generator states ({', '.join(state['kinds'])}); "
                f"this training has {len(kinds)} ({', '.join(kinds)}): it was built from a different config"
            )
        torch.set_rng_state(state["torch"])
        np.random.set_state(_decode(state["numpy"]))
        version, internal, gauss = _decode(state["python"])
        random.setstate((version, tuple(internal), gauss))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        for gen, gen_state in zip(gens, state["generators"], strict=True):
            _set_state(gen, gen_state)
