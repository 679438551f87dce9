"""Weight averaging: the average's arithmetic, swapping it in and out, and its checkpoint."""

from __future__ import annotations

import keras
import numpy as np

from training.averaging import WeightAverage


def _model() -> keras.Model:
    inputs = keras.Input((3,))
    return keras.Model(inputs, keras.layers.Dense(2)(inputs))


def _set(model: keras.Model, value: float) -> None:
    model.set_weights([np.full(w.shape, value, "float32") for w in model.get_weights()])


def test_average_follows_the_ramped_momentum_every_n_steps():
    model = _model()
    average = WeightAverage(model, momentum=0.9, every=2)
    expected = None
    for step, value in enumerate([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], start=1):
        _set(model, value)
        average.on_train_batch_end(step)
        if step % 2 == 0:
            t = average.updates - 1  # this update's index
            m = min(0.9**2, (1 + t) / (10 + t))
            expected = value if expected is None else m * expected + (1 - m) * value
    assert average.updates == 3
    np.testing.assert_allclose(average.average[0], expected, rtol=1e-6)
    with average.applied():
        np.testing.assert_allclose(model.get_weights()[0], expected, rtol=1e-6)
    np.testing.assert_array_equal(model.get_weights()[0], 6.0)  # the trained weights are back


def test_average_state_round_trips_through_a_checkpoint(tmp_path):
    model = _model()
    average = WeightAverage(model, momentum=0.5, every=1)
    for value in (1.0, 3.0):
        _set(model, value)
        average.on_train_batch_end(0)
    np.savez(tmp_path / "average.npz", **average.state())
    restored = WeightAverage(model, momentum=0.5, every=1)
    with np.load(tmp_path / "average.npz") as saved:
        restored.load_state({k: saved[k] for k in saved.files})
    assert (restored.steps, restored.updates) == (2, 2)
    for a, b in zip(restored.average, average.average, strict=True):
        np.testing.assert_array_equal(a, b)
    empty = WeightAverage(model, momentum=0.5, every=8)  # saved before its first update
    np.savez(tmp_path / "empty.npz", **empty.state())
    with np.load(tmp_path / "empty.npz") as saved:
        restored.load_state({k: saved[k] for k in saved.files})
    assert restored.average is None and restored.updates == 0
