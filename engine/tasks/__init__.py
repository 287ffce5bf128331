"""The five synthetic anomaly tasks of Baugh et al. (2024), their folds and the training corruption rule.

Task ids: 0 same-dataset Poisson blend, 1 other-dataset Poisson blend, 2 sink deformation, 3 source deformation,
4 smooth intensity change with fractal noise. Every task takes an explicit ``numpy.random.Generator``, returns a
:class:`Corruption` recording everything it sampled, and can ``replay`` those parameters exactly.
"""

from __future__ import annotations

from engine.tasks.base import AnomalyTask, Corruption, PlacementError, SliceSource
from engine.tasks.blending import PoissonBlendTask
from engine.tasks.deformation import RadialDeformationTask
from engine.tasks.external import ArraySource, default_external_source, folder_source
from engine.tasks.intensity import SmoothIntensityTask
from engine.tasks.poisson import poisson_blend, solve_poisson_interior
from engine.tasks.registry import TASK_NAMES, build_tasks, corrupt, fold_tasks

__all__ = [
    "TASK_NAMES",
    "AnomalyTask",
    "ArraySource",
    "Corruption",
    "PlacementError",
    "PoissonBlendTask",
    "RadialDeformationTask",
    "SliceSource",
    "SmoothIntensityTask",
    "build_tasks",
    "corrupt",
    "default_external_source",
    "fold_tasks",
    "folder_source",
    "poisson_blend",
    "solve_poisson_interior",
]
