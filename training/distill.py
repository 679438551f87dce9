"""Distillation from a teacher (``teacher``): consistency between an upload and its original.

Each training batch is cropped, flipped and mixed as usual; the teacher (an exported version,
a finished run or a ``.weights.h5`` of the same architecture) then predicts those images
*before* the upload forms (colour jitter, gray, JPEG) are applied to them, and its
probabilities become the batch's targets (``teacher_weight`` of them; the rest stays the
label). So the student is taught to give a re-encoded image the answer the teacher gives the
clean one, and to keep the teacher's answers on clean images, where training on the labels of
heavily re-encoded images alone cost clean accuracy (measured in ``docs/training.md``).

With the teacher as the run's ``init_from`` this is self-distillation: the student starts as
the teacher and is pulled towards it wherever the upload forms would move it.
"""

from __future__ import annotations

import numpy as np

from training.config import TrainConfig
from training.model import build_classifier, wrap_for_input
from training.warm_start import load_initial_weights


class TeacherTargets:
    """``(clean images, label targets) -> targets``: the teacher's probabilities on the clean
    images, blended with the label targets as ``weight * teacher + (1 - weight) * labels``."""

    def __init__(self, model, weight: float):
        if not 0 < weight <= 1:
            raise ValueError("the teacher's weight must be in (0, 1]")
        self.model, self.weight = model, weight

    @classmethod
    def from_config(cls, cfg: TrainConfig) -> TeacherTargets:
        """The teacher ``cfg.teacher`` names, with the run's architecture, at its served size."""
        classifier = build_classifier("none", cfg.dropout, stem=cfg.stem)
        load_initial_weights(classifier, cfg.teacher)
        classifier.trainable = False
        return cls(wrap_for_input(classifier, cfg.size_at(cfg.epochs - 1)), cfg.teacher_weight)

    def __call__(self, images: np.ndarray, targets: np.ndarray) -> np.ndarray:
        probs = np.asarray(self.model.predict_on_batch(images), dtype=np.float32)
        return self.weight * probs + (1 - self.weight) * targets
