"""The model card: a model folder's ``model.json`` as typed, frozen records, with its one reader and one writer.

``model.json`` holds everything needed to use a model's weights: name, version, modality, the resolved preset
(network, model-space geometry, diffusion settings), the SSIM convention and slice score, the calibration, per member
its fold, weight file, sha256 and training summary, the software versions, and what evaluations found.
:class:`ModelCard` is that file, typed; :func:`read_card` is the only reader and :func:`write_card` the only writer,
and :func:`update_card` changes a folder's card under a lock, since several training processes may add members to
one folder.

The format is versioned (``format_version``): a file from a newer condiff is refused, one from an older version is
read as it is. Every key is checked: a missing one, one of the wrong type or an unknown one is a one-line
:class:`~engine.errors.ModelLoadError` naming it. A card read from disk is written back in the layout it was read in
(see :mod:`engine.json_records`), so reading and writing a file that nothing changed gives the same JSON.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from engine.config import MapScoring, Preset
from engine.errors import ModelLoadError, one_line
from engine.evaluation_records import EvaluationRecord
from engine.json_records import INTERNAL, KEY, OPTIONAL, RecordError, record_from_json, record_to_json, wrong_kind
from engine.results import Calibration
from engine.samplers import SAMPLERS
from engine.tasks.registry import NUM_FOLDS
from engine.writers import atomic_write_json

FORMAT = "condiff-model"
FORMAT_VERSION = 1
MODEL_JSON = "model.json"
_LOCK = ".model.json.lock"
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class TrainingCheck:
    """The restoration checks of a member at one training step (values inside the brain or the anomaly, model
    units).

    Attributes:
        step: the training step.
        healthy_dssim / healthy_mae: 1 - SSIM and absolute error of restored healthy slices.
        anomaly_mae_to_truth / anomaly_mae_to_input: inside synthetic anomalies, the restoration's absolute error to
            the healthy truth and to the corrupted input.
        sampler / sampler_steps: what the restorations used (``""`` / 0: not recorded by older versions).
        synthetic_ap_pixel / synthetic_max_dice / synthetic_ap_image / synthetic_auroc_image: the synthetic benchmark
            on the fold's held-out tasks (:mod:`engine.synthetic`); NaN when it was not run.
    """

    step: int
    healthy_dssim: float
    healthy_mae: float
    anomaly_mae_to_truth: float
    anomaly_mae_to_input: float
    sampler: str = ""
    sampler_steps: int = 0
    synthetic_ap_pixel: float = math.nan
    synthetic_max_dice: float = math.nan
    synthetic_ap_image: float = math.nan
    synthetic_auroc_image: float = math.nan

    @property
    def removes_anomalies(self) -> bool:
        """True when restorations are closer to the healthy truth than to the corrupted input."""
        return self.anomaly_mae_to_truth < self.anomaly_mae_to_input


@dataclass(frozen=True, kw_only=True)
class TrainingSummary:
    """What training a member did; None for what the trainer that wrote it did not record.

    Attributes:
        fold: the member's fold.
        train_tasks / val_tasks: the synthetic tasks it trained and validated on.
        steps / best_step: steps run, and the step whose weights were kept (best moving-average validation loss).
        best_val_loss_ma: that loss.
        stopped_early: True when validation stopped improving before the step budget.
        seconds / steps_per_second: wall time and speed.
        batch_size / world_size / device / seed: how it ran.
        train_slices / val_slices: slices in the training and validation sets.
        checks: the restoration checks along the way.
        initialised_from: the member the weights started from (``<model id> member <fold> sha256 <hash>``), when
            training continued an existing member (``train --init-from``); None when trained from scratch.
    """

    fold: int | None = None
    train_tasks: tuple[int, ...] | None = None
    val_tasks: tuple[int, ...] | None = None
    steps: int | None = None
    best_step: int | None = None
    best_val_loss_ma: float | None = None
    stopped_early: bool | None = None
    seconds: float | None = None
    steps_per_second: float | None = None
    batch_size: int | None = None
    world_size: int | None = None
    device: str | None = None
    seed: int | None = None
    train_slices: int | None = None
    val_slices: int | None = None
    checks: tuple[TrainingCheck, ...] = ()
    initialised_from: str | None = None


@dataclass(frozen=True, kw_only=True)
class MemberEntry:
    """One ensemble member in the card.

    Attributes:
        file: its weight file, a ``.safetensors`` file in the model folder.
        sha256: hex sha256 of that file; weights whose hash differs are refused.
        dtype: the precision the weights are stored in (``"float16"``; None when not recorded).
        fold: the task fold it was trained on.
        training: its training summary.
    """

    file: str
    sha256: str
    dtype: str | None = None
    fold: int
    training: TrainingSummary = field(default_factory=TrainingSummary)


@dataclass(frozen=True, kw_only=True)
class TrainingData:
    """Which scans a model was trained on.

    Attributes:
        train / val: the training and validation folders as given to ``train``.
        train_scans / val_scans: how many scans each held.
    """

    train: str
    val: str
    train_scans: int
    val_scans: int


@dataclass(frozen=True, kw_only=True)
class ModelCard:
    """A model folder's ``model.json``.

    Attributes:
        name / version: the model's name and version (``model_id`` is ``"<name>-v<version>"``).
        modality: the MR contrast it was trained on.
        expects_skull_stripped: True if it was trained on brain-extracted scans.
        ssim_convention: ``"standard"`` or ``"paper"`` constants of the anomaly map.
        preset: the resolved preset the members were trained with (sampler defaults may be chosen later).
        created: when the folder was made (ISO 8601, UTC).
        software: versions of the software that trained it.
        calibration: the healthy-scan calibration, or None before ``calibrate``.
        members: the members by fold, in the order they were added.
        slice_score: how a slice's score is made from its map (:data:`engine.anomaly.SliceScoreMode`).
        scoring: how a restoration is compared with its input (:class:`engine.config.MapScoring`; absent in older
            cards, which used the plain comparison).
        training_data: the scans it was trained on (None when not recorded).
        notes: free-text notes for readers of the card (status, the commands that made the model; JSON key ``card``).
        evaluations: recorded evaluations by name (``evaluate --record NAME``).
        layout: the JSON text the card was read from (empty for a new card); :func:`card_to_json` keeps its layout.
    """

    name: str
    version: str | int | float
    modality: str = "t1"
    expects_skull_stripped: bool = True
    ssim_convention: str = "standard"
    preset: Preset
    created: str | None = None
    software: Mapping[str, str] = field(default_factory=dict)
    calibration: Calibration | None = None
    members: Mapping[int, MemberEntry]
    slice_score: str = field(default="canvas", metadata={OPTIONAL: True})
    scoring: MapScoring = field(default_factory=MapScoring, metadata={OPTIONAL: True})
    training_data: TrainingData | None = field(default=None, metadata={OPTIONAL: True})
    notes: Mapping[str, str] = field(default_factory=dict, metadata={OPTIONAL: True, KEY: "card"})
    evaluations: Mapping[str, EvaluationRecord] = field(default_factory=dict, metadata={OPTIONAL: True})
    layout: str = field(default="", repr=False, compare=False, metadata={INTERNAL: True})

    @property
    def model_id(self) -> str:
        """``"<name>-v<version>"``."""
        return f"{self.name}-v{self.version}"

    def with_member(self, entry: MemberEntry) -> ModelCard:
        """The card with ``entry`` added, or in place of the member of the same fold."""
        return replace(self, members={**self.members, entry.fold: entry})

    def with_evaluation(self, name: str, record: EvaluationRecord) -> ModelCard:
        """The card with ``record`` kept as evaluation ``name`` (replacing one of that name)."""
        return replace(self, evaluations={**self.evaluations, name: record})


# ------------------------------------------------------------------------------------------------------ reading
def _problem_text(exc: BaseException) -> str:
    if isinstance(exc, KeyError):
        return f"missing {exc.args[0]!r}" if exc.args else "a missing key"
    return one_line(exc) or type(exc).__name__


def _preset_from_json(value: Any) -> Preset:
    if not isinstance(value, dict):
        raise wrong_kind("preset", Preset, value)
    unknown = sorted(set(value) - {f.name for f in fields(Preset)})
    if unknown:
        raise RecordError("", f"its preset is unreadable (unknown Preset keys: {unknown})")
    try:
        preset = Preset.from_dict(value)
    except (KeyError, TypeError, ValueError) as exc:  # ConfigError is a ValueError
        raise RecordError("", f"its preset is unreadable ({_problem_text(exc)})") from exc
    if preset.default_sampler not in SAMPLERS:
        raise RecordError("", f"its preset's default sampler {preset.default_sampler!r} is not one of "
                              f"{', '.join(SAMPLERS)}")
    if isinstance(preset.default_steps, bool) or not isinstance(preset.default_steps, int) or preset.default_steps < 1:
        raise RecordError("", f"its preset's default_steps {preset.default_steps!r} is not a whole number >= 1")
    return preset


def _member_from_json(key: str, entry: Any) -> MemberEntry:
    fold = int(key) if key.isdigit() else -1
    if not 0 <= fold < NUM_FOLDS:
        raise RecordError("", f"member key {key!r} is not a fold (0..{NUM_FOLDS - 1})")
    if not isinstance(entry, dict):
        raise RecordError("", f"member {key} should be a table, not {type(entry).__name__}")
    name = entry.get("file")
    if not isinstance(name, str) or Path(name).name != name or not name.endswith(".safetensors"):
        raise RecordError("", f"member {key} names {name!r}; its file name must be a .safetensors file in the model "
                              "folder")
    if not isinstance(entry.get("sha256"), str) or not _SHA256.fullmatch(entry["sha256"]):
        raise RecordError("", f"member {key} has no valid sha256; refusing to load unverified weights")
    if not isinstance(entry.get("training", {}), dict):
        raise RecordError("", f"member {key}'s training summary should be a table")
    member = record_from_json(MemberEntry, entry, f"members.{key}", given={} if "fold" in entry else {"fold": fold})
    if member.fold != fold:
        raise RecordError("", f"member {key} records fold {member.fold}")
    return member


def _members_from_json(value: Any) -> dict[int, MemberEntry]:
    if not isinstance(value, dict):
        raise wrong_kind("members", Mapping[str, MemberEntry], value)
    return {int(key): _member_from_json(key, entry) for key, entry in value.items()}


def _check_calibration(calibration: Calibration | None) -> None:
    if calibration is None:
        return
    for key in ("threshold", "display_max"):
        value = getattr(calibration, key)
        if not math.isfinite(value):
            raise RecordError("", f"its calibration's {key} is {value!r}, not a finite number")


def card_from_json(data: Any, source: str | Path, *, layout: str = "") -> ModelCard:
    """The card that parsed ``model.json`` content describes.

    Args:
        data: the parsed JSON.
        source: where it came from (the start of every error message).
        layout: the JSON text it was parsed from, kept on the card for writing it back in the same layout.

    Raises:
        ModelLoadError: not a condiff model, a newer format, or a key that is missing, unknown or of the wrong type.
    """
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ModelLoadError(f"{source}: not a condiff model description")
    version = data.get("format_version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise ModelLoadError(f"{source}: format_version {version!r} is not a whole number")
    if version > FORMAT_VERSION:
        raise ModelLoadError(f"{source}: written by a newer condiff (format {version}, this one reads up to "
                             f"{FORMAT_VERSION}); update condiff")
    body = {k: v for k, v in data.items() if k not in ("format", "format_version")}
    try:
        for key in ("name", "version", "preset", "members"):
            if key not in body:
                raise RecordError("", f"lacks the key {key!r}")
        given = {"preset": _preset_from_json(body.pop("preset")), "members": _members_from_json(body.pop("members")),
                 "layout": layout}
        card = record_from_json(ModelCard, body, given=given)
        _check_calibration(card.calibration)
    except RecordError as error:
        raise ModelLoadError(f"{source}: {error}") from None
    return card


def read_card(model_dir: str | Path) -> ModelCard:
    """Read and check the card of a model folder.

    Raises:
        ModelLoadError: the folder or its ``model.json`` is missing or unreadable, or not a valid condiff model card.
    """
    model_dir = Path(model_dir)
    path = model_dir / MODEL_JSON
    if not model_dir.is_dir():
        raise ModelLoadError(f"{model_dir}: model folder not found")
    if not path.is_file():
        raise ModelLoadError(f"{model_dir}: not a model folder (no {MODEL_JSON})")
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{path}: unreadable ({exc})") from exc
    return card_from_json(data, path, layout=text)


def read_model_json(model_dir: str | Path) -> dict[str, Any]:
    """The folder's card, checked by :func:`read_card`, as plain JSON data (what ``model.json`` holds).

    Raises:
        ModelLoadError: as :func:`read_card`.
    """
    return card_to_json(read_card(model_dir))


# ------------------------------------------------------------------------------------------------------ writing
def card_to_json(card: ModelCard) -> dict[str, Any]:
    """The JSON content of ``model.json`` for ``card``; a card read from disk keeps the layout it was read in."""
    like = json.loads(card.layout) if card.layout else None
    out = {"format": FORMAT, "format_version": FORMAT_VERSION, **record_to_json(card, like)}
    if like:
        out = {**{k: out[k] for k in like if k in out}, **{k: v for k, v in out.items() if k not in like}}
    return out


def write_card(model_dir: str | Path, card: ModelCard) -> Path:
    """Write ``card`` as the folder's ``model.json``, atomically. Where other processes may write the same folder,
    hold :func:`model_lock` (as :func:`update_card` does)."""
    return atomic_write_json(Path(model_dir) / MODEL_JSON, card_to_json(card))


@contextlib.contextmanager
def model_lock(model_dir: str | Path) -> Iterator[None]:
    """Hold the folder's exclusive ``model.json`` lock (an advisory ``flock``, shared by all condiff processes)."""
    with (Path(model_dir) / _LOCK).open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def update_card(model_dir: str | Path, change: Callable[[ModelCard], ModelCard]) -> ModelCard:
    """Read the folder's card, apply ``change`` and write the result, all under the folder's lock.

    Returns:
        The card as written.
    """
    with model_lock(model_dir):
        card = change(read_card(model_dir))
        write_card(model_dir, card)
    return card
