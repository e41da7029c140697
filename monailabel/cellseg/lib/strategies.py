"""Active learning: which image to annotate next (``POST /activelearning/<strategy>``).

``uncertainty`` runs a served model that has a foreground probability (request ``{"model": <bundle>}``; default
``impartial``) on every image without a label and proposes the one it is least sure about: the highest mean binary
entropy of its foreground probability (:func:`cellseg_monai.metrics.foreground_entropy`, reported by the infer task
as ``uncertainty``). Scores are cached per image and served weights file (path and modification time), so a request
after a training scores the images again and a repeated request is immediate. ``random`` (MONAI Label's) is the
fallback for bundles without a foreground probability.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.strategy import Strategy

logger = logging.getLogger(__name__)

__all__ = ["Uncertainty"]


class Uncertainty(Strategy):
    """Propose the unlabelled image with the highest foreground entropy under a served model.

    Args:
        infers: the app's infer tasks by bundle name.
        default_model: the bundle used when the request names none.
    """

    def __init__(self, infers: dict[str, InferTask], default_model: str = "impartial") -> None:
        super().__init__("The image the model is least sure about: highest mean entropy of its foreground probability")
        self.infers = infers
        self.default_model = default_model
        self._cache: dict[tuple[str, str, str, float], float] = {}

    def score(self, model: str, image_id: str, datastore: Datastore) -> float:
        task = self.infers[model]
        weights = task.get_path()
        key = (model, image_id, str(weights), os.path.getmtime(weights) if weights else 0.0)
        if key not in self._cache:
            label_file, result = task({"image": datastore.get_image_uri(image_id), "result_extension": ".png"})
            if isinstance(label_file, str) and os.path.isfile(label_file):
                os.unlink(label_file)  # only the score is wanted
            if "uncertainty" not in (result or {}):
                raise ValueError(f"{model} gives no foreground probability: use the 'random' strategy with it")
            self._cache[key] = float(result["uncertainty"])
        return self._cache[key]

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any] | None:
        model = request.get("model") or self.default_model
        if model not in self.infers:
            raise ValueError(f"model {model!r} is not served; served: {sorted(self.infers)}")
        images = datastore.get_unlabeled_images(request.get("label_tag"), request.get("labels"))
        if not images:
            return None
        scores = {image: self.score(model, image, datastore) for image in images}
        best = max(sorted(scores), key=lambda i: scores[i])
        logger.info("uncertainty (%s): %s", model, scores)
        return {"id": best, "weight": scores[best], "model": model, "scores": scores}
