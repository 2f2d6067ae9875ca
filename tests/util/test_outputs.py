"""Outputs that already hold something are refused unless the user says --force."""

from __future__ import annotations

import pytest

from painmon.core.util.errors import InvalidInputError
from painmon.core.util.outputs import LOG_FILES, output_in_use, refuse_existing_output


def test_what_counts_as_an_output_in_use(tmp_path):
    assert not output_in_use(tmp_path / "missing.json")
    (tmp_path / "empty.json").touch()
    assert not output_in_use(tmp_path / "empty.json")
    (tmp_path / "full.json").write_text("{}")
    assert output_in_use(tmp_path / "full.json")
    (tmp_path / "empty_dir").mkdir()
    assert not output_in_use(tmp_path / "empty_dir")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "train.log").write_text("epoch 1\n")
    assert output_in_use(tmp_path / "run")
    # A launcher's log opened before the child starts is not a result.
    assert not output_in_use(tmp_path / "run", ignore=LOG_FILES)
    (tmp_path / "run" / "best.safetensors").write_bytes(b"weights")
    assert output_in_use(tmp_path / "run", ignore=LOG_FILES)
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    assert output_in_use(tmp_path / "dangling")


def test_refusal_is_one_line_naming_path_what_and_the_way_out(tmp_path):
    out = tmp_path / "splits.json"
    out.write_text("{}")
    with pytest.raises(InvalidInputError) as err:
        refuse_existing_output(out, False, "a split plan")
    assert str(err.value) == (
        f"refusing to overwrite {out} (a split plan): choose another --out or pass --force"
    )
    with pytest.raises(InvalidInputError) as err:
        refuse_existing_output(
            out, False, "a run folder", alternative="pass --resume to continue it"
        )
    assert str(err.value).endswith(
        "choose another --out, pass --resume to continue it, or pass --force"
    )
    with pytest.raises(InvalidInputError, match="choose another --json or"):
        refuse_existing_output(out, False, "metrics", option="--json")
    refuse_existing_output(out, True, "a split plan")  # --force
    refuse_existing_output(None, False, "an option not given")
    refuse_existing_output(tmp_path / "new.json", False, "a split plan")
    assert out.read_text() == "{}"
