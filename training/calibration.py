"""Calibration: probabilities that mean what they say.

A model trained with label smoothing, CutMix and answered through a test-time average is
right more often than its probabilities say (version 3: 92.63 % right at a mean top-1
probability of 0.79). Temperature scaling (Guo et al. 2017, "On Calibration of Modern Neural
Networks") fixes that without changing a single label: the served probabilities ``p`` (after
the test-time average) are read as logits ``log p`` and answered as ``softmax(log p / T)``, one
``T`` fitted to minimise the negative log-likelihood on held-out images (the run's validation
split, never the test set). ``T < 1`` sharpens, ``T > 1`` flattens; the order of the classes,
and so every label, is unchanged.

The measures are the usual ones: the expected calibration error (ECE: top-1 confidence in
``bins`` equal-width bins, the share-weighted mean of ``|accuracy - confidence|`` per bin) and
the mean negative log-likelihood of the true class (NLL).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.data import Split
from training.evaluate import keras_predictor, predict

DEFAULT_BINS = 15
# log(0) is -inf; a floor keeps every logit finite (float32 holds it; exp(-69) is far below
# anything a probability can be told from).
PROBABILITY_FLOOR = 1e-30
# The fitted temperature is searched in [1/MAX_BETA, 1/MIN_BETA].
MIN_BETA, MAX_BETA = 0.05, 20.0
# The calibrated graph must answer what ``apply_temperature`` computes, on this many test
# images, to this.
GRAPH_CHECK_IMAGES, GRAPH_TOLERANCE = 64, 1e-5


def logits_of(probs: np.ndarray) -> np.ndarray:
    """The served output read as logits: ``log p`` (floored), in float64."""
    return np.log(np.maximum(np.asarray(probs, dtype=np.float64), PROBABILITY_FLOOR))


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log p / T)`` row by row, in float64: what the calibrated graph computes."""
    z = logits_of(probs) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def negative_log_likelihood(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean ``-log p[true class]`` (the floor keeps a zero finite)."""
    labels = np.asarray(labels, dtype=np.int64)
    picked = np.asarray(probs, dtype=np.float64)[np.arange(len(labels)), labels]
    return float(-np.log(np.maximum(picked, PROBABILITY_FLOOR)).mean())


def reliability_bins(probs: np.ndarray, labels: np.ndarray, bins: int = DEFAULT_BINS) -> list:
    """Top-1 confidence in ``bins`` equal-width bins ``((i-1)/bins, i/bins]``: per bin its
    bounds, how many answers fall in it, their mean confidence and their accuracy (``None``
    for an empty bin)."""
    probs = np.asarray(probs, dtype=np.float64)
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(labels)
    index = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    rows = []
    for i in range(bins):
        mask = index == i
        count = int(mask.sum())
        rows.append(
            {
                "lower": i / bins,
                "upper": (i + 1) / bins,
                "count": count,
                "confidence": float(confidence[mask].mean()) if count else None,
                "accuracy": float(correct[mask].mean()) if count else None,
            }
        )
    return rows


def expected_calibration_error(
    probs: np.ndarray, labels: np.ndarray, bins: int = DEFAULT_BINS
) -> float:
    """ECE: the share-weighted mean over the bins of ``|accuracy - mean confidence|``."""
    total = len(labels)
    if not total:
        return 0.0
    return float(
        sum(
            row["count"] / total * abs(row["accuracy"] - row["confidence"])
            for row in reliability_bins(probs, labels, bins)
            if row["count"]
        )
    )


def calibration_metrics(probs: np.ndarray, labels: np.ndarray, bins: int = DEFAULT_BINS) -> dict:
    """What the card records for one set of answers: accuracy, mean top-1 probability, ECE, NLL
    and the largest distance of an answer's sum from 1."""
    probs = np.asarray(probs, dtype=np.float64)
    return {
        "images": int(len(labels)),
        "accuracy": float((probs.argmax(axis=1) == np.asarray(labels)).mean()),
        "mean_confidence": float(probs.max(axis=1).mean()),
        "ece": expected_calibration_error(probs, labels, bins),
        "nll": negative_log_likelihood(probs, labels),
        "max_sum_error": float(np.abs(probs.sum(axis=1) - 1).max()),
    }


def fit_temperature(probs: np.ndarray, labels: np.ndarray, tolerance: float = 1e-6) -> float:
    """The ``T`` that minimises the NLL of ``softmax(log p / T)`` on these answers.

    The NLL is convex in ``beta = 1/T`` (a log-sum-exp minus a linear term), so a
    golden-section search over ``beta`` finds the minimum; the search interval,
    ``[MIN_BETA, MAX_BETA]``, holds every temperature a real model needs (0.05 to 20).
    """
    if len(labels) == 0:
        raise ValueError("fitting a temperature needs at least one labelled answer")
    z = logits_of(probs)
    labels = np.asarray(labels, dtype=np.int64)
    true = z[np.arange(len(labels)), labels]

    def nll(beta: float) -> float:
        scaled = beta * z
        top = scaled.max(axis=1)
        log_sum = top + np.log(np.exp(scaled - top[:, None]).sum(axis=1))
        return float((log_sum - beta * true).mean())

    ratio = (math.sqrt(5) - 1) / 2
    lo, hi = MIN_BETA, MAX_BETA
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = nll(a), nll(b)
    while hi - lo > tolerance:
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = nll(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = nll(b)
    return 1.0 / ((lo + hi) / 2)


CALIBRATIONS = ("temperature", "none")  # what ``export --calibrate`` offers
TEMPERATURE_METHOD = (
    "temperature scaling (Guo et al. 2017): the served probabilities p, after the test-time "
    "average, answered as softmax(log p / T) inside the graph; T fitted to minimise the "
    "negative log-likelihood on the validation split (the images the training run held out, "
    "never the test set); the label of every image is unchanged"
)
NOT_CALIBRATED = {"method": "none", "temperature": None}
RELIABILITY_FIGURE = "reliability_diagram.png"


def calibrate_on_validation(
    val_probs: np.ndarray,
    val_labels: np.ndarray,
    test_probs: np.ndarray | None = None,
    test_labels: np.ndarray | None = None,
    bins: int = DEFAULT_BINS,
) -> dict:
    """Fit ``T`` on the validation answers (uncalibrated) and measure what it does there and,
    when given, on the test answers: the card's ``calibration`` section. The test set only
    measures; it never chooses."""
    temperature = fit_temperature(val_probs, val_labels)
    section = {
        "method": TEMPERATURE_METHOD,
        "temperature": temperature,
        # at an end of the search: the answers want flatter (or sharper) than any T offered,
        # as a network that is right no more often than chance does
        "temperature_at_search_bound": not 1.001 / MAX_BETA < temperature < 0.999 / MIN_BETA,
        "bins": bins,
        "validation": {
            "before": calibration_metrics(val_probs, val_labels, bins),
            "after": calibration_metrics(
                apply_temperature(val_probs, temperature), val_labels, bins
            ),
        },
    }
    if test_probs is not None:
        after = apply_temperature(test_probs, temperature)
        section["test"] = {
            "before": calibration_metrics(test_probs, test_labels, bins),
            "after": calibration_metrics(after, test_labels, bins),
        }
        section["reliability_test"] = {
            "before": reliability_bins(test_probs, test_labels, bins),
            "after": reliability_bins(after, test_labels, bins),
        }
    return section


def plot_calibration(section: dict, path) -> None:
    """The reliability diagram of a ``calibrate_on_validation`` section (test set)."""
    from training.plots import plot_reliability

    before, after = section["test"]["before"], section["test"]["after"]
    plot_reliability(
        {
            f"before: ECE {before['ece']:.1%}": section["reliability_test"]["before"],
            f"after, T = {section['temperature']:.3f}: ECE {after['ece']:.1%}": section[
                "reliability_test"
            ]["after"],
        },
        path,
        f"official test set, {before['images']} images, top-1, {section['bins']} bins",
    )


def temperature_step(temperature: float) -> str:
    """The card's ``preprocessing_in_graph`` entry for the temperature."""
    return f"temperature scaling of the averaged answer: softmax(log p / {temperature:.4f})"


@dataclass(frozen=True)
class CalibratedModel:
    """What ``calibrate_served_model`` returns."""

    model: object  # the calibrated contract model
    section: dict  # the card's ``calibration``
    before: np.ndarray  # the test set's probabilities, uncalibrated
    after: np.ndarray  # and calibrated, as the calibrated graph answers them


def calibrate_served_model(
    wrap: Callable[[float | None], object], validation: Split, test: Split, figure: Path
) -> CalibratedModel:
    """Calibrate the served model that ``wrap(temperature)`` builds (``None``: uncalibrated).

    Fits the temperature on the validation split's answers, builds the calibrated model,
    checks on the first test images that its graph answers ``apply_temperature`` of the
    uncalibrated answers (``GRAPH_TOLERANCE``; the check is recorded in the section), and
    draws the reliability diagram to ``figure``."""
    if not len(validation):
        raise ValueError("calibration needs validation images (the run held out none)")
    uncalibrated = wrap(None)
    before = predict(keras_predictor(uncalibrated), test.x)
    section = calibrate_on_validation(
        predict(keras_predictor(uncalibrated), validation.x), validation.y, before, test.y
    )
    temperature = section["temperature"]
    model = wrap(temperature)
    after = apply_temperature(before, temperature)
    probe = test.x[:GRAPH_CHECK_IMAGES]
    difference = float(np.abs(predict(keras_predictor(model), probe) - after[: len(probe)]).max())
    if difference > GRAPH_TOLERANCE:
        raise ValueError(
            f"the calibrated graph answers up to {difference:.2g} away from softmax(log p / T)"
        )
    section["graph_check"] = {"images": len(probe), "max_abs_difference": difference}
    plot_calibration(section, figure)
    return CalibratedModel(model, section, before, after)
