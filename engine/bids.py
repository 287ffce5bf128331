"""BIDS datasets in and BIDS derivatives out, for a cohort.

File names are recognised and parsed with the BIDS schema's own file rules (``bidsschematools``, the BIDS project's
maintained schema package), not with patterns written here: a raw dataset's scans are the files the schema accepts
under ``sub-*/[ses-*/]anat/`` with the model's contrast suffix (``T1w`` for a T1 model), and brain masks come from a
named derivatives folder (``<deriv>/sub-*/[ses-*/]anat/<same entities>_desc-brain_mask.nii.gz``, fMRIPrep's name).

The outputs of a BIDS input form a derivatives dataset: ``dataset_description.json`` (``DatasetType``
``"derivative"``, ``GeneratedBy`` naming condiff's version, the model, its members' hashes and the settings), each
scan's files under its own ``sub-*/[ses-*/]anat/`` with its entities, and a ``.bidsignore`` for the files BIDS has
no name for (findings tables, reports, DICOM SEG, the cohort tables). :func:`layout_problems` checks a written
folder against the schema's derivative rules.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from engine.errors import DataError
from engine.volumes import NIFTI_SUFFIXES

__all__ = ["BIDS_IGNORE", "DESCRIPTION", "MODALITY_SUFFIX", "find_scans", "is_dataset", "layout_problems",
           "parse_path", "write_description"]

DESCRIPTION = "dataset_description.json"
MODALITY_SUFFIX: Mapping[str, str] = {"t1": "T1w", "t2": "T2w", "flair": "FLAIR", "pd": "PDw"}
"""The BIDS suffix of the scans a model of each modality analyses."""
BIDS_IGNORE = ("*_desc-anomalyscore_map.nii.gz", "*_desc-memberspread_map.nii.gz", "*_findings.tsv",
               "*_findings.json", "*_report.pdf", "*_seg.dcm", "cohort.tsv", "cohort.json", "failures.tsv")
"""condiff's outputs that BIDS has no file rule for (written to the derivatives dataset's ``.bidsignore``). BIDS
1.11 names anatomical derivatives by what they are (``mask``, ``dseg``, ``probseg``, a contrast, a quantitative
map such as ``T1map``); a continuous anomaly score or the members' spread is none of these (``probseg`` would claim
a probability), so those two keep condiff's ``_map`` name and are listed here."""
_MATCHING_ENTITIES = ("subject", "session", "acquisition", "ceagent", "reconstruction", "run", "echo", "part")
"""Entities a brain mask must share with its scan."""


@functools.cache
def _rules(derivative: bool) -> tuple[re.Pattern[str], ...]:
    """The schema's full-path regular expressions: common and raw files, or common and derivative files."""
    from bidsschematools import rules, schema  # noqa: PLC0415

    spec = schema.load_schema()
    groups = (spec.rules.files.common, spec.rules.files.deriv if derivative else spec.rules.files.raw)
    return tuple(re.compile(rule["regex"]) for group in groups
                 for rule in rules.regexify_filename_rules(group, spec, level=2))


@functools.cache
def bids_version() -> str:
    """The BIDS version of the schema the names are checked against."""
    from bidsschematools import schema  # noqa: PLC0415

    return str(schema.load_schema().bids_version)


def parse_path(relative: str, *, derivative: bool = False) -> dict[str, str] | None:
    """The entities of a path relative to a dataset's root (``subject``, ``session``, ..., ``suffix``,
    ``extension``), or None when the schema has no rule for it."""
    for rule in _rules(derivative):
        match = rule.fullmatch(relative)
        if match:
            return {k: v for k, v in match.groupdict().items() if v is not None}
    return None


def is_dataset(folder: str | Path) -> bool:
    """A folder that holds a BIDS ``dataset_description.json`` and at least one ``sub-*`` folder."""
    folder = Path(folder)
    return folder.is_dir() and (folder / DESCRIPTION).is_file() and any(
        p.is_dir() for p in folder.glob("sub-*"))


def _anat_files(root: Path) -> list[Path]:
    return sorted(p for pattern in ("sub-*/anat/*", "sub-*/ses-*/anat/*") for p in root.glob(pattern)
                  if p.is_file() and p.name.endswith(NIFTI_SUFFIXES))


def _brain_masks(root: Path) -> dict[tuple[Any, ...], list[Path]]:
    """The derivatives folder's brain masks in the scans' own space, keyed by the entities they share with scans."""
    if not root.is_dir():
        raise DataError(f"{root}: no such derivatives folder for brain masks")
    found: dict[tuple[Any, ...], list[Path]] = {}
    for path in _anat_files(root):
        entities = parse_path(path.relative_to(root).as_posix(), derivative=True)
        if (entities and entities.get("suffix") == "mask" and entities.get("description") == "brain"
                and entities.get("space") in (None, "T1w", "orig")):
            found.setdefault(tuple(entities.get(k) for k in _MATCHING_ENTITIES), []).append(path)
    return found


def find_scans(root: str | Path, *, suffix: str = "T1w", masks: str | Path | None = None) -> list[Any]:
    """The scans of a BIDS dataset with this suffix, as cohort items whose outputs go to their own ``anat`` folder.

    Args:
        root: the dataset's root (holding ``dataset_description.json``).
        suffix: the contrast to analyse (:data:`MODALITY_SUFFIX`).
        masks: a derivatives folder to take each scan's brain mask from (``desc-brain_mask``); a scan without one
            there is analysed without a mask.

    Raises:
        DataError: the folder is not a BIDS dataset, or a scan has more than one brain mask in ``masks``.
    """
    from engine.cohort import CohortItem  # noqa: PLC0415
    from engine.outputs import file_stem  # noqa: PLC0415

    root = Path(root)
    if not is_dataset(root):
        raise DataError(f"{root}: not a BIDS dataset (no {DESCRIPTION} beside sub-* folders)")
    by_entities = _brain_masks(Path(masks)) if masks is not None else {}
    items = []
    for path in _anat_files(root):
        relative = path.relative_to(root).as_posix()
        entities = parse_path(relative)
        if not entities or entities.get("suffix") != suffix:
            continue
        candidates = by_entities.get(tuple(entities.get(k) for k in _MATCHING_ENTITIES), [])
        if len(candidates) > 1:
            raise DataError(f"{path}: {len(candidates)} brain masks match it in {masks} "
                            f"({', '.join(p.name for p in candidates)})")
        items.append(CohortItem(file_stem(path), path, candidates[0] if candidates else None,
                                out_subdir=Path(relative).parent.as_posix()))
    return items


def write_description(out_dir: str | Path, *, source: str | Path, ensemble: Any,
                      settings: Mapping[str, Any]) -> Path:
    """Make ``out_dir`` a BIDS derivatives dataset: its ``dataset_description.json`` and ``.bidsignore``."""
    from engine import __version__  # noqa: PLC0415
    from engine.writers import atomic_write_bytes, atomic_write_json  # noqa: PLC0415

    out_dir = Path(out_dir)
    card = ensemble.card
    members = {str(fold): card.members[fold].sha256 for fold in ensemble.info.folds}
    description = {
        "Name": f"condiff anomaly maps ({ensemble.info.model_id})",
        "BIDSVersion": bids_version(),
        "DatasetType": "derivative",
        "GeneratedBy": [{
            "Name": "condiff",
            "Version": __version__,
            "Description": "Anomaly detection with an image-conditioned diffusion ensemble: a pseudo-healthy "
                           "restoration of each scan, 1 - SSIM against it as the anomaly score, a mask at the "
                           "threshold",
            "Model": {"Name": ensemble.info.name, "Version": ensemble.info.version, "Id": ensemble.info.model_id,
                      "MemberSHA256": members},
            "Settings": dict(settings),
        }],
        "SourceDatasets": [{"URL": Path(source).resolve().as_uri()}],
    }
    path = out_dir / DESCRIPTION
    atomic_write_json(path, description)
    atomic_write_bytes(out_dir / ".bidsignore", ("\n".join(BIDS_IGNORE) + "\n").encode())
    return path


def layout_problems(out_dir: str | Path) -> list[str]:
    """Files of a derivatives folder that the BIDS schema's derivative rules do not accept and ``.bidsignore``
    does not list (relative paths; empty when the layout is valid), and a missing or wrong description."""
    import fnmatch  # noqa: PLC0415
    import json  # noqa: PLC0415

    out_dir = Path(out_dir)
    problems = []
    try:
        description = json.loads((out_dir / DESCRIPTION).read_text())
        if description.get("DatasetType") != "derivative" or not description.get("GeneratedBy"):
            problems.append(f"{DESCRIPTION}: not a derivative dataset with GeneratedBy")
    except (OSError, ValueError):
        problems.append(f"{DESCRIPTION}: missing or unreadable")
    ignore_file = out_dir / ".bidsignore"
    ignored = [line.strip() for line in ignore_file.read_text().splitlines() if line.strip()] \
        if ignore_file.is_file() else []
    for path in sorted(p for p in out_dir.rglob("*") if p.is_file()):
        relative = path.relative_to(out_dir).as_posix()
        if relative.startswith(".") or relative == DESCRIPTION:
            continue
        if any(fnmatch.fnmatch(path.name, pattern) for pattern in ignored):
            continue
        if parse_path(relative, derivative=True) is None:
            problems.append(relative)
    return problems


def single_dataset(paths: Sequence[str | Path]) -> Path | None:
    """The BIDS dataset among ``paths`` when they name exactly one and nothing else; None when none is one.

    Raises:
        DataError: a BIDS dataset is given together with other inputs (its derivatives could not be one dataset).
    """
    datasets = [Path(p) for p in paths if is_dataset(p)]
    if not datasets:
        return None
    if len(paths) > 1:
        raise DataError(f"{datasets[0]}: a BIDS dataset is analysed on its own; give it as the only input")
    return datasets[0]
