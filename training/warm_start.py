"""Starting a run from another model's weights (``init_from``): fine-tuning a shipped version.

The source is an exported version (a SavedModel directory, as ``export`` writes it), a run
directory (its final ``model.weights.h5``) or a ``.weights.h5`` file of the classifier. The
architecture must be the same as the run's (stem, head); every weight is matched by its layer
and variable name (``conv1_conv/kernel``), so a missing, extra or misshapen weight is an error
that names it, never a silent partial load.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from training.config import ConfigError
from training.contract import SIGNATURE
from training.run import FINAL_WEIGHTS


def _classifier_weights(classifier: keras.Model) -> dict[str, keras.Variable]:
    """Every weight of the classifier by the name a SavedModel written by ``export`` gives it
    (``conv1_conv/kernel``: layer, then variable), the backbone's layers flattened."""
    found: dict[str, keras.Variable] = {}
    for layer in classifier.layers:
        inner = layer.layers if isinstance(layer, keras.Model) else [layer]
        for sub in inner:
            for variable in sub.weights:
                found[f"{sub.name}/{variable.name}"] = variable
    return found


def saved_model_weights(path: Path) -> dict[str, np.ndarray]:
    """The weights an exported SavedModel's serving signature uses, by name."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    return {v.name.removesuffix(":0"): v.numpy() for v in loaded.signatures[SIGNATURE].variables}


def load_initial_weights(classifier: keras.Model, source: str | Path) -> None:
    """Set every weight of ``classifier`` from ``source``."""
    path = Path(source).expanduser()
    if path.is_dir() and (path / "saved_model.pb").is_file():
        _assign_by_name(classifier, saved_model_weights(path), path)
        return
    if path.is_dir() and (path / FINAL_WEIGHTS).is_file():
        path = path / FINAL_WEIGHTS
    if path.is_file() and path.name.endswith(".weights.h5"):
        try:
            classifier.load_weights(path)
        except ValueError as e:
            raise ConfigError(f"{path}: not this model's weights ({e})") from None
        return
    raise ConfigError(
        f"{source}: init_from needs an exported version directory (saved_model.pb), "
        f"a finished run directory ({FINAL_WEIGHTS}) or a .weights.h5 file"
    )


def _assign_by_name(classifier: keras.Model, values: dict[str, np.ndarray], path: Path) -> None:
    targets = _classifier_weights(classifier)
    missing = sorted(set(targets) - set(values))
    extra = sorted(set(values) - set(targets))
    if missing or extra:
        raise ConfigError(
            f"{path}: a different architecture (missing {missing[:3]}, unexpected "
            f"{extra[:3]}; {len(missing)} and {len(extra)} in all): check the stem"
        )
    for name, variable in targets.items():
        if tuple(variable.shape) != values[name].shape:
            raise ConfigError(
                f"{path}: a different architecture ({name} has shape "
                f"{values[name].shape}, the model {tuple(variable.shape)}): check the stem"
            )
        variable.assign(values[name].astype(variable.dtype))
