"""The model card: model.json read into typed records and written back unchanged; unknown keys and newer formats are
refused in one line."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from engine.card import (
    FORMAT_VERSION,
    MemberEntry,
    ModelCard,
    TrainingCheck,
    TrainingSummary,
    card_to_json,
    read_card,
    update_card,
    write_card,
)
from engine.checkpoints import init_model_folder
from engine.config import Preset, get_preset
from engine.errors import ModelLoadError
from engine.evaluation_records import EvaluationRecord, HealthyReport, Scores
from engine.results import Calibration
from tests.conftest import REPO_ROOT

REAL_MODELS = {
    "bundled": REPO_ROOT / "resources" / "models" / "condiff-t1-small" / "model.json",
    # the model.json of condiff-t1-small 1.0, the first bundled model (its weights are no longer shipped): a card
    # written by an earlier condiff, without the synthetic benchmark, with hand-written notes
    "v1.0.0": REPO_ROOT / "tests" / "data" / "model-v1.0.0.json",
}


def _copy_of_model_json(name: str, folder: Path) -> dict:
    """A real model.json, read once and copied into ``folder`` (training may rewrite the original)."""
    text = REAL_MODELS[name].read_text(encoding="utf-8")
    folder.mkdir()
    (folder / "model.json").write_text(text, encoding="utf-8")
    return json.loads(text)


@pytest.mark.parametrize("name", sorted(REAL_MODELS))
def test_a_real_model_json_reads_typed_and_writes_back_the_same(name: str, tmp_path: Path) -> None:
    original = _copy_of_model_json(name, tmp_path / "read")
    card = read_card(tmp_path / "read")
    assert isinstance(card.preset, Preset)
    assert card.calibration is None or isinstance(card.calibration, Calibration)
    assert card.members, "the real folders hold trained members"
    for fold, entry in card.members.items():
        assert isinstance(entry, MemberEntry)
        assert entry.fold == fold == original["members"][str(fold)]["fold"]
        assert entry.sha256 == original["members"][str(fold)]["sha256"]
        assert entry.training.train_tasks == tuple(original["members"][str(fold)]["training"]["train_tasks"])
        assert all(isinstance(check, TrainingCheck) for check in entry.training.checks)
    assert all(isinstance(record, EvaluationRecord) for record in card.evaluations.values())
    (tmp_path / "written").mkdir()
    write_card(tmp_path / "written", card)
    assert json.loads((tmp_path / "written" / "model.json").read_text(encoding="utf-8")) == original
    assert read_card(tmp_path / "written") == card


def test_the_first_model_keeps_its_calibration_notes_and_evaluations(tmp_path: Path) -> None:
    original = _copy_of_model_json("v1.0.0", tmp_path / "model")
    card = read_card(tmp_path / "model")
    assert card.calibration.threshold == original["calibration"]["threshold"]
    assert card.calibration.heldout_scans == 0  # not in the file: the reader's default, left out again on writing
    assert card.notes["training_command"] == original["card"]["training_command"]
    dev = card.evaluations["brats2018-dev-t1"]
    assert dev.metrics == Scores(**original["evaluations"]["brats2018-dev-t1"]["metrics"])
    assert dev.controls["brain_area"] == Scores(ap_image=0.78, auroc_image=0.8157)
    assert dev.members == tuple(range(10))
    # Training checks of this version did not record a sampler or the synthetic benchmark: defaults, NaN.
    check = card.members[0].training.checks[-1]
    assert (check.sampler, check.sampler_steps) == ("", 0)
    assert math.isnan(check.synthetic_ap_pixel)


def _tiny_card(folder: Path) -> ModelCard:
    return init_model_folder(folder, get_preset("tiny"), name="unit")


def test_a_new_card_holds_the_documented_keys_and_reads_back_equal(tmp_path: Path) -> None:
    card = _tiny_card(tmp_path)
    data = json.loads((tmp_path / "model.json").read_text(encoding="utf-8"))
    assert list(data) == ["format", "format_version", "name", "version", "modality", "expects_skull_stripped",
                          "ssim_convention", "preset", "created", "software", "calibration", "members"]
    assert data["format_version"] == FORMAT_VERSION
    assert data["calibration"] is None
    assert data["members"] == {}
    assert data["preset"] == json.loads(json.dumps(get_preset("tiny").to_dict()))
    assert read_card(tmp_path) == card


def test_changes_go_through_the_card_and_keep_the_rest_of_the_file(tmp_path: Path) -> None:
    original = _copy_of_model_json("v1.0.0", tmp_path / "model")
    entry = MemberEntry(file="member-0.safetensors", sha256="0" * 64, dtype="float16", fold=0,
                        training=TrainingSummary(fold=0, train_tasks=(0, 1, 2), steps=5,
                                                 checks=(TrainingCheck(5, 0.1, 0.2, 0.3, 0.4, "ddim", 5),)))
    record = EvaluationRecord(dataset="d", modality="t1", sampler="ddim", steps=5, seed=0, members=(0,),
                              metrics=Scores(0.5, 0.6, 0.1, 0.2), controls={"random": Scores(0.4, 0.5, 0.01, 0.02)},
                              counts={"cases": 1}, counting="c", seconds=1.0, recorded="now", command="cmd",
                              healthy=HealthyReport(2, 0.1, 0.01, None, None))
    update_card(tmp_path / "model", lambda card: card.with_member(entry).with_evaluation("new", record))
    data = json.loads((tmp_path / "model" / "model.json").read_text(encoding="utf-8"))
    assert list(data["members"]) == list(original["members"])  # a replaced member keeps its place
    assert data["members"]["0"]["training"]["checks"][0]["sampler"] == "ddim"
    assert data["members"]["0"]["training"]["fold"] == 0
    assert data["members"]["1"] == original["members"]["1"]
    assert data["evaluations"]["new"]["healthy"]["scans"] == 2
    assert "removal" not in data["evaluations"]["new"]  # parts that did not run are left out
    assert data["evaluations"]["brats2018-dev-t1"] == original["evaluations"]["brats2018-dev-t1"]
    assert {k: v for k, v in data.items() if k not in ("members", "evaluations")} == {
        k: v for k, v in original.items() if k not in ("members", "evaluations")}
    again = read_card(tmp_path / "model")
    assert again.members[0] == entry
    assert again.evaluations["new"] == record


def _damaged(folder: Path, change) -> Path:  # noqa: ANN001
    _tiny_card(folder)
    path = folder / "model.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(json.dumps(data), encoding="utf-8")
    return folder


@pytest.mark.parametrize(("change", "says"), [
    (lambda d: d.update(colour="red"), "unknown key 'colour'"),
    (lambda d: d["preset"].update(colour="red"), "unknown Preset keys: ['colour']"),
    (lambda d: d.update(calibration={"threshold": 0.2, "healthy_fpr": 0.01, "display_max": 0.4, "colour": 1}),
     "'calibration' has an unknown key 'colour'"),
    (lambda d: d.update(calibration={"threshold": float("nan"), "healthy_fpr": 0.01, "display_max": 0.4}),
     "threshold is nan"),
    (lambda d: d.update(format_version=FORMAT_VERSION + 1), "newer condiff"),
    (lambda d: d.update(evaluations={"x": {"dataset": "d"}}), "'evaluations.x' lacks the key 'modality'"),
    (lambda d: d.update(training_data={"train": 3}), "'training_data.train' should be text, not a whole number"),
])
def test_a_card_it_cannot_trust_is_refused_in_one_line_naming_the_key(tmp_path: Path, change, says: str) -> None:  # noqa: ANN001
    folder = _damaged(tmp_path, change)
    with pytest.raises(ModelLoadError) as info:
        read_card(folder)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(folder / "model.json"))
    assert says in message


def test_member_tables_are_checked_key_by_key(tmp_path: Path) -> None:
    def add_member(extra: dict) -> Path:
        entry = {"file": "member-2.safetensors", "sha256": "a" * 64, "dtype": "float16", "fold": 2,
                 "training": {"steps": 3}, **extra}
        folder = tmp_path / str(len(list(tmp_path.iterdir())))
        _damaged(folder, lambda d: d["members"].update({"2": entry}))
        return folder

    assert read_card(add_member({})).members[2].training.steps == 3
    for extra, says in (({"weights": 1}, "'members.2' has an unknown key 'weights'"),
                        ({"fold": 4}, "member 2 records fold 4"),
                        ({"training": {"checks": [{"step": 1}]}}, "'members.2.training.checks.0' lacks the key")):
        with pytest.raises(ModelLoadError, match=says):
            read_card(add_member(extra))


def test_a_card_of_format_zero_reads_and_is_written_as_the_current_format(tmp_path: Path) -> None:
    folder = _damaged(tmp_path / "old", lambda d: d.pop("format_version"))
    card = read_card(folder)
    assert card_to_json(card)["format_version"] == FORMAT_VERSION
    assert dataclasses.replace(card, layout="") == card  # the layout is not part of what the card says
