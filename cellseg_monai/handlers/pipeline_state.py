"""The state of a training's data pipeline — random generators and what transforms remember — saved in its
checkpoints so that a resumed run continues exactly.

An interrupted training resumed from its ``checkpoint_epoch=k.pt`` repeats, bit for bit on CPU, what the run would
have done had it not been interrupted, only if every random draw after epoch k is the same, and every transform
that remembers earlier samples remembers the same. The draws come from:

- the global generators: torch (CPU and CUDA: shuffling, DataLoader worker seeds, dropout), numpy, Python ``random``;
- the generators that objects hold: each MONAI ``Randomizable`` transform has its own ``R`` (``numpy.random.
  RandomState``), seeded once when the ``DataLoader`` is built, so a resumed run would restart them from their seeds;
  some are made only when first used (``RandSpatialCropSamplesd`` gives its inner cropper one on each call); a
  transform without its own uses the class attribute ``Randomizable.R``, shared by all.

What transforms remember: an object of the pipeline with ``state_dict`` / ``load_state_dict`` methods (not a
torch module or optimizer), e.g. :class:`~cellseg_monai.transforms.copy_paste.CopyPaste` and its bank of objects
seen in earlier images.

:class:`PipelineState` gathers all of it as a ``state_dict`` (only tensors, numbers, strings, lists and dicts, so
``torch.load(..., weights_only=True)`` reads it back, as MONAI's ``CheckpointLoader`` does).
"""

from __future__ import annotations

import logging
import random
import types
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import torch
from monai.transforms import Randomizable

__all__ = ["PipelineState", "find_generators"]

logger = logging.getLogger(__name__)

_Generator = np.random.RandomState | np.random.Generator | torch.Generator | random.Random
_GENERATOR_TYPES = (np.random.RandomState, np.random.Generator, torch.Generator, random.Random)
# values that hold no generator: not searched
_LEAVES = (str, bytes, int, float, complex, bool, type(None), torch.Tensor, np.ndarray, np.generic, type)
_ROUTINES = (types.FunctionType, types.BuiltinFunctionType, types.MethodType, types.ModuleType)


def _is_stateful(obj: Any) -> bool:
    """A pipeline object that says what it remembers (``state_dict`` / ``load_state_dict``); modules and optimizers
    are saved by the checkpoint itself."""
    return (
        callable(getattr(obj, "state_dict", None))
        and callable(getattr(obj, "load_state_dict", None))
        and not isinstance(obj, (torch.nn.Module, torch.optim.Optimizer, type))
    )


def _walk(roots: Iterable[Any]) -> tuple[dict[str, _Generator], dict[str, Any]]:
    """Depth-first search of ``roots``: ``({path: generator}, {path: object})``, each object under its first path.

    A path names how the object is reached, e.g. ``"0.dataset.transform.transforms[7].R"`` (root index, then
    ``.attribute`` / ``[key]`` / ``[index]`` steps), so it is the same in two runs built from one config.
    """
    generators: dict[str, _Generator] = {}
    objects: dict[str, Any] = {}
    seen: set[int] = set()
    stack: list[tuple[Any, str]] = [(root, str(i)) for i, root in reversed(list(enumerate(roots)))]
    while stack:
        obj, path = stack.pop()
        if isinstance(obj, _LEAVES) or isinstance(obj, _ROUTINES) or id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, _GENERATOR_TYPES):
            generators[path] = obj
            continue
        objects[path] = obj
        if isinstance(obj, Mapping):
            children = [(v, f"{path}[{k!r}]") for k, v in obj.items()]
        elif isinstance(obj, (list, tuple)):
            children = [(v, f"{path}[{i}]") for i, v in enumerate(obj)]
        elif hasattr(obj, "__dict__"):
            children = [(v, f"{path}.{k}") for k, v in vars(obj).items()]
        else:
            continue
        stack.extend(reversed(children))
    return generators, objects


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
    return list(_walk(roots)[0].values())


def _kind(gen: _Generator) -> str:
    if isinstance(gen, np.random.RandomState):
        return "numpy.RandomState"
    if isinstance(gen, np.random.Generator):
        return "numpy.Generator"
    return "torch.Generator" if isinstance(gen, torch.Generator) else "random.Random"


def _new_generator(kind: str, state: Any) -> _Generator:
    """An unseeded generator of the :func:`_kind` a state was taken from."""
    if kind == "numpy.RandomState":
        return np.random.RandomState()
    if kind == "numpy.Generator":
        return np.random.Generator(getattr(np.random, str(state["bit_generator"]))())
    return torch.Generator() if kind == "torch.Generator" else random.Random()


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


class PipelineState:
    """A stateful object (``state_dict`` / ``load_state_dict``) for a checkpoint: every random generator state that a
    training draws from — the global torch (CPU, and CUDA once initialised), numpy and Python generators, MONAI's
    shared ``Randomizable.R``, those that :func:`find_generators` finds in ``roots()`` — and the ``state_dict`` of
    each stateful pipeline object there, each by its path.

    Args:
        roots: returns the objects to search when a state is taken or restored (a callable, so that objects built
            after this one, e.g. a trainer's loss, are found).

    ``load_state_dict`` gives a generator that the checkpoint has but this training has not made yet (made on first
    use) to the object that held it, and raises ``ValueError`` when this training holds a generator or stateful
    object the checkpoint does not know (it was built differently).
    """

    def __init__(self, roots: Callable[[], Iterable[Any]]) -> None:
        self.roots = roots

    def state_dict(self) -> dict[str, Any]:
        generators, objects = _walk(self.roots())
        state: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "numpy": _encode(np.random.get_state(legacy=False)),
            "python": _encode(random.getstate()),
            "monai": _get_state(Randomizable.R),
            "generators": {path: {"kind": _kind(gen), "state": _get_state(gen)} for path, gen in generators.items()},
            "objects": {path: obj.state_dict() for path, obj in objects.items() if _is_stateful(obj)},
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        generators, objects = _walk(self.roots())
        saved, remembered = state["generators"], state["objects"]
        unknown = [path for path in generators if path not in saved]
        unknown += [path for path, obj in objects.items() if _is_stateful(obj) and path not in remembered]
        if unknown:
            raise ValueError(
                f"the checkpoint holds no state of {len(unknown)} random generator(s) or stateful object(s) of this "
                f"training ({', '.join(unknown[:3])}{' ...' if len(unknown) > 3 else ''}): it was built from a "
                "different config"
            )
        torch.set_rng_state(state["torch"])
        np.random.set_state(_decode(state["numpy"]))
        version, internal, gauss = _decode(state["python"])
        random.setstate((version, tuple(internal), gauss))
        _set_state(Randomizable.R, state["monai"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        for path, entry in saved.items():
            gen = generators.get(path)
            if gen is None:  # made on first use in the saved run: give it to its holder now
                holder, dot, name = path.rpartition(".")
                if not dot or holder not in objects or not name.isidentifier():
                    logger.debug("random generator %s of the checkpoint has no holder in this training", path)
                    continue
                gen = _new_generator(entry["kind"], entry["state"])
                setattr(objects[holder], name, gen)
            _set_state(gen, entry["state"])
        for path, obj_state in remembered.items():
            if path in objects:
                objects[path].load_state_dict(obj_state)
