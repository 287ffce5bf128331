"""The diffusion process: the training loss and the conditioned samplers that restore pseudo-healthy slices.

Schedulers come from diffusers; this module only wires them to the conditioned network. The paper (Baugh et al. 2024)
trains a DDPM (T = 1000, linear betas 1e-4..0.02) with epsilon-prediction, Min-SNR-gamma weighting (gamma = 1) and
offset noise 0.1, and restores a test slice by running the full reverse process from pure Gaussian noise with the
slice as the condition at every step (50 DDPM steps, leading spacing: t = 980, 960, ..., 0; x0-hat clipped to +-1).

Samplers:
    ``paper``: exactly that 50-step DDPM protocol.
    ``ddim``: deterministic DDIM (eta = 0) with trailing spacing, so the first step starts at t = 999 from pure noise;
        one step is a direct x0 prediction. On members trained on a grid of N timesteps, fewer than N steps visit
        only the grid's own timesteps (:class:`GridDDIMScheduler`, :func:`grid_timesteps`).
    ``dpm``: DPM-Solver++ (2nd order multistep) with trailing spacing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from diffusers.schedulers.scheduling_ddim import DDIMSchedulerOutput
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from engine.config import DiffusionConfig
from engine.errors import ConfigError
from engine.network import denoise
from engine.progress import CancelToken, check_cancel
from engine.runtimes import Denoiser
from engine.samplers import SAMPLERS, SamplerName


def make_train_scheduler(config: DiffusionConfig) -> DDPMScheduler:
    """The forward process used for training (diffusers' DDPM with the config's betas and prediction target)."""
    return DDPMScheduler(**_schedule(config), clip_sample=True, clip_sample_range=1.0)


def _paper(common: dict[str, object]) -> SchedulerMixin:
    return DDPMScheduler(**common, clip_sample=True, clip_sample_range=1.0, timestep_spacing="leading",
                         variance_type="fixed_small")


_DDIM_OPTIONS: dict[str, object] = {"clip_sample": True, "clip_sample_range": 1.0, "set_alpha_to_one": True}
"""DDIM's settings, evenly spaced or on a grid: x0-hat clipped to +-1, the last step lands on x0."""


def _ddim(common: dict[str, object]) -> SchedulerMixin:
    return DDIMScheduler(**common, **_DDIM_OPTIONS, timestep_spacing="trailing")


class GridDDIMScheduler(DDIMScheduler):
    """Deterministic DDIM (eta = 0) that steps between the timesteps it is given, however they are spaced.

    diffusers' DDIM always steps from t to t - T // n, so n steps can only visit evenly spaced timesteps. Members
    trained on an N-timestep grid (:attr:`DiffusionConfig.train_timesteps`) would then run a step count that does not
    divide N on timesteps they never learned (2 steps of a 5-timestep grid: 999 and 499). With this scheduler they run
    it on their own timesteps (999 and 399; see :func:`grid_timesteps`). The update is DDIM's (Song et al. 2021,
    eq. 12 with eta = 0, the same :data:`_DDIM_OPTIONS`), so on evenly spaced timesteps it matches diffusers' DDIM
    (tested).
    """

    def set_grid_timesteps(self, timesteps: Sequence[int]) -> None:
        """Run exactly these timesteps, in decreasing order; the last step lands on x0."""
        ordered = [int(t) for t in timesteps]
        if not ordered or any(a <= b for a, b in zip(ordered, ordered[1:], strict=False)) or ordered[-1] < 0 \
                or ordered[0] >= self.config.num_train_timesteps:
            raise ConfigError(f"grid timesteps must decrease within 0..{self.config.num_train_timesteps - 1}, "
                              f"got {ordered}")
        self.timesteps = torch.as_tensor(ordered, dtype=torch.long)
        self.num_inference_steps = len(ordered)

    def step(self, model_output: torch.Tensor, timestep: int | torch.Tensor, sample: torch.Tensor,
             eta: float = 0.0, use_clipped_model_output: bool = False, generator: object = None,
             variance_noise: torch.Tensor | None = None, return_dict: bool = True) -> DDIMSchedulerOutput:
        """One DDIM step from ``timestep`` to the next timestep of the grid (x0 after the last)."""
        if eta:
            raise ConfigError("the grid DDIM sampler is deterministic (eta = 0)")
        order = self.timesteps.tolist()
        here = order.index(int(timestep))
        alpha_t = self.alphas_cumprod[order[here]]
        alpha_prev = self.alphas_cumprod[order[here + 1]] if here + 1 < len(order) else self.final_alpha_cumprod
        x0, eps = predicted_x0_and_noise(model_output, sample, alpha_t, self.config.prediction_type)
        x0 = x0.clamp(-self.config.clip_sample_range, self.config.clip_sample_range)
        prev = alpha_prev ** 0.5 * x0 + (1 - alpha_prev) ** 0.5 * eps
        return DDIMSchedulerOutput(prev_sample=prev, pred_original_sample=x0)


def predicted_x0_and_noise(prediction: torch.Tensor, sample: torch.Tensor, alpha_bar: torch.Tensor,
                           prediction_type: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The clean image and the noise that a network's ``prediction`` at cumulative alpha ``alpha_bar`` implies."""
    a, b = alpha_bar ** 0.5, (1 - alpha_bar) ** 0.5
    if prediction_type == "epsilon":
        return (sample - b * prediction) / a, prediction
    if prediction_type == "v_prediction":
        return a * sample - b * prediction, a * prediction + b * sample
    if prediction_type == "sample":
        return prediction, (sample - a * prediction) / b
    raise ConfigError(f"unknown prediction type {prediction_type!r}")


def grid_timesteps(config: DiffusionConfig, steps: int) -> list[int] | None:
    """The timesteps a ``steps``-step DDIM visits on members trained on a grid, or None to space them evenly.

    None when the members learned every timestep (``train_timesteps`` 0), when the evenly spaced timesteps already lie
    on the grid (``steps`` divides its size), or when more steps than the grid holds are asked for. Otherwise
    ``steps`` of the grid's own timesteps, spread over it from its noisiest one: step i visits the grid's timestep
    round(i * N / steps), halves rounded up, toward the cleaner one. Two of a five-timestep grid are then 999 and
    399, chosen over 999 and 599 on the selection role of the healthy data (bundled members: synthetic AP_p 0.392
    both, healthy 1 - SSIM 0.072 against 0.077).
    """
    size = config.train_timesteps
    if not size or steps >= size or size % steps == 0:
        return None
    grid = _trailing_timesteps(config, size)
    return [grid[(2 * i * size + steps) // (2 * steps)] for i in range(steps)]


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
    common = _schedule(config)
    steps = SAMPLERS[name].fixed_steps or steps
    if steps is None or steps < 1:
        raise ConfigError(f"the {name} sampler needs a positive number of steps, got {steps}")
    on_grid = grid_timesteps(config, steps) if name == "ddim" else None
    if on_grid is not None:
        grid_scheduler = GridDDIMScheduler(**common, **_DDIM_OPTIONS)
        grid_scheduler.set_grid_timesteps(on_grid)
        return grid_scheduler, steps
    scheduler = SCHEDULER_BUILDERS[name](common)
    scheduler.set_timesteps(steps)
    return scheduler, len(scheduler.timesteps)


def _schedule(config: DiffusionConfig) -> dict[str, object]:
    """The scheduler arguments every sampler shares with training: T, the betas and the prediction target."""
    return {
        "num_train_timesteps": config.num_train_timesteps,
        "beta_start": config.beta_start,
        "beta_end": config.beta_end,
        "beta_schedule": "linear",
        "prediction_type": config.prediction_type,
    }


def _trailing_timesteps(config: DiffusionConfig, steps: int) -> list[int]:
    """The timesteps diffusers' ``steps``-step DDIM visits (trailing spacing: 999 first)."""
    scheduler = _ddim(_schedule(config))
    scheduler.set_timesteps(steps)
    return [int(t) for t in scheduler.timesteps]


def unlearned_timesteps(config: DiffusionConfig, name: SamplerName, steps: int | None) -> list[int]:
    """The timesteps sampler ``name`` visits that members trained on a timestep grid never learned.

    Empty for members that learned every timestep (``train_timesteps`` 0), and for DDIM with at most as many steps as
    the grid holds (:func:`grid_timesteps`); e.g. the paper's 50 steps on a five-timestep grid visit 50 unlearned ones.
    """
    grid = training_timestep_grid(config)
    if grid is None:
        return []
    learned = set(grid.tolist())
    scheduler, _ = make_sampler(name, config, steps)
    return [int(t) for t in scheduler.timesteps if int(t) not in learned]


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
    return torch.as_tensor(_trailing_timesteps(config, config.train_timesteps), dtype=torch.long)


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
