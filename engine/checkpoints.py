"""Model folders: ``model.json`` plus one ``member-<fold>.safetensors`` per ensemble member.

``model.json`` holds everything needed to use the weights: name, version, modality, the resolved preset (network,
model-space geometry, diffusion settings), the SSIM convention, the calibration, and per member its fold, training
summary and the sha256 of its weight file. Weights are safetensors (never pickled); a member whose file hash does not
match ``model.json`` is refused. Several training processes may add members to one folder: ``model.json`` is only
changed under an exclusive lock and replaced atomically.

Training checkpoints (optimiser, EMA, step) live apart, in ``<model>/.train/fold-<k>/``, as ``torch.save`` state dicts
loaded with ``weights_only=True``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import math
import platform
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from engine.config import Preset
from engine.errors import ModelLoadError
from engine.samplers import SAMPLERS
from engine.tasks.registry import NUM_FOLDS, fold_tasks
from engine.volumes import atomic_write_bytes, atomic_write_json

FORMAT = "condiff-model"
FORMAT_VERSION = 1
MODEL_JSON = "model.json"


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


@contextlib.contextmanager
def _locked(model_dir: Path) -> Iterator[None]:
    lock_path = model_dir / ".model.json.lock"
    with lock_path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def read_model_json(model_dir: str | Path) -> dict[str, Any]:
    """Read and check ``model.json`` of a model folder.

    Raises:
        ModelLoadError: the folder or file is missing, unreadable or not a condiff model.
    """
    model_dir = Path(model_dir)
    path = model_dir / MODEL_JSON
    if not model_dir.is_dir():
        raise ModelLoadError(f"{model_dir}: model folder not found")
    if not path.is_file():
        raise ModelLoadError(f"{model_dir}: not a model folder (no {MODEL_JSON})")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{path}: unreadable ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelLoadError(f"{path}: not a condiff model description")
    version = meta.get("format_version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise ModelLoadError(f"{path}: format_version {version!r} is not a whole number")
    if version > FORMAT_VERSION:
        raise ModelLoadError(f"{path}: written by a newer condiff (format {version}, this one reads up to "
                             f"{FORMAT_VERSION}); update condiff")
    _check_description(path, meta)
    return meta


_SHA256 = re.compile(r"[0-9a-f]{64}")


def _problem_text(exc: BaseException) -> str:
    if isinstance(exc, KeyError):
        return f"missing {exc.args[0]!r}" if exc.args else "a missing key"
    return " ".join(str(exc).split()) or type(exc).__name__


def _check_description(path: Path, meta: dict[str, Any]) -> None:
    """Check that ``model.json`` holds what loading a model reads, with the right types.

    A damaged or hand-edited file then fails here with one line naming the key, rather than later with a KeyError or
    TypeError deep in loading.

    Raises:
        ModelLoadError: a key is missing or of the wrong type, the preset cannot be rebuilt, a member entry has no
            plain ``.safetensors`` file name inside the folder or no sha256, or the calibration is unreadable.
    """
    for key, kind, text in (("name", str, "text"), ("version", (str, int, float), "text or a number"),
                            ("preset", dict, "a table"), ("members", dict, "a table")):
        if key not in meta:
            raise ModelLoadError(f"{path}: lacks the key {key!r}")
        value = meta[key]
        if isinstance(value, bool) or not isinstance(value, kind):
            raise ModelLoadError(f"{path}: {key!r} should be {text}, not {type(value).__name__}")
    for key in ("modality", "ssim_convention", "slice_score"):
        if key in meta and not isinstance(meta[key], str):
            raise ModelLoadError(f"{path}: {key!r} should be text, not {type(meta[key]).__name__}")
    try:
        preset = Preset.from_dict(meta["preset"])
    except (KeyError, TypeError, ValueError) as exc:  # ConfigError is a ValueError
        raise ModelLoadError(f"{path}: its preset is unreadable ({_problem_text(exc)})") from exc
    if preset.default_sampler not in SAMPLERS:
        raise ModelLoadError(f"{path}: its preset's default sampler {preset.default_sampler!r} is not one of "
                             f"{', '.join(SAMPLERS)}")
    if isinstance(preset.default_steps, bool) or not isinstance(preset.default_steps, int) or preset.default_steps < 1:
        raise ModelLoadError(f"{path}: its preset's default_steps {preset.default_steps!r} is not a whole number >= 1")
    for fold, entry in meta["members"].items():
        try:
            fold_tasks(int(fold)) if str(fold).isdigit() else fold_tasks(fold)
        except ValueError:
            raise ModelLoadError(f"{path}: member key {fold!r} is not a fold (0..{NUM_FOLDS - 1})") from None
        if not isinstance(entry, dict):
            raise ModelLoadError(f"{path}: member {fold} should be a table, not {type(entry).__name__}")
        name = entry.get("file")
        if not isinstance(name, str) or Path(name).name != name or not name.endswith(".safetensors"):
            raise ModelLoadError(f"{path}: member {fold} names {name!r}; its file name must be a .safetensors file in "
                                 "the model folder")
        if not isinstance(entry.get("sha256"), str) or not _SHA256.fullmatch(entry["sha256"]):
            raise ModelLoadError(f"{path}: member {fold} has no valid sha256; refusing to load unverified weights")
        if not isinstance(entry.get("training", {}), dict):
            raise ModelLoadError(f"{path}: member {fold}'s training summary should be a table")
    _check_calibration(path, meta.get("calibration"))


def _check_calibration(path: Path, data: Any) -> None:
    if data is None:
        return
    from engine.results import Calibration  # noqa: PLC0415 - a light module, only needed here

    if not isinstance(data, dict):
        raise ModelLoadError(f"{path}: its calibration should be a table, not {type(data).__name__}")
    try:
        calibration = Calibration(**data)
    except TypeError as exc:
        raise ModelLoadError(f"{path}: its calibration is unreadable ({_problem_text(exc)})") from exc
    for key in ("threshold", "display_max"):
        value = getattr(calibration, key)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ModelLoadError(f"{path}: its calibration's {key} is {value!r}, not a finite number")


def update_model_json(model_dir: str | Path, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Apply ``change`` to ``model.json`` under an exclusive lock and write it back atomically."""
    model_dir = Path(model_dir)
    with _locked(model_dir):
        meta = read_model_json(model_dir)
        change(meta)
        atomic_write_json(model_dir / MODEL_JSON, meta)
    return meta


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
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Create ``model.json`` for a new model, or check that an existing one was made with the same preset.

    Presets that differ only in their sampler defaults or description are the same for training: the stored ones
    are kept, since they describe how the folder's model is meant to run.

    Raises:
        ModelLoadError: the folder holds a model with a different preset.
    """
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    with _locked(model_dir):
        path = model_dir / MODEL_JSON
        if path.exists():
            meta = read_model_json(model_dir)
            try:
                stored = Preset.from_dict(meta["preset"]).training_identity()
            except (KeyError, TypeError, ValueError):
                stored = None
            wanted = preset.training_identity()
            if stored != wanted:
                differs = ", ".join(_differences(stored, wanted)) if stored is not None else "unreadable preset"
                raise ModelLoadError(f"{model_dir}: holds a model with another preset ({differs}); choose a new "
                                     "--out folder")
            return meta
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "name": name,
            "version": version,
            "modality": modality,
            "expects_skull_stripped": expects_skull_stripped,
            "ssim_convention": ssim_convention,
            "preset": preset.to_dict(),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "software": software_versions(),
            "calibration": None,
            "members": {},
            **(extra or {}),
        }
        atomic_write_json(path, meta)
        return meta


def save_member(
    model_dir: str | Path,
    fold: int,
    state_dict: dict[str, torch.Tensor],
    summary: dict[str, Any],
    *,
    dtype: torch.dtype = torch.float16,
) -> Path:
    """Write one member's weights and record it (with its hash and training summary) in ``model.json``.

    Weights are stored as ``dtype`` (half precision by default, which halves the shipped size; they are loaded back
    as float32).
    """
    model_dir = Path(model_dir)
    tensors = {k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous()
               for k, v in state_dict.items()}
    payload = save_safetensors(tensors, metadata={"format": FORMAT, "fold": str(fold)})
    path = atomic_write_bytes(model_dir / member_filename(fold), payload)
    digest = hashlib.sha256(payload).hexdigest()

    def record(meta: dict[str, Any]) -> None:
        meta["members"][str(fold)] = {
            "file": path.name,
            "sha256": digest,
            "dtype": str(dtype).replace("torch.", ""),
            "fold": fold,
            "training": summary,
        }

    update_model_json(model_dir, record)
    return path


def load_member_state(model_dir: str | Path, fold: int, meta: dict[str, Any] | None = None) -> dict[str, torch.Tensor]:
    """Load one member's weights (as float32) after checking the file's sha256 against ``model.json``.

    Raises:
        ModelLoadError: the member is not listed, its file is missing, or its hash differs.
    """
    model_dir = Path(model_dir)
    meta = meta if meta is not None else read_model_json(model_dir)
    entry = meta.get("members", {}).get(str(fold))
    if entry is None:
        raise ModelLoadError(f"{model_dir}: has no member for fold {fold}")
    path = model_dir / entry["file"]
    try:
        payload = path.read_bytes()
    except OSError:
        raise ModelLoadError(f"{path}: member file missing") from None
    if hashlib.sha256(payload).hexdigest() != entry.get("sha256"):
        raise ModelLoadError(f"{path}: sha256 does not match model.json (altered or corrupt); refusing to load")
    try:
        tensors = load_safetensors(payload)
    except Exception as exc:  # safetensors raises its own error types
        raise ModelLoadError(f"{path}: not a valid safetensors file ({' '.join(str(exc).split())})") from exc
    _check_fits(path, tensors, meta)
    broken = [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if broken:
        raise ModelLoadError(f"{path}: {len(broken)} weight tensors hold NaN or infinite values (e.g. {broken[0]!r}); "
                             "refusing to load")
    return {k: (v.float() if v.is_floating_point() else v) for k, v in tensors.items()}


def _check_fits(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Refuse weights that do not fit the network of the folder's preset, naming what differs, in one line."""
    from engine.network import build_unet  # noqa: PLC0415 - diffusers loads only with a model

    preset = Preset.from_dict(meta["preset"])
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
