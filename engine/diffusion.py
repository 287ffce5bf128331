"""The diffusion process: the training loss and the conditioned samplers that restore pseudo-healthy slices.

Schedulers come from diffusers; this module only wires them to the conditioned network. The paper (Baugh et al. 2024)
trains a DDPM (T = 1000, linear betas 1e-4..0.02) with epsilon-prediction, Min-SNR-gamma weighting (gamma = 1) and
offset noise 0.1, and restores a test slice by running the full reverse process from pure Gaussian noise with the
slice as the condition at every step (50 DDPM steps, leading spacing: t = 980, 960, ..., 0; x0-hat clipped to +-1).

Samplers:
    ``paper``: exactly that 50-step DDPM protocol.
    ``ddim``: deterministic DDIM (eta = 0) with trailing spacing, so the first step starts at t = 999 from pure noise;
        one step is a direct x0 prediction.
    ``dpm``: DPM-Solver++ (2nd order multistep) with trailing spacing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from engine.config import DiffusionConfig
from engine.errors import ConfigError
from engine.network import denoise
from engine.progress import CancelToken, check_cancel
from engine.runtimes import Denoiser
from engine.samplers import SAMPLERS, SamplerName


def make_train_scheduler(config: DiffusionConfig) -> DDPMScheduler:
    """The forward process used for training (diffusers' DDPM with the config's betas and prediction target)."""
    return DDPMScheduler(
        num_train_timesteps=config.num_train_timesteps,
        beta_start=config.beta_start,
        beta_end=config.beta_end,
        beta_schedule="linear",
        prediction_type=config.prediction_type,
        clip_sample=True,
        clip_sample_range=1.0,
    )


def _paper(common: dict[str, object]) -> SchedulerMixin:
    return DDPMScheduler(**common, clip_sample=True, clip_sample_range=1.0, timestep_spacing="leading",
                         variance_type="fixed_small")


def _ddim(common: dict[str, object]) -> SchedulerMixin:
    return DDIMScheduler(**common, clip_sample=True, clip_sample_range=1.0, timestep_spacing="trailing",
                         set_alpha_to_one=True)


def _dpm(common: dict[str, object]) -> SchedulerMixin:
    return DPMSolverMultistepScheduler(**common, algorithm_type="dpmsolver++", solver_order=2,
                                       timestep_spacing="trailing", thresholding=False, lower_order_final=True)


SCHEDULER_BUILDERS: dict[str, Callable[[dict[str, object]], SchedulerMixin]] = {
    "paper": _paper, "ddim": _ddim, "dpm": _dpm,
}
"""The diffusers scheduler of each sampler in :data:`engine.samplers.SAMPLERS`, under the same name."""


def make_sampler(name: SamplerName, config: DiffusionConfig, steps: int | None = None) -> tuple[SchedulerMixin, int]:
    """Build the scheduler of a sampler and set its timesteps.

    Args:
        name: a key of :data:`engine.samplers.SAMPLERS` (``"paper"``, ``"ddim"`` or ``"dpm"``).
        config: the model's diffusion settings (betas and prediction target must match training).
        steps: number of sampler steps; a sampler with fixed steps (``"paper"``: 50) ignores it.

    Returns:
        The scheduler (timesteps set) and the number of steps it will run.
    """
    if name not in SAMPLERS:
        raise ConfigError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    common: dict[str, object] = {
        "num_train_timesteps": config.num_train_timesteps,
        "beta_start": config.beta_start,
        "beta_end": config.beta_end,
        "beta_schedule": "linear",
        "prediction_type": config.prediction_type,
    }
    scheduler = SCHEDULER_BUILDERS[name](common)
    steps = SAMPLERS[name].fixed_steps or steps
    if steps is None or steps < 1:
        raise ConfigError(f"the {name} sampler needs a positive number of steps, got {steps}")
    scheduler.set_timesteps(steps)
    return scheduler, len(scheduler.timesteps)


def initial_noise(shape: Sequence[int], seeds: Sequence[int], device: torch.device | str) -> torch.Tensor:
    """Pure Gaussian noise, one independent seed per image, so an image's noise does not depend on its batch.

    Args:
        shape: ``(C, H, W)`` of one image.
        seeds: one seed per image of the batch.
        device: where to put the result (noise is drawn on the CPU so results match across devices).
    """
    noise = torch.empty((len(seeds), *shape), dtype=torch.float32)
    for i, seed in enumerate(seeds):
        gen = torch.Generator().manual_seed(int(seed) & 0x7FFF_FFFF_FFFF_FFFF)
        noise[i] = torch.randn(tuple(shape), generator=gen)
    return noise.to(device)


@torch.no_grad()
def restore(
    model: Denoiser,
    condition: torch.Tensor,
    scheduler: SchedulerMixin,
    noise: torch.Tensor,
    *,
    generator: torch.Generator | list[torch.Generator] | None = None,
    on_step: Callable[[int], None] | None = None,
    cancel: CancelToken | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Sample ``x0 ~ p(x0 | condition)`` by running the reverse process from ``noise``.

    The condition is concatenated to the current sample at every step (``cat([x_t, condition])``), as in the paper.
    A fresh scheduler must be passed per call (multistep solvers keep state).

    Args:
        model: the conditioned UNet (in eval mode), in any runtime (:data:`engine.runtimes.Denoiser`).
        condition: the slices to restore, ``(B, C, H, W)`` in model units ([0, 1]).
        scheduler: a scheduler from :func:`make_sampler`.
        noise: the starting noise ``x_T``, same shape as ``condition``.
        generator: randomness of stochastic samplers (``paper``): one generator, or one per image so that an
            image's draws do not depend on its batch; unused by DDIM and DPM-Solver++.
        on_step: called after each step with the number of steps done.
        cancel: checked before every step; raises :class:`~engine.errors.Cancelled`.
        autocast_dtype: e.g. ``torch.bfloat16`` to run the network under CUDA autocast; None for fp32.

    Returns:
        The restored slices, ``(B, C, H, W)`` float32 (not clamped to [0, 1]).
    """
    sample = noise.to(condition.device, torch.float32) * scheduler.init_noise_sigma
    device_type = condition.device.type
    for i, t in enumerate(scheduler.timesteps):
        check_cancel(cancel)
        model_in = scheduler.scale_model_input(sample, t)
        timesteps = torch.full((sample.shape[0],), int(t), device=condition.device, dtype=torch.long)
        if autocast_dtype is not None:
            with torch.autocast(device_type=device_type, dtype=autocast_dtype):
                prediction = denoise(model, model_in, condition, timesteps)
        else:
            prediction = denoise(model, model_in, condition, timesteps)
        sample = scheduler.step(prediction.float(), t, sample, generator=generator).prev_sample
        if on_step is not None:
            on_step(i + 1)
    return sample.float()


def snr_weights(scheduler: DDPMScheduler, timesteps: torch.Tensor, gamma: float, prediction_type: str) -> torch.Tensor:
    """Min-SNR-gamma loss weights (Hang et al. 2023) for the given prediction target.

    With SNR_t = alpha_bar_t / (1 - alpha_bar_t): epsilon -> min(SNR, gamma) / SNR (the paper's formula);
    v -> min(SNR, gamma) / (SNR + 1); x0 -> min(SNR, gamma).
    """
    alphas_cumprod = scheduler.alphas_cumprod.to(timesteps.device)[timesteps]
    snr = alphas_cumprod / (1.0 - alphas_cumprod)
    clipped = torch.clamp(snr, max=gamma)
    if prediction_type == "epsilon":
        return clipped / snr
    if prediction_type == "v_prediction":
        return clipped / (snr + 1.0)
    return clipped


def training_timestep_grid(config: DiffusionConfig) -> torch.Tensor | None:
    """The timesteps training draws from: None for all T (the paper), else those of the
    ``config.train_timesteps``-step DDIM sampler (the same trailing spacing :func:`make_sampler` uses)."""
    if not config.train_timesteps:
        return None
    scheduler, _ = make_sampler("ddim", config, config.train_timesteps)
    return torch.as_tensor(scheduler.timesteps, dtype=torch.long).clone()


def draw_timesteps_and_noise(
    shape: Sequence[int], seeds: Sequence[int], config: DiffusionConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random timesteps and (offset) noise for a training batch, one independent seed per image.

    Drawing per image makes a batch independent of how it is split across processes, so a run under DDP sees the same
    numbers as a single-process run with the same global batch.

    Args:
        shape: ``(C, H, W)`` of one image.
        seeds: one seed per image.
        config: diffusion settings (T, the training timestep grid and the offset-noise strength).

    Returns:
        ``timesteps`` of shape ``(B,)`` (int64) and ``noise`` of shape ``(B, C, H, W)``, both on the CPU.
    """
    grid = training_timestep_grid(config)
    timesteps = torch.empty(len(seeds), dtype=torch.long)
    noise = torch.empty((len(seeds), *shape), dtype=torch.float32)
    for i, seed in enumerate(seeds):
        gen = torch.Generator().manual_seed(int(seed) & 0x7FFF_FFFF_FFFF_FFFF)
        if grid is None:
            timesteps[i] = int(torch.randint(0, config.num_train_timesteps, (1,), generator=gen))
        else:
            timesteps[i] = grid[int(torch.randint(0, len(grid), (1,), generator=gen))]
        eps = torch.randn(tuple(shape), generator=gen)
        if config.offset_noise > 0:
            eps = eps + config.offset_noise * torch.randn((shape[0], 1, 1), generator=gen)
        noise[i] = eps
    return timesteps, noise


def training_loss(
    model: torch.nn.Module,
    clean: torch.Tensor,
    condition: torch.Tensor,
    scheduler: DDPMScheduler,
    config: DiffusionConfig,
    timesteps: torch.Tensor,
    noise: torch.Tensor,
    *,
    autocast_dtype: torch.dtype | None = None,
    pixel_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-image diffusion loss for a batch of (clean, condition) pairs.

    The clean healthy slice is noised to its timestep, the network sees it concatenated with the condition (the
    corrupted slice, or the clean slice itself for identity pairs), and the squared error to the prediction target
    (epsilon, v or x0) is weighted by Min-SNR-gamma.

    Args:
        model: the conditioned UNet.
        clean: healthy slices ``x0``, ``(B, C, H, W)``.
        condition: conditioning slices, same shape.
        scheduler: the training scheduler (:func:`make_train_scheduler`).
        config: diffusion settings (prediction target, Min-SNR gamma).
        timesteps: ``(B,)`` timesteps, from :func:`draw_timesteps_and_noise`.
        noise: ``(B, C, H, W)`` noise (offset included), from :func:`draw_timesteps_and_noise`.
        autocast_dtype: run the network under autocast (bf16 on CUDA); the loss is always computed in fp32.
        pixel_weight: weight of each pixel's squared error, broadcastable to ``clean`` (None: all 1); the image's
            loss is the mean of the weighted errors.

    Returns:
        The weighted loss of each image, shape ``(B,)``.
    """
    device = clean.device
    timesteps = timesteps.to(device)
    noise = noise.to(device)
    noisy = scheduler.add_noise(clean, noise, timesteps)
    if config.prediction_type == "epsilon":
        target = noise
    elif config.prediction_type == "v_prediction":
        target = scheduler.get_velocity(clean, noise, timesteps)
    else:
        target = clean
    if autocast_dtype is not None:
        with torch.autocast(device_type=device.type, dtype=autocast_dtype):
            prediction = denoise(model, noisy, condition, timesteps)
    else:
        prediction = denoise(model, noisy, condition, timesteps)
    error = (prediction.float() - target.float()) ** 2
    if pixel_weight is not None:
        error = error * pixel_weight.to(device)
    per_image = error.mean(dim=(1, 2, 3))
    if config.snr_gamma is not None:
        per_image = per_image * snr_weights(scheduler, timesteps, config.snr_gamma, config.prediction_type)
    return per_image
