"""Image metadata of engine batches, for handlers that report per-image results (``MetricsSaver(batch_transform=...)``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["meta_of"]


def meta_of(key: str = "image") -> Callable[[Any], list[dict]]:
    """Return ``f(batch) -> [meta dict per image]`` reading ``batch[i][key].meta`` (decollated) or ``batch[key].meta``.

    MONAI's ``MetricsSaver(batch_transform=...)`` uses it to name the rows of its per-image CSVs by file;
    in a bundle config: ``"batch_transform": "$cellseg_monai.handlers.meta_of('image')"``.
    """

    def extract(batch: Any) -> list[dict]:
        items: Sequence[Any] = batch if isinstance(batch, (list, tuple)) else [batch]
        metas: list[dict] = []
        for item in items:
            value = item[key] if isinstance(item, dict) else item
            meta = getattr(value, "meta", None) or {}
            if isinstance(meta.get("filename_or_obj"), (list, tuple)):  # collated batch: one entry per image
                metas.extend(
                    {k: v[i] for k, v in meta.items() if isinstance(v, (list, tuple))}
                    for i in range(len(meta["filename_or_obj"]))
                )
            else:
                metas.append(dict(meta))
        return metas

    return extract
