"""Task ids, the 10 folds of Baugh et al., task construction and the 80/20 corruption rule (§1.4-1.5).

Fold ``f`` trains on ``itertools.combinations(range(5), 3)[f]`` and validates on the two remaining tasks. A training
(or validation) pair is the identity ``(x, x)`` with probability ``p_no_task`` (0.2 in the paper), otherwise one task
drawn uniformly from the fold's tasks is applied.
"""

from __future__ import annotations

import itertools

import numpy as np

from engine.tasks.base import AnomalyTask, Corruption, SliceSource, check_inputs
from engine.tasks.blending import PoissonBlendTask
from engine.tasks.deformation import RadialDeformationTask
from engine.tasks.external import default_external_source
from engine.tasks.intensity import SmoothIntensityTask

TASK_NAMES: dict[int, str] = {
    0: "same_dataset_blend",
    1: "other_dataset_blend",
    2: "sink_deformation",
    3: "source_deformation",
    4: "smooth_intensity",
}
NUM_FOLDS = 10
_FOLDS = tuple(itertools.combinations(range(len(TASK_NAMES)), 3))


def fold_tasks(fold: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Training and validation task ids of ``fold`` (0-9).

    Raises:
        ValueError: if ``fold`` is outside 0-9.
    """
    if not isinstance(fold, int | np.integer) or not 0 <= fold < NUM_FOLDS:
        raise ValueError(f"fold must be an integer in 0..{NUM_FOLDS - 1}, got {fold!r}")
    train = _FOLDS[int(fold)]
    return train, tuple(t for t in TASK_NAMES if t not in train)


def build_tasks(
    task_ids: tuple[int, ...] | list[int],
    *,
    same_source: SliceSource | None,
    external_source: SliceSource | None,
) -> dict[int, AnomalyTask]:
    """Instantiate the given tasks.

    Args:
        task_ids: ids from :data:`TASK_NAMES`.
        same_source: slices of the dataset being trained on (with brain masks), needed by task 0.
        external_source: non-brain slices for task 1; ``None`` means :func:`default_external_source`.

    Returns:
        ``{task_id: task}`` in the order given.

    Raises:
        ValueError: for an unknown id, or task 0 without ``same_source``.
    """
    tasks: dict[int, AnomalyTask] = {}
    for task_id in task_ids:
        if task_id == 0:
            if same_source is None:
                raise ValueError("task 0 (same_dataset_blend) needs same_source: the training slices")
            tasks[0] = PoissonBlendTask(0, TASK_NAMES[0], same_source)
        elif task_id == 1:
            source = external_source if external_source is not None else default_external_source()
            tasks[1] = PoissonBlendTask(1, TASK_NAMES[1], source)
        elif task_id in (2, 3):
            tasks[task_id] = RadialDeformationTask(sink=task_id == 2)
        elif task_id == 4:
            tasks[4] = SmoothIntensityTask()
        else:
            raise ValueError(f"unknown task id {task_id!r}; known ids are {sorted(TASK_NAMES)}")
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
