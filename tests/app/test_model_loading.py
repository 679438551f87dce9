"""Model discovery and the one-line errors for a missing or corrupt model."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from app.model import ModelLoadError, load_served_model, resolve_version_dir


def test_newest_version_is_chosen_unless_pinned(tmp_path, tiny_model_root):
    root = tmp_path / "tiny"
    shutil.copytree(tiny_model_root / "1", root / "1")
    shutil.copytree(tiny_model_root / "1", root / "12")
    (root / "notes").mkdir()
    assert resolve_version_dir(root, None).name == "12"
    assert resolve_version_dir(root, 1).name == "1"
    assert load_served_model(root, 1).version == 1


@pytest.mark.parametrize(
    "damage,message",
    [
        ("nothing", "model directory not found"),
        ("empty", "no numbered model version folders"),
        ("no_card", "model card missing"),
        ("bad_card", "unreadable model card"),
        ("corrupt_pb", "cannot load SavedModel"),  # by either runtime
        ("no_pb", "no saved_model.pb"),
    ],
)
def test_unusable_model_gives_one_line_error_naming_the_path(
    tmp_path, tiny_model_root, damage, message
):
    root = tmp_path / "m"
    if damage != "nothing":
        root.mkdir()
    if damage not in ("nothing", "empty"):
        shutil.copytree(tiny_model_root / "1", root / "1")
    version = root / "1"
    if damage == "no_card":
        (version / "model_card.json").unlink()
    elif damage == "bad_card":
        (version / "model_card.json").write_text("{not json")
    elif damage == "corrupt_pb":
        (version / "saved_model.pb").write_bytes(b"\x00garbage" * 10)
    elif damage == "no_pb":
        (version / "saved_model.pb").unlink()
    with pytest.raises(ModelLoadError) as err:
        load_served_model(root)
    text = str(err.value)
    assert message in text and str(root) in text and "\n" not in text


def test_serve_command_exits_nonzero_with_one_line(tmp_path):
    missing = tmp_path / "absent"
    proc = subprocess.run(
        [sys.executable, "-c", "from app.main import run; run()", "--model-dir", str(missing)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == f"error: {missing}: model directory not found"


def test_a_folder_named_with_a_unicode_digit_is_not_a_version(tmp_path):
    """``str.isdigit`` accepts "²", which ``int`` refuses: such a folder is skipped, not a
    ``ValueError`` (in the loader and in the reloader's poll)."""
    from app.reload import newest_version

    for name in ("2", "10", "²", "٣"):
        (tmp_path / name).mkdir()
    assert resolve_version_dir(tmp_path, None).name == "10"
    assert newest_version(tmp_path) == 10
