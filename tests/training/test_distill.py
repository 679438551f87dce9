"""``teacher``: the targets are a teacher's answers on each batch before the upload forms."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.helpers import smooth_photo, tiny_config
from training.augment import AugmentedBatches, UploadAugmentation, one_hot
from training.config import ConfigError
from training.distill import TeacherTargets
from training.export import describe_weights_source
from training.run import CONFIG, load_run_model
from training.train import train


class RecordingTeacher:
    """Answers class ``sum of the pixels % 10`` with certainty, and keeps every batch shown."""

    def __init__(self):
        self.shown: list[np.ndarray] = []

    def __call__(self, images, targets):
        self.shown.append(images.copy())
        return one_hot(images.reshape(len(images), -1).sum(1) % 10)


def test_the_teacher_sees_each_batch_before_the_upload_forms_and_gives_its_targets():
    x = np.stack([smooth_photo(i) for i in range(24)])
    y = np.zeros(24, dtype=np.int64)  # every label class 0: the teacher's targets differ
    upload = UploadAugmentation(grayscale_prob=0.5, jpeg_prob=1.0, jpeg_quality=(30, 60))
    teacher = RecordingTeacher()
    clean = AugmentedBatches(x, y, batch_size=8, seed=4, mix="cutmix", mix_prob=1.0)
    taught = AugmentedBatches(
        x, y, batch_size=8, seed=4, mix="cutmix", mix_prob=1.0, upload=upload, teacher=teacher
    )
    for i in range(len(clean)):
        (xc, _), (xt, tt) = clean[i], taught[i]
        np.testing.assert_array_equal(teacher.shown[-1], xc)  # cropped and mixed, not JPEG'd
        assert (np.abs(xt.astype(int) - xc).mean(axis=(1, 2, 3)) > 0).all()  # student's are
        np.testing.assert_array_equal(tt, teacher(xc, None))
        assert (tt.argmax(1) != 0).any()  # the labels were replaced, not kept


def test_the_teacher_weight_blends_its_answers_with_the_labels():
    class Fixed:
        def predict_on_batch(self, images):
            return np.full((len(images), 10), 0.1, dtype=np.float32)

    labels = one_hot(np.array([3, 7]))
    images = np.zeros((2, 32, 32, 3), np.uint8)
    np.testing.assert_allclose(TeacherTargets(Fixed(), 0.25)(images, labels), 0.025 + 0.75 * labels)
    np.testing.assert_allclose(TeacherTargets(Fixed(), 1.0)(images, labels), 0.1)
    for weight in (0.0, 1.5):
        with pytest.raises(ValueError, match=r"in \(0, 1\]"):
            TeacherTargets(Fixed(), weight)
        with pytest.raises(ConfigError, match=r"teacher_weight must be in \(0, 1\]"):
            tiny_config("d", "r", teacher="t", teacher_weight=weight).validate()


@pytest.mark.slow
def test_a_run_distils_from_a_finished_run_and_its_card_says_so(trained_run, cifar_dir, tmp_path):
    cfg = tiny_config(
        cifar_dir, tmp_path / "student", init_from=str(trained_run), teacher=str(trained_run)
    )
    teacher = TeacherTargets.from_config(cfg)
    expected, _ = load_run_model(trained_run)
    images = np.stack([smooth_photo(i) for i in range(4)])
    np.testing.assert_allclose(
        teacher(images, one_hot(np.zeros(4, np.int64))),
        expected.predict_on_batch(images),
        atol=1e-5,
    )
    result = train(cfg)
    assert result.epochs_completed == 1
    recorded = json.loads((tmp_path / "student" / CONFIG).read_text())
    assert recorded["teacher"] == str(trained_run) and recorded["teacher_weight"] == 1.0
    assert describe_weights_source(cfg) == (
        f"fine-tuned from {trained_run}; distilled from {trained_run} (its answers on the "
        "images before the upload forms were 1 of the targets)"
    )
