"""``cifar10-model``: train, evaluate and export the CIFAR-10 ResNet50 classifier.

    cifar10-model train --data /tmp/cifar10/cifar-10-batches-py --run-dir runs/r1 --epochs 18
    cifar10-model evaluate --run runs/r1 --data ...            # official test set
    cifar10-model export --run runs/r1 --data ... --models-dir models --name cifar10-resnet50
    cifar10-model interpolate --run runs/finetune --alpha 0.5 --out runs/wise  # WiSE-FT

Every user-caused failure (missing data, bad flag value, existing version) ends with one
``error: ...`` line and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import typing
from collections.abc import Callable
from dataclasses import Field, fields
from pathlib import Path
from typing import Any

from training.calibration import CALIBRATIONS
from training.config import DATA_HELP, ConfigError, TrainConfig, load_config_file
from training.data import DataError
from training.select import DEFAULT_TOLERANCE_PT

GROUPS = ("data", "model", "optimisation", "augmentation", "run")


def _flag_type(f: Field, hint: Any) -> Callable[[str], Any]:
    """How a ``TrainConfig`` field's flag text becomes its value: the field's own parser, or
    the type its annotation names (``int | None`` is ``int``)."""
    if f.metadata.get("parse"):
        return f.metadata["parse"]
    kinds = [t for t in typing.get_args(hint) or (hint,) if t is not type(None)]
    return kinds[0]


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per ``TrainConfig`` field (``ema_momentum`` → ``--ema-momentum``), in the
    field's group, with its help, choices and default; booleans get ``--no-...`` too.

    Every flag defaults to ``None`` ("not given"), so a config file's value survives it.
    """
    hints = typing.get_type_hints(TrainConfig)
    defaults = TrainConfig()
    groups = {name: parser.add_argument_group(name) for name in GROUPS}
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        help_text = f.metadata["help"] + ("" if default is None else f" (default: {default})")
        group = groups[f.metadata["group"]]
        if bool in (typing.get_args(hints[f.name]) or (hints[f.name],)):
            group.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
            continue
        group.add_argument(
            flag,
            type=_flag_type(f, hints[f.name]),
            choices=f.metadata.get("choices"),
            help=help_text,
        )


def _train_parser(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a model into a run directory",
        description="Train ResNet50 on CIFAR-10; checkpoints every epoch.",
    )
    p.add_argument("--config", help="JSON file with any of the options below (flags win)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the checkpoint in --run-dir with its saved configuration (only --data, "
        "--time-budget-min and --session-min may be given beside it)",
    )
    p.add_argument(
        "--session-min",
        "--segment-min",
        dest="session_min",
        type=float,
        help="end this session (one start or resume of the process) cleanly at the last "
        "epoch boundary expected within N minutes (a job's time limit); continue later with "
        "--resume",
    )
    add_config_flags(p)


def _eval_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="accuracy and confusion matrix of a run or SavedModel")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", type=Path, help="a training run directory")
    src.add_argument("--saved-model", type=Path, help="an exported SavedModel version directory")
    p.add_argument("--data", default="download", help=DATA_HELP)
    p.add_argument(
        "--split",
        choices=["test", "val"],
        default="test",
        help="official test set (default) or the run's validation split",
    )
    p.add_argument("--internal-size", type=int, help="with --run: evaluate at this size")
    p.add_argument(
        "--tta-flip", action="store_true", help="with --run: average with the mirror image"
    )
    p.add_argument(
        "--tta-translate",
        type=int,
        default=0,
        metavar="PX",
        help="with --run and --tta-flip: also average copies moved PX pixels each way",
    )
    p.add_argument("--out", type=Path, help="write the report as JSON here")
    p.add_argument("--confusion-png", type=Path, help="write the confusion matrix figure here")


def _sizes(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: sizes as N or N,M,...") from None


def _export_parser(sub) -> None:
    p = sub.add_parser("export", help="export a run as a versioned SavedModel with a model card")
    p.add_argument("--run", type=Path, required=True, help="a training run directory")
    p.add_argument("--models-dir", type=Path, default=Path("models"), help="(models)")
    p.add_argument("--name", default="cifar10-resnet50", help="(cifar10-resnet50)")
    p.add_argument("--version", type=int, help="integer version (default: next free)")
    p.add_argument("--internal-size", type=int, help="served internal size (default: the run's)")
    p.add_argument(
        "--tta-flip", action="store_true", help="average with the mirror image in the graph"
    )
    p.add_argument(
        "--tta-translate",
        type=int,
        default=0,
        metavar="PX",
        help="with --tta-flip: also average copies moved PX pixels each way (six passes)",
    )
    p.add_argument(
        "--data", help="evaluate the export on this data's official test set for the card"
    )
    p.add_argument("--card-extra", type=Path, help="JSON object merged into the model card")
    p.add_argument(
        "--calibrate",
        choices=CALIBRATIONS,
        default="temperature",
        help="temperature (default, needs --data): fit one temperature on the run's "
        "validation split and put it in the graph, so the probabilities mean what they say; "
        "none: the probabilities as the network averages them",
    )
    p.add_argument(
        "--select-on-val",
        type=_sizes,
        metavar="SIZES",
        help="choose the internal size (among these, e.g. 64 or 64,80) and the flip on the "
        "run's validation split instead of giving them; needs --data",
    )
    p.add_argument(
        "--select-tolerance-pt",
        type=float,
        default=DEFAULT_TOLERANCE_PT,
        help=f"a cheaper variant within this many points of the best wins ({DEFAULT_TOLERANCE_PT})",
    )
    p.add_argument(
        "--select-translate",
        type=int,
        default=0,
        metavar="PX",
        help="with --select-on-val: also a candidate that averages flip and copies moved PX "
        "pixels each way (six passes; default: not a candidate)",
    )


def _version_and_data(p: argparse.ArgumentParser) -> None:
    """The flags of a command that reads an exported version and the data it was trained on."""
    p.add_argument("--model", type=Path, required=True, help="an exported version directory")
    p.add_argument("--data", default="download", help=DATA_HELP)


def _quantize_parser(sub) -> None:
    p = sub.add_parser(
        "quantize",
        help="int8 OpenVINO copy of an exported version (NNCF), accuracy in its card",
        description="Post-training int8 quantization of an exported version with NNCF, "
        "stored in VERSION/openvino-int8/; its official test accuracy, the SavedModel's and "
        "their top-1 agreement go into the model card.",
    )
    _version_and_data(p)
    p.add_argument("--images", type=int, default=300, help="calibration images (300)")
    p.add_argument("--seed", type=int, default=0, help="which calibration images (0)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing int8 copy")
    p.add_argument(
        "--max-drop-pt",
        type=float,
        help="accuracy control: revert the costliest layers to float until the int8 copy "
        "loses at most this many points on the version's validation split (e.g. 0.1; "
        "default: plain quantization)",
    )


def _calibrate_parser(sub) -> None:
    p = sub.add_parser(
        "calibrate",
        help="an exported version, calibrated on its validation split, as a new version",
        description="Fit a temperature on the validation split the version's training run held "
        "out and write the same weights with it in the graph as the next version (every label "
        "the same); the card records the ECE and NLL before and after, with a reliability "
        "diagram. Quantize the new version afterwards for an int8 copy.",
    )
    _version_and_data(p)
    p.add_argument("--version", type=int, help="integer version (default: next free)")
    p.add_argument(
        "--models-dir", type=Path, help="write under this models folder (default: the source's)"
    )


def _interpolate_parser(sub) -> None:
    p = sub.add_parser(
        "interpolate",
        help="a run whose weights lie between a fine-tuned run and its source (WiSE-FT)",
        description="Interpolate the weights of a run trained with --init-from and the model "
        "it started from: alpha 0 is the source, 1 the fine-tuned run. Writes a run directory "
        "that evaluate, export and the benchmarks read like a trained one.",
    )
    p.add_argument("--run", type=Path, required=True, help="a finished run trained with init_from")
    p.add_argument("--alpha", type=float, required=True, help="share of the fine-tuned weights")
    p.add_argument("--out", type=Path, required=True, help="the new run directory")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cifar10-model", description="Train, evaluate and export the CIFAR-10 ResNet50 model."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _train_parser(sub)
    _eval_parser(sub)
    _export_parser(sub)
    _quantize_parser(sub)
    _calibrate_parser(sub)
    _interpolate_parser(sub)
    return parser


# What --resume takes besides the saved configuration: where the run and the data are, and a
# new time budget; every other flag would change the run it continues, so it is refused.
RESUME_FLAGS = frozenset({"run_dir", "data", "time_budget_min"})


def resolve_train_config(args: argparse.Namespace) -> TrainConfig:
    if args.resume:
        run_dir = Path(args.run_dir or TrainConfig().run_dir)
        saved = run_dir / "config.json"
        if not saved.exists():
            raise ConfigError(f"{run_dir}: no config.json to resume")
        ignored = [
            f"--{f.name.replace('_', '-')}"
            for f in fields(TrainConfig)
            if f.name not in RESUME_FLAGS and getattr(args, f.name, None) is not None
        ]
        if args.config:
            ignored.insert(0, "--config")
        if ignored:
            raise ConfigError(
                f"--resume continues {saved}; it would ignore {', '.join(ignored)} "
                "(drop them, or start a new --run-dir)"
            )
        values = load_config_file(saved)
        for name in RESUME_FLAGS - {"run_dir"}:
            if getattr(args, name, None) is not None:
                values[name] = getattr(args, name)
        return TrainConfig.from_dict(values).validate()
    values = load_config_file(args.config) if args.config else {}
    for f in fields(TrainConfig):
        flag = getattr(args, f.name, None)
        if flag is not None:
            values[f.name] = flag
    return TrainConfig.from_dict(values).validate()


def cmd_train(args: argparse.Namespace) -> int:
    from training.train import train

    cfg = resolve_train_config(args)
    result = train(cfg, resume=args.resume, session_min=args.session_min)
    print(
        json.dumps(
            {
                "run_dir": str(result.run_dir),
                "best_val_accuracy": result.best_val_accuracy,
                "epochs_completed": result.epochs_completed,
                "stopped_by_budget": result.stopped_by_budget,
                "stopped_at_deadline": result.stopped_at_deadline,
                "wall_time_s": result.wall_time_s,
            }
        )
    )
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from training.evaluate import (
        classification_report,
        evaluation_split,
        keras_predictor,
        predict,
        saved_model_predictor,
    )
    from training.plots import plot_confusion_matrix
    from training.run import load_run_model

    cfg = None
    if args.run:
        model, cfg = load_run_model(
            args.run, args.internal_size, args.tta_flip, tta_translate=args.tta_translate
        )
        predictor = keras_predictor(model)
    else:
        if args.split == "val":
            raise ConfigError("--split val needs --run (the validation split is the run's)")
        if not (args.saved_model / "saved_model.pb").exists():
            raise ConfigError(f"{args.saved_model}: no saved_model.pb")
        predictor = saved_model_predictor(args.saved_model)
    data = evaluation_split(args.data, args.split, cfg)
    report = classification_report(data.split.y, predict(predictor, data.split.x), data.class_names)
    report["split"] = args.split
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))
    if args.confusion_png:
        plot_confusion_matrix(
            report["confusion_matrix"],
            data.class_names,
            args.confusion_png,
            f"{args.split}: accuracy {report['accuracy']:.2%}",
        )
    print(
        json.dumps(
            {
                "split": args.split,
                "accuracy": report["accuracy"],
                "images": report["images"],
                "per_class_recall": {
                    k: round(v["recall"], 4) for k, v in report["per_class"].items()
                },
            }
        )
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from training.export import export_run

    result = export_run(
        args.run,
        args.models_dir,
        args.name,
        version=args.version,
        internal_size=args.internal_size,
        tta_flip=args.tta_flip,
        tta_translate=args.tta_translate,
        data=args.data,
        card_extra=json.loads(args.card_extra.read_text()) if args.card_extra else None,
        select_sizes=args.select_on_val,
        select_tolerance_pt=args.select_tolerance_pt,
        select_translate=args.select_translate,
        calibrate=args.calibrate,
    )
    print(
        json.dumps(
            {
                "exported": str(result.path),
                "validation_selection": result.selection,
                "test_accuracy": result.test_accuracy,
            }
        )
    )
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    from training.quantize import quantize_version

    r = quantize_version(
        args.model, args.data, args.images, args.seed, args.overwrite, args.max_drop_pt
    )
    print(
        json.dumps(
            {
                "int8": str(r.path),
                "test_accuracy": r.test_accuracy,
                "reference_test_accuracy": r.reference_accuracy,
                "accuracy_drop_pt": r.accuracy_drop_pt,
                "top1_agreement": r.top1_agreement,
            }
        )
    )
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from training.recalibrate import recalibrate_version

    r = recalibrate_version(args.model, args.data, args.version, args.models_dir)
    print(
        json.dumps(
            {
                "exported": str(r.path),
                "temperature": r.temperature,
                "test_accuracy": r.test_accuracy,
                "labels_changed": r.labels_changed,
            }
        )
    )
    return 0


def cmd_interpolate(args: argparse.Namespace) -> int:
    from training.interpolate import interpolate_run

    out = interpolate_run(args.run, args.alpha, args.out)
    print(json.dumps({"run": str(out), "alpha": args.alpha}))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handlers = {
        "train": cmd_train,
        "evaluate": cmd_evaluate,
        "export": cmd_export,
        "quantize": cmd_quantize,
        "calibrate": cmd_calibrate,
        "interpolate": cmd_interpolate,
    }
    try:
        return handlers[args.command](args)
    except (ConfigError, DataError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from training.export import ExportError

        if isinstance(exc, ExportError):
            print(f"error: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
