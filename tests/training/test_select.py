"""Choosing the served variant (internal size, test-time averages) on the validation split."""

from __future__ import annotations

import json

import pytest

from training.cli import main
from training.config import ConfigError
from training.select import Variant, candidates, choose

V64, V64F, V80, V80F = Variant(64, False), Variant(64, True), Variant(80, False), Variant(80, True)
V32, V32F, V32T = Variant(32, False), Variant(32, True), Variant(32, True, 1)


def test_the_most_accurate_wins_unless_a_cheaper_one_is_within_the_tolerance():
    accuracy = {V64: 0.9130, V64F: 0.9208, V80: 0.9000, V80F: 0.9200}
    assert choose(accuracy, 0.2) == V64F  # best; nothing cheaper is within 0.2 pt
    assert choose(accuracy, 0.8) == V64  # 0.78 pt below the best: cheaper and close enough
    assert choose({V64: 0.91, V80F: 0.9119}, 0.2) == V64  # 0.19 pt: the cheaper one wins
    assert choose({V64: 0.91, V80F: 0.9121}, 0.2) == V80F  # 0.21 pt: the better one wins
    assert choose({V64: 0.91, V80F: 0.9121}, 0.0) == V80F
    assert V64.cost < V64F.cost and V64F.cost < V80F.cost and V80.cost < V64F.cost


def test_candidates_are_each_size_with_and_without_the_flip():
    assert candidates([64, 80, 64]) == [V64, V64F, V80, V80F]
    assert [v.name for v in candidates([64])] == ["val_64", "val_64_tta"]
    with pytest.raises(ConfigError, match="at least 32"):
        candidates([16])
    with pytest.raises(ConfigError, match="cannot be negative"):
        candidates([32], -1)


def test_the_translate_candidate_costs_six_passes_and_must_earn_them():
    assert candidates([32, 64], translate=1) == [V32, V32F, V32T, V64, V64F, Variant(64, True, 1)]
    assert V32T.name == "val_32_tta_shift1" and V32T.passes == 6 and V32F.passes == 2
    assert V32T.cost == 3 * V32F.cost and V32T.cost < V64F.cost
    assert choose({V32F: 0.9400, V32T: 0.9419}, 0.2) == V32F  # 0.19 pt is not worth 3x
    assert choose({V32F: 0.9400, V32T: 0.9421}, 0.2) == V32T
    with pytest.raises(ConfigError, match="no variant"):
        choose({}, 0.2)


@pytest.mark.slow
def test_export_chooses_on_validation_and_the_card_says_how(
    trained_run, cifar_dir, tmp_path, capsys
):
    models = tmp_path / "models"
    argv = ["export", "--run", str(trained_run), "--models-dir", str(models), "--name", "c10"]
    select = ["--select-on-val", "32,40", "--select-translate", "1"]
    assert main([*argv, "--data", str(cifar_dir), *select]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    card = json.loads((models / "c10" / "1" / "model_card.json").read_text())
    selection = card["validation_selection"]
    assert printed["validation_selection"] == selection
    assert set(selection["accuracy"]) == {
        f"val_{size}{average}" for size in (32, 40) for average in ("", "_tta", "_tta_shift1")
    }
    assert selection["images"] == card["data"]["val_images"]
    # the exported graph is the chosen variant
    variant = ("internal_size", "tta_flip", "tta_translate")
    assert [card[k] for k in variant] == [selection[k] for k in variant]
    assert selection["chosen"] == Variant(*(card[k] for k in variant)).name
    assert card["metrics"]["test_accuracy"] == printed["test_accuracy"]

    # the recorded validation accuracy is what `evaluate --split val` measures on that variant
    evaluate = ["evaluate", "--run", str(trained_run), "--data", str(cifar_dir), "--split", "val"]
    evaluate += ["--internal-size", str(card["internal_size"])]
    evaluate += ["--tta-flip"] if card["tta_flip"] else []
    evaluate += ["--tta-translate", str(card["tta_translate"])]
    assert main(evaluate) == 0
    measured = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert measured["accuracy"] == pytest.approx(selection["accuracy"][selection["chosen"]])

    # giving the variant and choosing it are exclusive; choosing needs the data
    assert main([*argv, "--data", str(cifar_dir), "--select-on-val", "32", "--tta-flip"]) == 2
    assert "on validation or give it, not both" in capsys.readouterr().err
    assert main([*argv, "--select-on-val", "32"]) == 2
    assert "needs the data" in capsys.readouterr().err
    assert main([*argv, "--data", str(cifar_dir), "--select-translate", "1"]) == 2
    assert "needs --select-on-val" in capsys.readouterr().err
    assert main([*argv, "--data", str(cifar_dir), "--tta-translate", "1"]) == 2
    assert "needs the flip" in capsys.readouterr().err
    assert not (models / "c10" / "2").exists()
