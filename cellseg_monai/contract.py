"""The output contract of every bundle: the keys that inference and evaluation post-processing leave in each
(decollated) data dict, whatever the method.

Each bundle's ``postprocessing`` (``inference.json``) and ``validate#postprocessing_transforms`` (``train.json``)
turns its network's raw output into these keys and ends with
:class:`cellseg_monai.transforms.InstanceOutputsd`, which checks them and adds :data:`SCORED_KEY`. Because every
bundle leaves the same keys, one ``evaluate.json`` (the same file in every bundle), one metric wiring
(``from_engine([LABELS_KEY | SCORED_KEY | FG_PROB_KEY, "label"])``), one saver
(``SaveInstancesd(keys=LABELS_KEY, prob_key=SCORE_KEY, attributes_key=ATTRIBUTES_KEY)``) and the MONAI Label app
serve all of them.

=================  =====================================================================================  =========
key                what it holds                                                                          present
=================  =====================================================================================  =========
``pred``           (1, H, W) int32 instance labels, 0 = background, objects 1..N                           always
``score``          (1, H, W) float32 in [0, 1]; its mean over an object is that object's score (a          always
                   detector's confidence painted over the object, or the foreground probability for
                   methods that score no object)
``pred_scored``    (2, H, W) float32: ``pred`` and ``score`` stacked, what score-ranked metrics read        always
                   (``ap@t``, ``mAP``, ``coco_ap``)
``fg_prob``        (1, H, W) float32 foreground probability in [0, 1]; what pixel metrics read              when the
                                                                                                           method
                                                                                                           has one
``attributes``     (F, H, W) float32 per-object attributes painted over each object (CSV columns named      when the
                   by the config id ``attribute_names``)                                                  method
                                                                                                           has some
=================  =====================================================================================  =========

The network's raw output also arrives under ``pred`` (MONAI's evaluators write it there); post-processing
replaces it with the labels.
"""

from __future__ import annotations

__all__ = [
    "ATTRIBUTES_KEY",
    "FG_PROB_KEY",
    "LABELS_KEY",
    "OPTIONAL_KEYS",
    "OUTPUT_KEYS",
    "REQUIRED_KEYS",
    "SCORED_KEY",
    "SCORE_KEY",
]

LABELS_KEY = "pred"
SCORE_KEY = "score"
SCORED_KEY = "pred_scored"
FG_PROB_KEY = "fg_prob"
ATTRIBUTES_KEY = "attributes"

#: every key of the contract and what it holds
OUTPUT_KEYS: dict[str, str] = {
    LABELS_KEY: "(1, H, W) int32 instance labels, 0 = background",
    SCORE_KEY: "(1, H, W) float32 in [0, 1], mean over an object = its score",
    SCORED_KEY: "(2, H, W) float32, labels and score stacked (score-ranked metrics)",
    FG_PROB_KEY: "(1, H, W) float32 foreground probability in [0, 1] (methods that have one)",
    ATTRIBUTES_KEY: "(F, H, W) float32 per-object attributes (methods that have some)",
}
#: keys every bundle's post-processing leaves
REQUIRED_KEYS: tuple[str, ...] = (LABELS_KEY, SCORE_KEY, SCORED_KEY)
#: keys a bundle leaves when its method has them
OPTIONAL_KEYS: tuple[str, ...] = (FG_PROB_KEY, ATTRIBUTES_KEY)
