"""The sampler registry: every way condiff can run the reverse process, named once.

This module is light (no torch), so the command line's choices, :class:`engine.AnalysisSettings`' checks and the
viewer's menu all derive from :data:`SAMPLERS` without loading a model. :mod:`engine.diffusion` builds each sampler's
scheduler under the same name (a test holds the two together).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

SamplerName = Literal["ddim", "dpm", "paper"]


@dataclass(frozen=True)
class SamplerSpec:
    """What a user and the engine need to know about a sampler.

    Attributes:
        name: the registry key (what ``--sampler`` and :class:`engine.AnalysisSettings` take).
        label: a short name for menus.
        description: one line for help texts.
        fixed_steps: the step count the sampler always runs (the paper's protocol), or None when the caller
            chooses it.
        stochastic: True when the sampler draws noise at every step (its draws are per slice, see the ensemble).
    """

    name: str
    label: str
    description: str
    fixed_steps: int | None = None
    stochastic: bool = False


SAMPLERS: dict[str, SamplerSpec] = {
    spec.name: spec
    for spec in (
        SamplerSpec("ddim", "DDIM", "deterministic DDIM, trailing spacing: a few steps from pure noise (fast)"),
        SamplerSpec("dpm", "DPM-Solver++", "2nd-order DPM-Solver++ multistep, trailing spacing (fast)"),
        SamplerSpec("paper", "Paper (50-step DDPM)", "the paper's protocol: 50 DDPM steps, t = 980, 960, ..., 0",
                    fixed_steps=50, stochastic=True),  # the one place the paper's 50 steps are written
    )
}
PAPER_STEPS: int = SAMPLERS["paper"].fixed_steps or 50
"""Steps of the paper's protocol (Baugh et al. 2024: 50 DDPM steps)."""


def steps_for(sampler: str, steps: int | None, default: int) -> int:
    """The steps ``sampler`` will run: its fixed count, else ``steps``, else the model's ``default``."""
    fixed = SAMPLERS[sampler].fixed_steps
    if fixed is not None:
        return fixed
    return steps or default
