"""Training: the loss goes down, runs are reproducible, resume after SIGKILL is exact, and DDP works on 2 CPUs."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from engine.checkpoints import init_model_folder, load_member_state, load_training_state, read_model_json
from engine.config import get_preset
from engine.errors import ConfigError
from engine.network import build_unet
from engine.tasks.external import default_external_source
from engine.training import Trainer, TrainRequest, _seed
from tests.conftest import DATA_DIR, REPO_ROOT
from tests.model_factory import healthy_source, ixi_scans

IXI_VAL = DATA_DIR / "ixi-t1" / "val"


@pytest.fixture(scope="module")
def slices(require_data: Path):  # noqa: ANN201 - an ArraySource
    return healthy_source(get_preset("tiny"), ixi_scans(2))


def _trainer(tmp_path: Path, slices, *, steps: int, lr: float = 1e-4, seed: int = 0,  # noqa: ANN001
             workers: int = 0, anomaly_weight: float = 0.0, condition_noise: float = 0.0,
             train_timesteps: int = 0, init_from: Path | None = None) -> Trainer:
    preset = get_preset("tiny")
    preset = dataclasses.replace(
        preset,
        train=dataclasses.replace(preset.train, learning_rate=lr, anomaly_loss_weight=anomaly_weight,
                                  condition_noise=condition_noise),
        diffusion=dataclasses.replace(preset.diffusion, train_timesteps=train_timesteps))
    init_model_folder(tmp_path, preset, name="t")
    request = TrainRequest(preset=preset, fold=0, model_dir=tmp_path, max_steps=steps, seed=seed, device="cpu",
                           loader_workers=workers, init_from=init_from)
    return Trainer(request, slices, slices, external_source=default_external_source(32))


def _fixed_batch_loss(trainer: Trainer) -> float:
    trainer.model.eval()
    from engine.diffusion import training_loss

    losses = []
    with torch.no_grad():
        for step in range(1000, 1004):  # batches the run never trains on
            condition, clean, t, noise, _ = trainer.batch_for_step(step)
            losses.append(float(training_loss(trainer.model, clean, condition, trainer.scheduler,
                                              trainer.preset.diffusion, t, noise).mean()))
    return sum(losses) / len(losses)


def test_a_few_steps_lower_the_loss(tmp_path: Path, slices) -> None:  # noqa: ANN001
    torch.set_num_threads(1)
    trainer = _trainer(tmp_path, slices, steps=40, lr=2e-3)
    before = _fixed_batch_loss(trainer)
    trainer.fit()
    after = _fixed_batch_loss(trainer)
    assert after < 0.8 * before, (before, after)
    meta = read_model_json(tmp_path)
    summary = meta["members"]["0"]["training"]
    assert summary["steps"] == 40
    assert summary["train_tasks"] == [0, 1, 2]
    assert summary["val_tasks"] == [3, 4]
    check = summary["checks"][-1]
    assert {"healthy_dssim", "healthy_mae", "anomaly_mae_to_truth", "anomaly_mae_to_input"} <= set(check)
    preset = get_preset("tiny")
    assert (check["sampler"], check["sampler_steps"]) == (preset.default_sampler, preset.default_steps)


def test_anomaly_weight_raises_the_loss_of_corrupted_images_only(tmp_path: Path, slices) -> None:  # noqa: ANN001
    torch.set_num_threads(1)
    plain = _trainer(tmp_path / "plain", slices, steps=1)
    weighted = _trainer(tmp_path / "weighted", slices, steps=1, anomaly_weight=4.0)
    batch = plain.batch_for_step(0)
    mask = batch[4]
    assert mask.dtype == torch.bool
    assert mask.any()
    assert not mask.all()
    assert all(torch.equal(a, b) for a, b in zip(batch, weighted.batch_for_step(0), strict=True))
    loss_plain, loss_weighted = plain.train_step(batch), weighted.train_step(batch)
    assert loss_weighted > loss_plain * 1.01, (loss_plain, loss_weighted)
    # Identity pairs (no anomaly) keep their loss: a batch whose masks are cleared loses the same with either trainer.
    cleared = (*batch[:4], torch.zeros_like(mask))
    fresh_plain = _trainer(tmp_path / "plain2", slices, steps=1)
    fresh_weighted = _trainer(tmp_path / "weighted2", slices, steps=1, anomaly_weight=4.0)
    assert fresh_plain.train_step(cleared) == pytest.approx(fresh_weighted.train_step(cleared), rel=1e-6)
    stored = read_model_json(tmp_path / "weighted")["preset"]["train"]["anomaly_loss_weight"]
    assert stored == 4.0


def test_condition_noise_changes_the_condition_inside_the_brain_only(tmp_path: Path, slices) -> None:  # noqa: ANN001
    plain = _trainer(tmp_path / "plain", slices, steps=1)
    noisy = _trainer(tmp_path / "noisy", slices, steps=1, condition_noise=0.2)
    for step in range(3):
        a, b = plain.batch_for_step(step), noisy.batch_for_step(step)
        assert torch.equal(a[1], b[1])  # the clean target is untouched
        assert torch.equal(a[4], b[4])  # so is the anomaly mask
        brain = a[1] > 0
        changed = (a[0] - b[0]).abs() > 1e-6
        assert changed[brain].float().mean() > 0.5  # most brain pixels move
        assert not changed[~brain & (a[0] == 0)].any()  # empty background stays empty
    stored = read_model_json(tmp_path / "noisy")["preset"]["train"]
    assert stored["condition_noise"] == 0.2
    assert stored["condition_noise_cells"] == get_preset("tiny").train.condition_noise_cells


def test_coarse_noise_is_smooth_and_has_the_asked_spread() -> None:
    import numpy as np

    from engine.training import coarse_noise

    noise = np.stack([coarse_noise((64, 64), 0.2, 8, np.random.default_rng(i)) for i in range(50)])
    assert noise.shape == (50, 64, 64)
    # The grid values have the asked spread; bilinear upsampling averages neighbours, so pixels spread less.
    assert 0.1 < float(noise.std()) < 0.2
    neighbours = np.corrcoef(noise[:, :, :-1].ravel(), noise[:, :, 1:].ravel())[0, 1]
    assert neighbours > 0.9  # coarse: adjacent pixels move together
    assert np.array_equal(coarse_noise((64, 64), 0.2, 8, np.random.default_rng(3)), noise[3])


def test_train_timesteps_draw_only_the_sampler_timesteps(tmp_path: Path, slices) -> None:  # noqa: ANN001
    from engine.diffusion import make_sampler, training_timestep_grid

    trainer = _trainer(tmp_path, slices, steps=1, train_timesteps=5)
    scheduler, _ = make_sampler("ddim", trainer.preset.diffusion, 5)
    grid = set(int(t) for t in scheduler.timesteps)
    assert grid == {999, 799, 599, 399, 199}
    assert set(training_timestep_grid(trainer.preset.diffusion).tolist()) == grid
    seen = torch.cat([trainer.batch_for_step(step)[2] for step in range(40)])
    assert set(seen.tolist()) == grid  # every grid timestep is drawn, and nothing else
    assert training_timestep_grid(get_preset("tiny").diffusion) is None  # the paper's default: all of T
    with pytest.raises(ValueError, match="train_timesteps"):
        dataclasses.replace(get_preset("tiny").diffusion, train_timesteps=-1)


def test_training_checks_include_the_synthetic_benchmark(tmp_path: Path, slices) -> None:  # noqa: ANN001
    trainer = _trainer(tmp_path, slices, steps=1)
    assert trainer.synthetic is not None
    assert set(trainer.synthetic.task_ids) == set(trainer.val_ids)
    check = trainer.run_checks()
    for value in (check.synthetic_ap_pixel, check.synthetic_max_dice, check.synthetic_ap_image,
                  check.synthetic_auroc_image):
        assert 0.0 <= value <= 1.0


def test_same_seed_same_member(tmp_path: Path, slices) -> None:  # noqa: ANN001
    """Same seed, same member, whether the batches are made in the training process or by loader workers."""
    torch.set_num_threads(1)
    _trainer(tmp_path / "a", slices, steps=6).fit()
    _trainer(tmp_path / "b", slices, steps=6).fit()
    _trainer(tmp_path / "c", slices, steps=6, seed=1).fit()
    _trainer(tmp_path / "d", slices, steps=6, workers=2).fit()
    a, b, c, d = (load_member_state(tmp_path / n, 0) for n in "abcd")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    assert all(torch.equal(a[k], d[k]) for k in a)


def test_init_from_continues_an_existing_member(tmp_path: Path, slices) -> None:  # noqa: ANN001
    """``init_from`` starts the network from the folder's member of the fold (not from a fresh initialisation), and the
    new member's card says which member it grew from."""
    torch.set_num_threads(1)
    _trainer(tmp_path / "a", slices, steps=4).fit()
    source = load_member_state(tmp_path / "a", 0)
    fresh = _trainer(tmp_path / "fresh", slices, steps=4, seed=1)
    assert not all(torch.equal(source[k], v) for k, v in fresh.model.state_dict().items())
    grown = _trainer(tmp_path / "b", slices, steps=4, seed=1, init_from=tmp_path / "a")
    assert all(torch.equal(source[k], v) for k, v in grown.model.state_dict().items())
    grown.fit()
    summary = read_model_json(tmp_path / "b")["members"]["0"]["training"]
    sha = read_model_json(tmp_path / "a")["members"]["0"]["sha256"]
    assert summary["initialised_from"] == f"t-v1.0.0 member 0 sha256 {sha}"
    assert read_model_json(tmp_path / "a")["members"]["0"]["training"].get("initialised_from") is None


def test_init_from_refuses_another_network_in_one_line(tmp_path: Path, slices) -> None:  # noqa: ANN001
    torch.set_num_threads(1)
    _trainer(tmp_path / "a", slices, steps=2, train_timesteps=5).fit()
    with pytest.raises(ConfigError, match=r"another diffusion configuration; --init-from needs"):
        _trainer(tmp_path / "b", slices, steps=2, init_from=tmp_path / "a")


def _cli(out: Path, steps: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "engine", "train", "--data", str(IXI_VAL), "--preset", "tiny", "--fold", "2",
            "--max-steps", str(steps), "--out", str(out), "--device", "cpu", "--threads", "1", *extra]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_resume_after_sigkill_equals_an_uninterrupted_run(tmp_path: Path, require_data: Path) -> None:
    steps = 60
    whole = tmp_path / "whole"
    subprocess.run(_cli(whole, steps), check=True, env=_env(), capture_output=True, timeout=600)

    killed = tmp_path / "killed"
    checkpoint = killed / ".train" / "fold-2" / "checkpoint.pt"
    proc = subprocess.Popen(_cli(killed, steps), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert checkpoint.exists()
    assert not (killed / "member-2.safetensors").exists(), "the run finished before it could be killed"

    # resumed with loader workers making the batches from the checkpoint's step on: still the same member
    subprocess.run([*_cli(killed, steps), "--resume", "--workers", "2"], check=True, env=_env(), capture_output=True,
                   timeout=600)
    a, b = load_member_state(whole, 2), load_member_state(killed, 2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert read_model_json(killed)["members"]["2"]["training"]["steps"] == steps


@pytest.mark.slow
def test_ddp_with_two_cpu_processes(tmp_path: Path, require_data: Path) -> None:
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    subprocess.run(_cli(single, 6, "--batch-size", "4"), check=True, env=_env(), capture_output=True, timeout=600)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    result = subprocess.run([*torchrun, "-m", "engine", *_cli(ddp, 6, "--batch-size", "4")[3:]], env=_env(),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[:3000] + "\n...\n" + result.stderr[-1500:]  # a rank's own error
    meta = read_model_json(ddp)
    assert meta["members"]["2"]["training"]["world_size"] == 2
    # The same global batches: the fp32 weights of the training checkpoints (members are stored in fp16) take the same
    # steps. Adam turns the all-reduce's rounding into sign flips where a gradient is near zero, so compare the whole
    # update: the two runs' difference must be small against how far training moved the weights.
    a, b = (load_training_state(d / ".train" / "fold-2" / "checkpoint.pt")["model"] for d in (single, ddp))
    torch.manual_seed(_seed(0, 2, 1))  # the initialisation both runs started from
    start = build_unet(get_preset("tiny").unet, 32).state_dict()
    moved = torch.sqrt(sum(((a[k] - start[k]) ** 2).sum() for k in a))
    apart = torch.sqrt(sum(((a[k] - b[k]) ** 2).sum() for k in a))
    assert moved > 0
    assert apart < 0.05 * moved, (float(apart), float(moved))
