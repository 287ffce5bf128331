"""Model folders: hashes are checked, nothing is unpickled, and several folds share one model.json."""

from __future__ import annotations

import dataclasses
import json
import pickle
from pathlib import Path

import pytest
import torch

from engine import checkpoints
from engine.card import ModelCard, TrainingSummary, read_card, update_card
from engine.config import get_preset
from engine.ensemble import load_ensemble
from engine.errors import ModelLoadError
from engine.network import build_unet


def _model_with_members(tmp_path: Path, folds: tuple[int, ...] = (0, 3)) -> Path:
    preset = get_preset("tiny")
    checkpoints.init_model_folder(tmp_path, preset, name="unit")
    for fold in folds:
        torch.manual_seed(fold)
        state = build_unet(preset.unet, preset.preprocess.size).state_dict()
        checkpoints.save_member(tmp_path, fold, state, TrainingSummary(steps=fold), dtype=torch.float32)
    return tmp_path


def test_members_round_trip_and_are_recorded(tmp_path: Path) -> None:
    model_dir = _model_with_members(tmp_path)
    meta = checkpoints.read_model_json(model_dir)
    assert sorted(meta["members"]) == ["0", "3"]
    assert meta["members"]["3"]["sha256"] == checkpoints.sha256_file(model_dir / "member-3.safetensors")
    state = checkpoints.load_member_state(model_dir, 3)
    torch.manual_seed(3)
    expected = build_unet(get_preset("tiny").unet, 32).state_dict()
    assert all(torch.equal(state[k], expected[k]) for k in expected)
    ensemble = load_ensemble(model_dir, device="cpu")
    assert ensemble.info.members == 2
    assert ensemble.info.folds == (0, 3)


def test_an_altered_member_is_refused(tmp_path: Path) -> None:
    model_dir = _model_with_members(tmp_path)
    path = model_dir / "member-0.safetensors"
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="sha256"):
        load_ensemble(model_dir, device="cpu")


def test_a_member_of_another_network_shape_is_one_line_naming_the_mismatch(tmp_path: Path) -> None:
    preset = get_preset("tiny")
    checkpoints.init_model_folder(tmp_path, preset, name="unit")
    state = build_unet(preset.unet, preset.preprocess.size).state_dict()
    state["conv_in.weight"] = state["conv_in.weight"][:, :1].clone()  # a network that takes one channel, not two
    checkpoints.save_member(tmp_path, 0, state, TrainingSummary(steps=1), dtype=torch.float32)
    with pytest.raises(ModelLoadError) as info:
        load_ensemble(tmp_path, device="cpu")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{tmp_path / 'member-0.safetensors'}: does not fit the network of the model's preset")
    assert "'conv_in.weight': (8, 1, 3, 3) instead of (8, 2, 3, 3)" in message


def test_a_missing_member_file_is_refused(tmp_path: Path) -> None:
    model_dir = _model_with_members(tmp_path)
    (model_dir / "member-3.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="member file missing"):
        load_ensemble(model_dir, device="cpu")


@pytest.mark.parametrize("content", ["", "{not json", json.dumps({"format": "something-else"})])
def test_a_folder_without_a_valid_model_json_is_refused(tmp_path: Path, content: str) -> None:
    if content:
        (tmp_path / "model.json").write_text(content)
    with pytest.raises(ModelLoadError) as info:
        load_ensemble(tmp_path, device="cpu")
    assert str(tmp_path) in str(info.value)
    assert "\n" not in str(info.value)


def test_another_preset_cannot_join_a_model_folder(tmp_path: Path) -> None:
    _model_with_members(tmp_path, folds=(0,))
    with pytest.raises(ModelLoadError, match="another preset"):
        checkpoints.init_model_folder(tmp_path, get_preset("small"), name="unit")


def test_sampler_defaults_chosen_after_training_do_not_block_more_members(tmp_path: Path) -> None:
    _model_with_members(tmp_path, folds=(0,))
    tiny = get_preset("tiny")

    def set_steps(card: ModelCard) -> ModelCard:
        return dataclasses.replace(card, preset=dataclasses.replace(card.preset, default_steps=tiny.default_steps + 3))

    update_card(tmp_path, set_steps)
    card = checkpoints.init_model_folder(tmp_path, tiny, name="unit")  # the code's preset still has the old default
    assert card.preset.default_steps == tiny.default_steps + 3  # the folder keeps the one chosen for it
    assert read_card(tmp_path).preset.default_steps == tiny.default_steps + 3
    changed = dataclasses.replace(tiny, diffusion=dataclasses.replace(tiny.diffusion, offset_noise=0.0))
    with pytest.raises(ModelLoadError, match="another preset"):
        checkpoints.init_model_folder(tmp_path, changed, name="unit")


def test_training_checkpoints_never_unpickle_objects(tmp_path: Path) -> None:
    class Payload:
        def __reduce__(self) -> tuple:
            return (Path.write_text, (tmp_path / "pwned", "x"))

    path = tmp_path / "checkpoint.pt"
    with path.open("wb") as fh:
        pickle.dump({"step": Payload()}, fh)
    with pytest.raises(ModelLoadError, match="cannot resume"):
        checkpoints.load_training_state(path)
    assert not (tmp_path / "pwned").exists()


def test_members_are_stored_in_half_precision_by_default(tmp_path: Path) -> None:
    preset = get_preset("tiny")
    checkpoints.init_model_folder(tmp_path, preset, name="unit")
    state = build_unet(preset.unet, preset.preprocess.size).state_dict()
    path = checkpoints.save_member(tmp_path, 0, state, TrainingSummary())
    assert read_card(tmp_path).members[0].dtype == "float16"
    loaded = checkpoints.load_member_state(tmp_path, 0)
    assert all(loaded[k].dtype == torch.float32 for k in loaded)
    assert all(torch.allclose(loaded[k], state[k].half().float()) for k in state)
    assert path.stat().st_size < 0.6 * sum(v.numel() * 4 for v in state.values())
