"""Atomic writes: a file the package writes is replaced whole, or left as it was."""

from __future__ import annotations

import json

import pytest

from {{ cookiecutter.package }}.core import model, stage


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path):
    path = tmp_path / "reports" / "metrics.json"
    stage.write_json(path, {"roc_auc": 0.8})
    before = path.read_bytes()

    def write_half_then_fail() -> None:
        with stage.atomic_path(path) as tmp:
            tmp.write_text('{"roc_auc": 0.', encoding="utf-8")
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_half_then_fail()
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]


def test_a_write_replaces_the_file_whole_and_leaves_nothing_beside_it(tmp_path):
    path = tmp_path / "new" / "dir" / "report.md"  # missing directories are made
    stage.write_text(path, "first\n")
    stage.write_json(path.with_suffix(".json"), {"b": 1, "a": [2]})
    stage.write_text(path, "second\n")
    assert path.read_text(encoding="utf-8") == "second\n"
    assert json.loads(path.with_suffix(".json").read_text(encoding="utf-8")) == {"a": [2], "b": 1}
    assert sorted(p.name for p in path.parent.iterdir()) == ["report.json", "report.md"]


def test_a_model_save_that_fails_midway_keeps_the_old_model(tmp_path, monkeypatch, fitted):
    import skops.io as sio

    path = tmp_path / "model.skops"
    model.save(fitted, path)
    before = path.read_bytes()

    def broken_dump(obj, file):
        with open(file, "wb") as fh:
            fh.write(before[:100])  # a truncated zip, as a crash mid-write leaves
        raise OSError("no space left on device")

    monkeypatch.setattr(sio, "dump", broken_dump)
    with pytest.raises(OSError, match="no space left"):
        model.save(fitted, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.skops"]
