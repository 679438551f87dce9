"""Weight averaging: an exponential moving average (EMA) of every weight, kept on the host.

The average covers all of the classifier's weights, BatchNorm statistics included (as timm's
``ModelEmaV2`` does), so the averaged network is self-consistent and can be saved, validated
and exported like the trained one. Early on the momentum is ramped, ``min(m, (1+t)/(10+t))``
at update ``t``, so the random initial weights are forgotten quickly.

Reading ResNet50's weights from the backend takes 0.03 s and a training step of 128 images
1.4 s (bf16, a 2-core Zen 4, ``benchmarks/training_costs.py``; the first read after building
the model took 0.16 s), and the update itself passes over 25 M floats twice more; so the
average is updated every ``every`` steps with the momentum raised to that power: the same
horizon in steps, at an eighth of the cost.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import keras
import numpy as np


class WeightAverage(keras.callbacks.Callback):
    """Updates the average every ``every`` training steps; ``applied()`` swaps it into the model.

    ``momentum`` is per step, whatever ``every`` is.

    ``on_epoch_end`` validates the average on ``validation`` (``(x, one-hot y)``) and adds
    ``ema_val_accuracy`` and ``ema_val_loss`` to the epoch's logs, for the callbacks after it.
    """

    def __init__(
        self,
        classifier: keras.Model,
        momentum: float,
        validation: tuple[np.ndarray, np.ndarray] | None = None,
        batch_size: int = 256,
        every: int = 8,
    ):
        super().__init__()
        self.classifier, self.momentum, self.every = classifier, momentum, every
        self.validation, self.batch_size = validation, batch_size
        self.steps = 0
        self.updates = 0
        self.average: list[np.ndarray] | None = None

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        if self.steps % self.every:
            return
        current = self.classifier.get_weights()
        if self.average is None:
            self.average = [w.astype(np.float32, copy=True) for w in current]
        else:
            m = min(self.momentum**self.every, (1 + self.updates) / (10 + self.updates))
            for avg, w in zip(self.average, current, strict=True):
                avg *= m
                avg += (1 - m) * w
        self.updates += 1

    @contextmanager
    def applied(self) -> Iterator[None]:
        """The averaged weights in the classifier for the ``with`` block, then the trained."""
        if self.average is None:
            yield
            return
        trained = self.classifier.get_weights()
        self.classifier.set_weights(self.average)
        try:
            yield
        finally:
            self.classifier.set_weights(trained)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or self.validation is None:
            return
        x, y = self.validation
        with self.applied():
            scores = self.model.evaluate(
                x, y, batch_size=self.batch_size, verbose=0, return_dict=True
            )
        logs["ema_val_accuracy"] = float(scores["accuracy"])
        logs["ema_val_loss"] = float(scores["loss"])

    def state(self) -> dict[str, np.ndarray]:
        """What a checkpoint keeps: the step and update counts and the average."""
        arrays = {f"w{i}": w for i, w in enumerate(self.average or [])}
        return {"steps": np.array(self.steps), "updates": np.array(self.updates), **arrays}

    def load_state(self, saved: dict[str, np.ndarray]) -> None:
        self.steps, self.updates = int(saved["steps"]), int(saved["updates"])
        count = len(saved) - 2
        self.average = [np.array(saved[f"w{i}"]) for i in range(count)] if count else None
