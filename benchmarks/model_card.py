"""Recording a measurement in a version's model card (``--write-card`` of the benchmarks)."""

from __future__ import annotations

import json
from pathlib import Path

from training.model_card import write_model_card


def record_in_card(version_dir: Path, key: str, result: dict) -> None:
    """Set ``key`` of ``version_dir/model_card.json`` to ``result``, keeping everything else,
    and write the version's README.md (the readable card) anew from it."""
    card_path = version_dir / "model_card.json"
    card = json.loads(card_path.read_text())
    card[key] = result
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    write_model_card(version_dir)
