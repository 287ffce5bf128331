"""Samplers and the training loss, checked with oracle networks whose answers are known exactly."""

from __future__ import annotations

import pytest
import torch
from diffusers.models.unets.unet_2d import UNet2DOutput

from engine.config import DiffusionConfig, get_preset
from engine.diffusion import (
    GridDDIMScheduler,
    draw_timesteps_and_noise,
    grid_timesteps,
    initial_noise,
    make_sampler,
    make_train_scheduler,
    restore,
    snr_weights,
    training_loss,
    training_timestep_grid,
)
from engine.errors import Cancelled
from engine.network import build_unet
from engine.progress import CancelToken


class Oracle(torch.nn.Module):
    """Predicts the target that would restore exactly the condition (channel 1 of the input)."""

    def __init__(self, config: DiffusionConfig) -> None:
        super().__init__()
        self.config = config
        self.alphas_cumprod = make_train_scheduler(config).alphas_cumprod

    def forward(self, model_input: torch.Tensor, timesteps: torch.Tensor) -> UNet2DOutput:
        x_t, x0 = model_input[:, :1], model_input[:, 1:]
        ab = self.alphas_cumprod[timesteps].view(-1, 1, 1, 1).float()
        eps = (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()
        if self.config.prediction_type == "epsilon":
            out = eps
        elif self.config.prediction_type == "v_prediction":
            out = ab.sqrt() * eps - (1 - ab).sqrt() * x0
        else:
            out = x0
        return UNet2DOutput(sample=out)


def test_paper_sampler_uses_the_papers_timesteps() -> None:
    scheduler, steps = make_sampler("paper", DiffusionConfig())
    assert steps == 50
    assert scheduler.timesteps.tolist() == list(range(980, -1, -20))


@pytest.mark.parametrize("name", ["ddim", "dpm"])
def test_fast_samplers_start_from_pure_noise(name: str) -> None:
    scheduler, steps = make_sampler(name, DiffusionConfig(), 4)
    assert steps == 4
    assert int(scheduler.timesteps[0]) == 999


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize(("sampler", "steps"), [("ddim", 1), ("ddim", 5), ("dpm", 3), ("paper", None)])
def test_restore_returns_what_an_oracle_network_means(prediction: str, sampler: str, steps: int | None) -> None:
    config = DiffusionConfig(prediction_type=prediction)
    condition = torch.rand(3, 1, 16, 16) * 0.9 + 0.05
    scheduler, _ = make_sampler(sampler, config, steps)
    noise = initial_noise((1, 16, 16), [1, 2, 3], "cpu")
    out = restore(Oracle(config), condition, scheduler, noise, generator=torch.Generator().manual_seed(0))
    assert out.shape == condition.shape
    assert torch.allclose(out, condition, atol=2e-3)


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("steps", [2, 3, 4])
def test_grid_sampler_restores_what_an_oracle_network_means(prediction: str, steps: int) -> None:
    config = DiffusionConfig(prediction_type=prediction, train_timesteps=5)
    scheduler, count = make_sampler("ddim", config, steps)
    assert isinstance(scheduler, GridDDIMScheduler)
    assert count == steps
    condition = torch.rand(3, 1, 16, 16) * 0.9 + 0.05
    out = restore(Oracle(config), condition, scheduler, initial_noise((1, 16, 16), [1, 2, 3], "cpu"))
    assert torch.allclose(out, condition, atol=2e-3)


@pytest.mark.parametrize("size", [5, 10])
def test_ddim_on_members_trained_on_a_grid_visits_only_the_grid(size: int) -> None:
    config = DiffusionConfig(prediction_type="v_prediction", train_timesteps=size)
    grid = training_timestep_grid(config).tolist()
    assert grid[0] == 999
    assert len(grid) == size
    for steps in range(1, size + 1):
        scheduler, count = make_sampler("ddim", config, steps)
        visited = scheduler.timesteps.tolist()
        assert count == len(visited) == steps
        assert visited[0] == 999  # every sampler starts from pure noise
        assert set(visited) <= set(grid), (steps, visited)
        assert visited == sorted(visited, reverse=True)
    # Steps that divide the grid keep diffusers' own even spacing; more steps than the grid holds fall back to it.
    assert grid_timesteps(config, 1) is None
    assert grid_timesteps(config, size) is None
    assert make_sampler("ddim", config, size + 1)[0].timesteps.tolist() == \
        make_sampler("ddim", DiffusionConfig(prediction_type="v_prediction"), size + 1)[0].timesteps.tolist()


def test_two_steps_of_a_five_timestep_grid_are_999_and_399() -> None:
    config = get_preset("small").diffusion
    assert training_timestep_grid(config).tolist() == [999, 799, 599, 399, 199]
    assert make_sampler("ddim", config, 2)[0].timesteps.tolist() == [999, 399]
    # Members that learned every timestep keep diffusers' even spacing.
    assert make_sampler("ddim", DiffusionConfig(), 2)[0].timesteps.tolist() == [999, 499]


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
def test_grid_sampler_on_evenly_spaced_timesteps_is_diffusers_ddim_bit_for_bit(prediction: str) -> None:
    config = DiffusionConfig(prediction_type=prediction)
    ddim, _ = make_sampler("ddim", config, 5)
    grid = GridDDIMScheduler.from_config(ddim.config)
    grid.set_grid_timesteps(ddim.timesteps.tolist())
    gen = torch.Generator().manual_seed(3)
    a = b = torch.randn(2, 1, 8, 8, generator=gen) * 1.5
    for t in ddim.timesteps:
        prediction_out = torch.randn(2, 1, 8, 8, generator=gen) * 1.5  # large enough that x0-hat gets clipped
        a = ddim.step(prediction_out, t, a).prev_sample
        b = grid.step(prediction_out, t, b).prev_sample
    assert torch.equal(a, b)


@pytest.mark.parametrize("timesteps", [[], [399, 999], [999, 999], [1000, 5], [5, -1]])
def test_grid_sampler_refuses_timesteps_that_do_not_decrease_within_the_schedule(timesteps: list[int]) -> None:
    from engine.errors import ConfigError

    scheduler = GridDDIMScheduler()
    with pytest.raises(ConfigError, match="grid timesteps"):
        scheduler.set_grid_timesteps(timesteps)


def test_restore_is_deterministic_for_a_seed_and_depends_on_it() -> None:
    preset = get_preset("tiny")
    torch.manual_seed(0)
    model = build_unet(preset.unet, 32).eval()
    condition = torch.rand(2, 1, 32, 32)

    def run(seeds: list[int]) -> torch.Tensor:
        scheduler, _ = make_sampler("ddim", preset.diffusion, 3)
        return restore(model, condition, scheduler, initial_noise((1, 32, 32), seeds, "cpu"))

    a, b, c = run([5, 6]), run([5, 6]), run([7, 6])
    assert torch.equal(a, b)
    assert not torch.equal(a[0], c[0])
    assert torch.equal(a[1], c[1])  # an image's noise depends only on its own seed


def test_restore_stops_within_one_step_when_cancelled() -> None:
    config = DiffusionConfig(prediction_type="v_prediction")
    token = CancelToken()
    done: list[int] = []

    def on_step(i: int) -> None:
        done.append(i)
        if i == 2:
            token.cancel()

    scheduler, _ = make_sampler("ddim", config, 10)
    with pytest.raises(Cancelled):
        restore(Oracle(config), torch.rand(1, 1, 8, 8), scheduler, torch.randn(1, 1, 8, 8), on_step=on_step,
                cancel=token)
    assert done == [1, 2]


def test_snr_weights_follow_min_snr_gamma() -> None:
    scheduler = make_train_scheduler(DiffusionConfig())
    t = torch.tensor([0, 100, 500, 999])
    ab = scheduler.alphas_cumprod[t]
    snr = ab / (1 - ab)
    expected_eps = torch.minimum(snr, torch.ones_like(snr)) / snr
    assert torch.allclose(snr_weights(scheduler, t, 1.0, "epsilon"), expected_eps)
    assert torch.allclose(snr_weights(scheduler, t, 1.0, "v_prediction"),
                          torch.minimum(snr, torch.ones_like(snr)) / (snr + 1))
    # For low-noise timesteps the epsilon weight is 1/SNR < 1; for high-noise ones it is 1.
    assert snr_weights(scheduler, t, 1.0, "epsilon")[0] < 0.01
    assert snr_weights(scheduler, t, 1.0, "epsilon")[-1] == pytest.approx(1.0)


def test_noise_of_an_image_does_not_depend_on_its_batch() -> None:
    config = DiffusionConfig()
    t_all, n_all = draw_timesteps_and_noise((1, 8, 8), [10, 11, 12], config)
    t_one, n_one = draw_timesteps_and_noise((1, 8, 8), [11], config)
    assert t_all[1] == t_one[0]
    assert torch.equal(n_all[1], n_one[0])
    assert n_all.shape == (3, 1, 8, 8)
    # offset noise: each image's noise has a per-image constant component
    _, plain = draw_timesteps_and_noise((1, 64, 64), list(range(200)), DiffusionConfig(offset_noise=0.0))
    _, offset = draw_timesteps_and_noise((1, 64, 64), list(range(200)), DiffusionConfig(offset_noise=0.1))
    assert offset.mean(dim=(1, 2, 3)).std() > 3 * plain.mean(dim=(1, 2, 3)).std()


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
def test_training_loss_is_zero_for_an_oracle_and_positive_otherwise(prediction: str) -> None:
    config = DiffusionConfig(prediction_type=prediction)
    scheduler = make_train_scheduler(config)
    clean = torch.rand(4, 1, 8, 8)
    t, noise = draw_timesteps_and_noise((1, 8, 8), [0, 1, 2, 3], config)
    oracle_loss = training_loss(Oracle(config), clean, clean, scheduler, config, t, noise)
    assert oracle_loss.shape == (4,)
    assert float(oracle_loss.max()) < 1e-6
    wrong = training_loss(Oracle(config), clean, torch.zeros_like(clean), scheduler, config, t, noise)
    assert float(wrong.min()) > 0


def test_pixel_weight_weights_each_squared_error() -> None:
    config = DiffusionConfig(prediction_type="sample", snr_gamma=None)
    scheduler = make_train_scheduler(config)
    clean = torch.rand(3, 1, 8, 8)
    t, noise = draw_timesteps_and_noise((1, 8, 8), [0, 1, 2], config)
    condition = torch.zeros_like(clean)  # the oracle predicts its condition, so every pixel errs by clean**2

    def loss(weight: torch.Tensor | None) -> torch.Tensor:
        return training_loss(Oracle(config), clean, condition, scheduler, config, t, noise, pixel_weight=weight)

    mask = torch.zeros_like(clean)
    mask[:, :, 2:5, 3:7] = 1
    plain = loss(None)
    assert torch.allclose(plain, (clean**2).mean(dim=(1, 2, 3)))
    assert torch.allclose(loss(torch.ones_like(clean)), plain)
    inside = loss(mask)
    assert torch.allclose(inside, (clean**2 * mask).mean(dim=(1, 2, 3)))
    assert torch.allclose(loss(1 + 4 * mask), plain + 4 * inside)


def test_one_sampler_registry_feeds_the_types_the_schedulers_and_the_command_line() -> None:
    from typing import get_args

    from engine.cli import build_parser
    from engine.diffusion import SCHEDULER_BUILDERS
    from engine.results import AnalysisSettings
    from engine.samplers import PAPER_STEPS, SAMPLERS, SamplerName, steps_for

    assert set(SAMPLERS) == set(SCHEDULER_BUILDERS) == set(get_args(SamplerName))
    assert PAPER_STEPS == SAMPLERS["paper"].fixed_steps == 50
    assert steps_for("paper", 3, 5) == 50
    assert steps_for("ddim", None, 5) == 5
    assert steps_for("dpm", 2, 5) == 2
    for name in SAMPLERS:
        AnalysisSettings(sampler=name)  # every registered sampler is a valid setting
    infer = build_parser()._subparsers._group_actions[0].choices["infer"]  # noqa: SLF001
    sampler_choices = next(a.choices for a in infer._actions if a.dest == "sampler")  # noqa: SLF001
    assert list(sampler_choices) == ["fast", *SAMPLERS]
