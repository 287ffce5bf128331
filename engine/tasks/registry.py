"""Task ids, the 10 folds of Baugh et al., task construction and the 80/20 corruption rule (§1.4-1.5).

Fold ``f`` trains on ``itertools.combinations(range(5), 3)[f]`` (written out in :data:`FOLDS`) and validates on the
two remaining tasks. A training
(or validation) pair is the identity ``(x, x)`` with probability ``p_no_task`` (0.2 in the paper), otherwise one task
drawn uniformly from the fold's tasks is applied.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from engine.tasks.base import AnomalyTask, Corruption, SliceSource, check_inputs
from engine.tasks.blending import PoissonBlendTask
from engine.tasks.deformation import RadialDeformationTask
from engine.tasks.external import default_external_source
from engine.tasks.intensity import SmoothIntensityTask


@dataclass(frozen=True)
class TaskSources:
    """What tasks may draw patches from: the slices being trained on (task 0) and non-brain images (task 1)."""

    same: SliceSource | None
    external: SliceSource | None


@dataclass(frozen=True)
class TaskEntry:
    """One synthetic task in the registry: its id (as in the paper's code), name and how to build it."""

    task_id: int
    name: str
    build: Callable[[TaskEntry, TaskSources], AnomalyTask]


def _same_dataset_blend(entry: TaskEntry, sources: TaskSources) -> AnomalyTask:
    if sources.same is None:
        raise ValueError(f"task {entry.task_id} ({entry.name}) needs same_source: the training slices")
    return PoissonBlendTask(entry.task_id, entry.name, sources.same)


def _other_dataset_blend(entry: TaskEntry, sources: TaskSources) -> AnomalyTask:
    external = sources.external if sources.external is not None else default_external_source()
    return PoissonBlendTask(entry.task_id, entry.name, external)


TASKS: dict[int, TaskEntry] = {
    entry.task_id: entry
    for entry in (
        TaskEntry(0, "same_dataset_blend", _same_dataset_blend),
        TaskEntry(1, "other_dataset_blend", _other_dataset_blend),
        TaskEntry(2, "sink_deformation", lambda entry, _: RadialDeformationTask(sink=True)),
        TaskEntry(3, "source_deformation", lambda entry, _: RadialDeformationTask(sink=False)),
        TaskEntry(4, "smooth_intensity", lambda entry, _: SmoothIntensityTask()),
    )
}
"""The synthetic tasks by id. A new task is one module under ``engine/tasks`` and one entry here; it changes no
existing fold (the fold table below is literal)."""

TASK_NAMES: dict[int, str] = {task_id: entry.name for task_id, entry in TASKS.items()}

FOLDS: tuple[tuple[int, int, int], ...] = (
    (0, 1, 2), (0, 1, 3), (0, 1, 4), (0, 2, 3), (0, 2, 4),
    (0, 3, 4), (1, 2, 3), (1, 2, 4), (1, 3, 4), (2, 3, 4),
)
"""The paper's ten folds: the training tasks of fold ``f`` (``itertools.combinations(range(5), 3)[f]``), written out
so that adding a task never moves what an existing fold trains on. A fold validates on the other tasks of
:data:`PAPER_TASKS`."""
PAPER_TASKS: tuple[int, ...] = (0, 1, 2, 3, 4)
NUM_FOLDS = len(FOLDS)


def fold_tasks(fold: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Training and validation task ids of ``fold`` (0-9).

    Raises:
        ValueError: if ``fold`` is outside 0-9.
    """
    if not isinstance(fold, int | np.integer) or not 0 <= fold < NUM_FOLDS:
        raise ValueError(f"fold must be an integer in 0..{NUM_FOLDS - 1}, got {fold!r}")
    train = FOLDS[int(fold)]
    return train, tuple(t for t in PAPER_TASKS if t not in train)


def build_tasks(
    task_ids: tuple[int, ...] | list[int],
    *,
    same_source: SliceSource | None,
    external_source: SliceSource | None,
) -> dict[int, AnomalyTask]:
    """Instantiate the given tasks from the registry.

    Args:
        task_ids: ids from :data:`TASKS`.
        same_source: slices of the dataset being trained on (with brain masks), needed by task 0.
        external_source: non-brain slices for task 1; ``None`` means :func:`default_external_source`.

    Returns:
        ``{task_id: task}`` in the order given.

    Raises:
        ValueError: for an unknown id, or task 0 without ``same_source``.
    """
    sources = TaskSources(same_source, external_source)
    tasks: dict[int, AnomalyTask] = {}
    for task_id in task_ids:
        entry = TASKS.get(task_id)
        if entry is None:
            raise ValueError(f"unknown task id {task_id!r}; known ids are {sorted(TASKS)}")
        tasks[task_id] = entry.build(entry, sources)
    return tasks


def corrupt(
    image: np.ndarray,
    foreground: np.ndarray | None,
    tasks: dict[int, AnomalyTask],
    rng: np.random.Generator,
    *,
    p_no_task: float = 0.2,
) -> Corruption:
    """Corrupt a slice as in training: identity with probability ``p_no_task``, else one uniformly drawn task.

    Raises:
        ValueError: if ``tasks`` is empty or ``p_no_task`` is outside [0, 1].
    """
    if not tasks:
        raise ValueError("corrupt needs at least one task")
    if not 0.0 <= p_no_task <= 1.0:
        raise ValueError(f"p_no_task must be in [0, 1], got {p_no_task}")
    if rng.random() < p_no_task:
        work, _ = check_inputs(image, foreground)
        return Corruption(work.astype(np.float32), np.zeros(work.shape, dtype=bool), None, ())
    ids = list(tasks)
    return tasks[ids[int(rng.integers(len(ids)))]](image, foreground, rng)
