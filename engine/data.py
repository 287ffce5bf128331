"""Healthy training slices: a folder of scans (and brain masks) turned into model-space axial slices.

:func:`find_scans` pairs each scan in a folder with its brain mask; :func:`landmarks_for_training` fits the
``"landmarks"`` intensity normalisation on the training scans' brains; :class:`HealthySlices` converts them all with
:func:`engine.preprocess.to_model_space` (skull-stripped with the mask, brain slices only) and serves the slices
as ``(image, foreground)`` pairs, the :class:`engine.tasks.base.SliceSource` protocol the training loop and the
synthetic tasks use. The arrays can be cached in an ``.npz`` file keyed by the file list and the spec.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from engine.config import LANDMARK_PERCENTILES, PreprocessSpec
from engine.errors import DataError, VolumeError
from engine.preprocess import fit_landmarks, foreground_mask, to_model_space
from engine.progress import CancelToken, ProgressCallback, ProgressThrottle, check_cancel
from engine.readers import load_mask, load_volume
from engine.writers import atomic_write_bytes

__all__ = ["ROLES", "ROLE_PERIOD", "HealthySlices", "ScanPair", "find_scans", "landmarks_for_training",
           "scans_for_role", "split_roles", "split_scans"]

logger = logging.getLogger(__name__)

_CACHE_VERSION = 1


@dataclass(frozen=True)
class ScanPair:
    """A scan and its brain mask (None when the scan is used without one)."""

    image: Path
    mask: Path | None


def _suffix_from_pattern(pattern: str) -> str:
    """The fixed end of a glob pattern (``"*_T1.nii.gz"`` -> ``"_T1.nii.gz"``)."""
    tail = pattern.rsplit("*", 1)[-1]
    return tail if not any(c in tail for c in "?[]") else ""


def find_scans(folder: str | Path, *, image_pattern: str = "*_T1.nii.gz",
               mask_suffix: str | None = "_brainmask.nii.gz", image_suffix: str | None = "_T1.nii.gz",
               ) -> list[ScanPair]:
    """Scans matching ``image_pattern`` in ``folder``, sorted by name, each with its brain mask.

    The mask of ``<stem><image_suffix>`` is ``<stem><mask_suffix>`` in the same folder. When a scan's name does not
    end in ``image_suffix`` (or it is None), the fixed end of ``image_pattern`` is used instead.

    Args:
        folder: the folder to search (not recursive).
        image_pattern: glob of the scans.
        mask_suffix: suffix of the brain masks; None or ``""`` uses the scans without masks.
        image_suffix: the part of a scan's name that the mask suffix replaces.

    Raises:
        DataError: the folder does not exist, holds no matching scan, or a scan's mask is missing.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder")
    images = sorted(p for p in folder.glob(image_pattern) if p.is_file())
    if mask_suffix:
        images = [p for p in images if not p.name.endswith(mask_suffix)]
    if not images:
        raise DataError(f"{folder}: no scans matching {image_pattern!r}")
    pairs = []
    for image in images:
        mask = None
        if mask_suffix:
            if image_suffix and image.name.endswith(image_suffix):
                suffix = image_suffix
            else:
                suffix = _suffix_from_pattern(image_pattern)
            if not suffix or not image.name.endswith(suffix):
                raise DataError(f"{image}: cannot derive its mask's name (give image_suffix)")
            mask = image.with_name(image.name[: len(image.name) - len(suffix)] + mask_suffix)
            if not mask.is_file():
                raise DataError(f"{mask}: brain mask of {image.name} not found")
        pairs.append(ScanPair(image=image, mask=mask))
    return pairs


def split_scans(scans: Sequence[ScanPair], val_fraction: float = 0.1) -> tuple[list[ScanPair], list[ScanPair]]:
    """Split scans (by subject, never by slice) into training and validation sets, deterministically.

    Every ``1 / val_fraction``-th scan of the given order goes to validation (at least one), the rest to training.

    Raises:
        DataError: fewer than two scans.
    """
    if len(scans) < 2:
        raise DataError(f"need at least 2 scans to split off a validation set, got {len(scans)}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    n_val = min(len(scans) - 1, max(1, round(len(scans) * val_fraction)))
    picks = set(np.linspace(0, len(scans) - 1, n_val + 2)[1:-1].round().astype(int).tolist())
    train = [s for i, s in enumerate(scans) if i not in picks]
    val = [s for i, s in enumerate(scans) if i in picks]
    return train, val


ROLE_PERIOD = 15
"""Of every ``ROLE_PERIOD`` scans (sorted by file name), one chooses and one calibrates (see :func:`split_roles`)."""
ROLES = ("train", "selection", "calibration")
"""The roles a folder of healthy training scans is split into; they never share a scan."""
_ROLE_POSITION = {"selection": 7, "calibration": 14}


def split_roles(scans: Sequence[ScanPair]) -> dict[str, list[ScanPair]]:
    """Split healthy scans into disjoint roles by a fixed rule on their order by file name.

    The scan at position ``i`` (0-based, names sorted) goes to ``"selection"`` when ``i % 15 == 7`` (checkpoints,
    recipes, the synthetic benchmark), to ``"calibration"`` when ``i % 15 == 14`` (the threshold, nothing else), and
    to ``"train"`` otherwise. On IXI's 154 training scans that is 134 / 10 / 10. A scan that chose or calibrated
    anything is never a test scan; the held-out test set is another folder.

    Raises:
        DataError: fewer than ``ROLE_PERIOD`` scans (a role would be empty).
    """
    ordered = sorted(scans, key=lambda s: s.image.name)
    if len(ordered) < ROLE_PERIOD:
        raise DataError(f"splitting into {', '.join(ROLES)} needs at least {ROLE_PERIOD} scans, got {len(ordered)}")
    roles: dict[str, list[ScanPair]] = {role: [] for role in ROLES}
    for i, scan in enumerate(ordered):
        position = i % ROLE_PERIOD
        role = next((r for r, at in _ROLE_POSITION.items() if at == position), "train")
        roles[role].append(scan)
    return roles


def scans_for_role(scans: Sequence[ScanPair], role: str | None, exclude: Sequence[str] = ()) -> list[ScanPair]:
    """``scans`` themselves (``role`` None or ``"all"``) or the scans of one role of :func:`split_roles`, without
    those whose image file name matches a glob of ``exclude`` (e.g. ``"IXI056*"``, the shipped sample, which the
    held-out test leaves out). The roles are split before the exclusion, so excluding a scan moves no other."""
    if role not in (None, "all") and role not in ROLES:
        raise ValueError(f"unknown role {role!r}; known: all, {', '.join(ROLES)}")
    chosen = list(scans) if role in (None, "all") else split_roles(scans)[role]
    return [s for s in chosen if not any(fnmatch.fnmatch(s.image.name, pattern) for pattern in exclude)]


def landmarks_for_training(spec: PreprocessSpec, scans: Sequence[ScanPair]) -> PreprocessSpec:
    """``spec`` with ``"landmarks"`` normalisation whose reference values are fitted on ``scans``' brains.

    Each scan's brain is its mask's voxels (the foreground, :func:`engine.preprocess.foreground_mask`, for a scan
    without a mask); the reference values are :func:`engine.preprocess.fit_landmarks` of those brains at
    :data:`engine.config.LANDMARK_PERCENTILES`, in units of each brain's ``spec.percentile``-th percentile.

    Raises:
        VolumeError: a scan or mask cannot be read.
        ValueError: no scans.
    """
    brains = []
    for scan in scans:
        volume = load_volume(scan.image)
        data = np.asarray(volume.data, dtype=np.float32)
        mask = load_mask(scan.mask, volume) if scan.mask is not None else foreground_mask(data)
        brains.append(data[mask])
    values = fit_landmarks(brains, LANDMARK_PERCENTILES, spec.percentile)
    logger.info("landmark normalisation fitted on %d scans: percentiles %s -> %s", len(scans),
                LANDMARK_PERCENTILES, values)
    return replace(spec, normalisation="landmarks", landmark_percentiles=LANDMARK_PERCENTILES,
                   landmark_values=values)


def _cache_key(scans: Sequence[ScanPair], spec: PreprocessSpec) -> str:
    """A digest of the spec and of every file's path, size and modification time."""
    files = []
    for scan in scans:
        for path in (scan.image, scan.mask):
            if path is None:
                files.append(None)
                continue
            try:
                st = path.stat()
                files.append([str(path.resolve()), st.st_size, st.st_mtime_ns])
            except OSError:
                files.append([str(path), -1, -1])
    payload = json.dumps({"version": _CACHE_VERSION, "spec": asdict(spec), "files": files}, sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class HealthySlices:
    """Model-space brain slices of healthy scans, served as ``(image, foreground)`` pairs.

    Attributes:
        scans: the scans, in order.
        spec: the preprocessing used.
        images: float32 ``(N, size, size)`` slices in [0, 1], zero outside the brain.
        foreground: bool ``(N, size, size)``: brain pixels with a positive intensity.
        scan_index: int ``(N,)`` index into ``scans`` of each slice.
        native_index: int ``(N,)`` index of each slice along its scan's axial axis.
    """

    def __init__(self, scans: Sequence[ScanPair], spec: PreprocessSpec, *,
                 on_progress: ProgressCallback | None = None, cancel: CancelToken | None = None) -> None:
        """Load and convert every scan (slices with too little brain are dropped, as ``to_model_space`` does).

        Raises:
            DataError: no scans, a scan or mask that cannot be used (the message names it), or no brain slice.
            Cancelled: ``cancel`` was set.
        """
        scans = list(scans)
        if not scans:
            raise DataError("no scans given")
        throttle = ProgressThrottle(on_progress, len(scans))
        images, brains, scan_index, native_index = [], [], [], []
        for i, scan in enumerate(scans):
            check_cancel(cancel)
            try:
                volume = load_volume(scan.image)
                mask = load_mask(scan.mask, volume) if scan.mask is not None else None
                ms = to_model_space(volume, spec, mask)
            except VolumeError as exc:
                raise DataError(str(exc)) from exc
            images.append(ms.slices)
            brains.append(ms.brain)
            scan_index.append(np.full(len(ms), i, dtype=np.int32))
            native_index.append(ms.native_index.astype(np.int32))
            throttle.report(i + 1, f"loaded {scan.image.name}")
        self._set(scans, spec, np.concatenate(images), np.concatenate(brains), np.concatenate(scan_index),
                  np.concatenate(native_index), brain_given=True)

    def _set(self, scans: list[ScanPair], spec: PreprocessSpec, images: np.ndarray, mask: np.ndarray,
             scan_index: np.ndarray, native_index: np.ndarray, *, brain_given: bool) -> None:
        if len(images) == 0:
            first = scans[0].image.parent if scans else "scans"
            raise DataError(f"{first}: no slice has enough brain (min_brain_fraction={spec.min_brain_fraction})")
        self.scans = scans
        self.spec = spec
        self.images = np.ascontiguousarray(images, dtype=np.float32)
        self.foreground = np.ascontiguousarray(mask & (self.images > 0) if brain_given else mask, dtype=bool)
        self.scan_index = np.asarray(scan_index, dtype=np.int32)
        self.native_index = np.asarray(native_index, dtype=np.int32)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def get(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Slice ``index`` as (float32 image, bool foreground), both ``(size, size)`` copies."""
        return self.images[index].copy(), self.foreground[index].copy()

    def slices_per_scan(self) -> np.ndarray:
        """Number of slices taken from each scan."""
        return np.bincount(self.scan_index, minlength=len(self.scans))

    # ---------------------------------------------------------------------------------------------------- cache

    def save_cache(self, path: str | Path) -> Path:
        """Write the slices to an ``.npz`` file (atomically) keyed by the scans' files and the spec."""
        buffer = io.BytesIO()
        np.savez(buffer, images=self.images, foreground=self.foreground, scan_index=self.scan_index,
                 native_index=self.native_index, key=np.array(_cache_key(self.scans, self.spec)),
                 image_paths=np.array([str(s.image) for s in self.scans]),
                 mask_paths=np.array([str(s.mask) if s.mask is not None else "" for s in self.scans]))
        return atomic_write_bytes(path, buffer.getvalue())

    @classmethod
    def load_cache(cls, path: str | Path, spec: PreprocessSpec,
                   scans: Sequence[ScanPair] | None = None) -> HealthySlices | None:
        """Slices from a cache written by :meth:`save_cache`, or None when it is missing, unreadable or stale.

        The cache is stale when the spec, or any file's path, size or modification time, differs from when it was
        written. With ``scans``, the cache must also hold exactly those scans.
        """
        path = Path(path)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as npz:
                stored = {name: npz[name] for name in npz.files}
        except (OSError, ValueError, KeyError):
            return None
        needed = {"images", "foreground", "scan_index", "native_index", "key", "image_paths", "mask_paths"}
        if not needed <= set(stored):
            return None
        cached_scans = [ScanPair(Path(str(img)), Path(str(m)) if str(m) else None)
                        for img, m in zip(stored["image_paths"].tolist(), stored["mask_paths"].tolist(),
                                          strict=True)]
        if scans is not None and [(s.image, s.mask) for s in scans] != [(s.image, s.mask) for s in cached_scans]:
            return None
        if str(stored["key"]) != _cache_key(cached_scans, spec):
            return None
        if stored["images"].shape[1:] != (spec.size, spec.size):
            return None
        out = cls.__new__(cls)
        out._set(cached_scans, spec, stored["images"], stored["foreground"], stored["scan_index"],
                 stored["native_index"], brain_given=False)
        return out

    @classmethod
    def cached(cls, scans: Sequence[ScanPair], spec: PreprocessSpec, cache_dir: str | Path | None, *,
               on_progress: ProgressCallback | None = None, cancel: CancelToken | None = None) -> HealthySlices:
        """Load the slices from ``cache_dir`` when a fresh cache of these scans and spec is there, else build and
        save it. ``cache_dir=None`` disables caching."""
        scans = list(scans)
        if cache_dir is None:
            return cls(scans, spec, on_progress=on_progress, cancel=cancel)
        path = Path(cache_dir) / f"slices-{_cache_key(scans, spec)[:20]}.npz"
        hit = cls.load_cache(path, spec, scans)
        if hit is not None:
            ProgressThrottle(on_progress, len(scans)).report(len(scans), f"loaded {path.name}", force=True)
            return hit
        built = cls(scans, spec, on_progress=on_progress, cancel=cancel)
        built.save_cache(path)
        return built
