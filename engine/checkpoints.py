"""Model folders: ``model.json`` (the model card, :mod:`engine.card`) plus one ``member-<fold>.safetensors`` per
ensemble member.

Weights are safetensors (never pickled); a member whose file hash does not match the card is refused. Several training
processes may add members to one folder: the card is only changed under the folder's lock and replaced atomically.

Training checkpoints (optimiser, EMA, step) live apart, in ``<model>/.train/fold-<k>/``, as ``torch.save`` state dicts
loaded with ``weights_only=True``.
"""

from __future__ import annotations

import hashlib
import io
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from engine.card import (
    FORMAT,
    MODEL_JSON,
    MemberEntry,
    ModelCard,
    TrainingData,
    TrainingSummary,
    model_lock,
    read_card,
    update_card,
    write_card,
)
from engine.card import read_model_json as read_model_json  # the card as plain JSON, for scripts and tests
from engine.config import Preset
from engine.errors import ModelLoadError, one_line
from engine.writers import atomic_write_bytes


def member_filename(fold: int) -> str:
    """File name of the member trained on ``fold``."""
    return f"member-{fold}.safetensors"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def software_versions() -> dict[str, str]:
    """Versions of the software that matter for reproducing a model."""
    import diffusers  # noqa: PLC0415 - only needed here

    from engine import __version__

    return {
        "condiff": __version__,
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def _differences(stored: dict[str, Any], wanted: dict[str, Any], prefix: str = "") -> list[str]:
    """``key: <stored> in the folder, <wanted> asked`` for each setting that differs between two nested presets."""
    out = []
    for key in sorted(set(stored) | set(wanted)):
        a, b = stored.get(key), wanted.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} in the folder, {b!r} asked")
    return out


def init_model_folder(
    model_dir: str | Path,
    preset: Preset,
    *,
    name: str,
    version: str = "1.0.0",
    modality: str = "t1",
    expects_skull_stripped: bool = True,
    ssim_convention: str = "standard",
    training_data: TrainingData | None = None,
) -> ModelCard:
    """Create the card of a new model, or check that an existing one was made with the same preset.

    Presets that differ only in their sampler defaults or description are the same for training: the stored ones
    are kept, since they describe how the folder's model is meant to run.

    Returns:
        The folder's card.

    Raises:
        ModelLoadError: the folder holds a model with a different preset.
    """
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    with model_lock(model_dir):
        if (model_dir / MODEL_JSON).exists():
            card = read_card(model_dir)
            stored, wanted = card.preset.training_identity(), preset.training_identity()
            if stored != wanted:
                raise ModelLoadError(f"{model_dir}: holds a model with another preset "
                                     f"({', '.join(_differences(stored, wanted))}); choose a new --out folder")
            return card
        card = ModelCard(
            name=name,
            version=version,
            modality=modality,
            expects_skull_stripped=expects_skull_stripped,
            ssim_convention=ssim_convention,
            preset=preset,
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            software=software_versions(),
            members={},
            training_data=training_data,
        )
        write_card(model_dir, card)
        return card


def save_member(
    model_dir: str | Path,
    fold: int,
    state_dict: dict[str, torch.Tensor],
    summary: TrainingSummary,
    *,
    dtype: torch.dtype = torch.float16,
) -> Path:
    """Write one member's weights and record it (with its hash and training summary) in the folder's card.

    Weights are stored as ``dtype`` (half precision by default, which halves the shipped size; they are loaded back
    as float32).
    """
    model_dir = Path(model_dir)
    tensors = {k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous()
               for k, v in state_dict.items()}
    payload = save_safetensors(tensors, metadata={"format": FORMAT, "fold": str(fold)})
    path = atomic_write_bytes(model_dir / member_filename(fold), payload)
    entry = MemberEntry(file=path.name, sha256=hashlib.sha256(payload).hexdigest(),
                        dtype=str(dtype).replace("torch.", ""), fold=fold, training=summary)
    update_card(model_dir, lambda card: card.with_member(entry))
    return path


def load_member_state(model_dir: str | Path, fold: int, card: ModelCard | None = None) -> dict[str, torch.Tensor]:
    """Load one member's weights (as float32) after checking the file's sha256 against the card.

    Raises:
        ModelLoadError: the member is not listed, its file is missing, or its hash differs.
    """
    model_dir = Path(model_dir)
    card = card if card is not None else read_card(model_dir)
    entry = card.members.get(fold)
    if entry is None:
        raise ModelLoadError(f"{model_dir}: has no member for fold {fold}")
    path = model_dir / entry.file
    try:
        payload = path.read_bytes()
    except OSError:
        raise ModelLoadError(f"{path}: member file missing") from None
    if hashlib.sha256(payload).hexdigest() != entry.sha256:
        raise ModelLoadError(f"{path}: sha256 does not match model.json (altered or corrupt); refusing to load")
    try:
        tensors = load_safetensors(payload)
    except Exception as exc:  # safetensors raises its own error types
        raise ModelLoadError(f"{path}: not a valid safetensors file ({one_line(exc)})") from exc
    _check_fits(path, tensors, card.preset)
    broken = [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if broken:
        raise ModelLoadError(f"{path}: {len(broken)} weight tensors hold NaN or infinite values (e.g. {broken[0]!r}); "
                             "refusing to load")
    return {k: (v.float() if v.is_floating_point() else v) for k, v in tensors.items()}


def _check_fits(path: Path, tensors: dict[str, torch.Tensor], preset: Preset) -> None:
    """Refuse weights that do not fit the network of the folder's preset, naming what differs, in one line."""
    from engine.network import build_unet  # noqa: PLC0415 - diffusers loads only with a model

    with torch.device("meta"):  # shapes only: nothing is allocated
        expected = {k: tuple(v.shape) for k, v in build_unet(preset.unet, preset.preprocess.size).state_dict().items()}
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    reshaped = sorted(k for k in set(expected) & set(tensors) if tuple(tensors[k].shape) != expected[k])
    problems = []
    if missing:
        problems.append(f"{len(missing)} tensors missing (e.g. {missing[0]!r})")
    if extra:
        problems.append(f"{len(extra)} unknown tensors (e.g. {extra[0]!r})")
    if reshaped:
        key = reshaped[0]
        problems.append(f"{len(reshaped)} of another shape (e.g. {key!r}: {tuple(tensors[key].shape)} instead of "
                        f"{expected[key]})")
    if problems:
        raise ModelLoadError(f"{path}: does not fit the network of the model's preset: {'; '.join(problems)}")


def save_training_state(path: Path, state: dict[str, Any]) -> None:
    """Write a training checkpoint atomically (tensors and plain Python values only)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_training_state(path: Path) -> dict[str, Any]:
    """Read a training checkpoint without unpickling arbitrary objects.

    Raises:
        ModelLoadError: the file is unreadable or holds something other than tensors and plain values.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or unsafe files
        raise ModelLoadError(f"{path}: cannot resume from this checkpoint ({type(exc).__name__}: {exc})") from exc
