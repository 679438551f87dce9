"""What a run does when: its phases, its size stages and its learning-rate schedule.

- A *phase* trains one set of layers at one peak learning rate: ``full`` from random init;
  ``head`` then ``finetune`` with pretrained backbone weights (the keras-io recipe).
- A *size stage* is a run of epochs at one internal image size (progressive resizing); each is
  one ``fit`` on the same weights and optimizer.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras

from training.config import TrainConfig


@dataclass(frozen=True)
class Phase:
    name: str
    start: int
    end: int
    learning_rate: float


def plan_phases(cfg: TrainConfig) -> list[Phase]:
    if not cfg.pretrained or cfg.head_epochs <= 0:
        return [Phase("full", 0, cfg.epochs, cfg.learning_rate)]
    head_end = min(cfg.head_epochs, cfg.epochs)
    phases = [Phase("head", 0, head_end, cfg.learning_rate)]
    if cfg.epochs > head_end:
        phases.append(Phase("finetune", head_end, cfg.epochs, cfg.finetune_learning_rate))
    return phases


def size_stages(cfg: TrainConfig, phase: Phase, first_epoch: int) -> list[tuple[int, int, int]]:
    """Split ``[first_epoch, phase.end)`` into runs of equal internal size: (start, end, size)."""
    out: list[tuple[int, int, int]] = []
    for epoch in range(max(first_epoch, phase.start), phase.end):
        size = cfg.size_at(epoch)
        if out and out[-1][2] == size:
            out[-1] = (out[-1][0], epoch + 1, size)
        else:
            out.append((epoch, epoch + 1, size))
    return out


def make_optimizer(cfg: TrainConfig, peak_lr: float, total_steps: int) -> keras.Optimizer:
    """SGD (Nesterov) or AdamW with linear warm-up then cosine decay to zero.

    Keras 3's ``weight_decay`` is decoupled and scaled by the learning rate; BatchNorm
    parameters and biases are excluded from it.
    """
    warmup = min(int(cfg.warmup_epochs * total_steps / max(cfg.epochs, 1)), total_steps - 1)
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=peak_lr if warmup == 0 else peak_lr / 100,
        decay_steps=max(total_steps - warmup, 1),
        alpha=0.0,
        warmup_target=peak_lr if warmup else None,
        warmup_steps=warmup,
    )
    if cfg.optimizer == "sgd":
        opt = keras.optimizers.SGD(
            schedule, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay
        )
    else:
        opt = keras.optimizers.AdamW(schedule, weight_decay=cfg.weight_decay)
    opt.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
    return opt


def current_lr(opt: keras.Optimizer) -> float:
    lr = opt.learning_rate
    return float(keras.ops.convert_to_numpy(lr(opt.iterations) if callable(lr) else lr))


def resolve_jit_compile(cfg: TrainConfig) -> bool:
    """XLA on JAX (where it is the fast path); off on TensorFlow, where XLA measured 5x slower
    for this model on CPU."""
    if cfg.jit_compile is not None:
        return cfg.jit_compile
    return keras.backend.backend() == "jax"
