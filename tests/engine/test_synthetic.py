"""The synthetic benchmark: fixed corruptions of real healthy slices, scored like lesions, with its controls."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from engine.anomaly import anomaly_map
from engine.config import get_preset
from engine.synthetic import make_synthetic_set, run_synthetic, score_synthetic
from tests.model_factory import healthy_source, ixi_scans


@pytest.fixture(scope="module")
def source(require_data: Path):  # noqa: ANN201 - an ArraySource
    return healthy_source(get_preset("small"), ixi_scans(2))


def _maps(restored: np.ndarray, condition: np.ndarray, brain: np.ndarray) -> np.ndarray:
    maps = anomaly_map(torch.from_numpy(restored)[:, None], torch.from_numpy(condition)[:, None],
                       foreground=torch.from_numpy(brain)[:, None])
    return maps[:, 0].numpy()


def test_the_set_is_fixed_by_its_seed_and_masks_lie_in_the_brain(source) -> None:  # noqa: ANN001
    a = make_synthetic_set(source, (2, 3), seed=0, n_slices=40)
    b = make_synthetic_set(source, (2, 3), seed=0, n_slices=40)
    c = make_synthetic_set(source, (2, 3), seed=1, n_slices=40)
    assert len(a) == 40
    assert np.array_equal(a.condition, b.condition)
    assert np.array_equal(a.mask, b.mask)
    assert not np.array_equal(a.condition, c.condition)
    assert not (a.mask & ~a.brain).any()
    healthy = a.task < 0
    assert set(a.task[~healthy].tolist()) <= {2, 3}
    assert 0.25 < healthy.mean() < 0.75  # about half left healthy, so slice metrics have both classes
    assert np.array_equal(a.condition[healthy], a.clean[healthy])
    assert not a.mask[healthy].any()
    assert a.mask[~healthy].reshape((~healthy).sum(), -1).any(axis=1).all()
    # The whole source when no subset is asked for.
    assert len(make_synthetic_set(source, (4,), seed=0)) == len(source)
    with pytest.raises(ValueError, match="task ids"):
        make_synthetic_set(source, (7,), seed=0)


def test_a_restorer_that_removes_anomalies_beats_a_copier_and_the_controls(source) -> None:  # noqa: ANN001
    sset = make_synthetic_set(source, (0, 1, 4), seed=0, n_slices=60)

    def oracle(condition: np.ndarray, brain: np.ndarray, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return sset.clean, _maps(sset.clean, condition, brain)

    def copier(condition: np.ndarray, brain: np.ndarray, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return condition, _maps(condition, condition, brain)

    good, bad = run_synthetic(sset, oracle), run_synthetic(sset, copier)
    # The oracle's restoration is the healthy truth: removal passes, pixel and slice detection are near perfect.
    assert good.removal.removes_anomalies
    assert good.removal.mae_to_truth == 0.0
    scores = good.detection.scores
    assert scores.ap_pixel > 0.5
    assert scores.max_dice > 0.5
    assert scores.ap_image > 0.9
    assert scores.auroc_image > 0.9
    assert good.removal.healthy_dssim == pytest.approx(0.0, abs=1e-6)
    # A copier's map is all zero: no better than chance, and it fails the removal check.
    assert not bad.removal.removes_anomalies
    assert bad.removal.mae_to_input == 0.0
    assert bad.detection.scores.ap_pixel <= bad.detection.random.ap_pixel * 1.05
    # Controls: chance is the anomaly share of brain pixels; noise and brain area are far below the oracle.
    counts = good.counts
    assert good.detection.random.ap_pixel == pytest.approx(counts.anomaly_pixels / counts.brain_pixels)
    assert scores.ap_pixel > 3 * good.detection.noise.ap_pixel
    assert scores.auroc_image > good.detection.brain_area.auroc_image + 0.2


def test_scores_depend_on_the_maps_not_on_the_call(source) -> None:  # noqa: ANN001
    sset = make_synthetic_set(source, (4,), seed=3, n_slices=20)
    rng = np.random.default_rng(0)
    maps = np.where(sset.brain, rng.uniform(0, 1, sset.brain.shape), 0).astype(np.float32)
    first = score_synthetic(sset, sset.condition, maps)
    again = score_synthetic(sset, sset.condition, maps)
    assert first.detection.scores.ap_pixel == again.detection.scores.ap_pixel
    assert first.detection.noise == again.detection.noise
    assert first.detection.scores.ap_pixel == pytest.approx(first.detection.random.ap_pixel, rel=0.25)
    # The JSON keeps the keys ``evaluate --synthetic --json`` has always written: the metrics and the removal check
    # at the top level, the controls beside them.
    data = first.to_dict()
    assert set(data) == {"ap_image", "auroc_image", "ap_pixel", "max_dice", "best_threshold", "ap_image_brain_mean",
                         "auroc_image_brain_mean", "ap_image_topk", "auroc_image_topk", "mae_to_truth", "mae_to_input",
                         "removes_anomalies", "healthy_dssim", "healthy_mae", "random", "noise", "brain_area",
                         "counts", "tasks", "seed"}
    assert data["random"] == {"ap_image": first.detection.random.ap_image, "auroc_image": 0.5,
                              "ap_pixel": first.detection.random.ap_pixel,
                              "max_dice": first.detection.random.max_dice}
    assert set(data["brain_area"]) == {"ap_image", "auroc_image"}
    assert data["counts"] == {"slices": 20, "anomalous_slices": first.counts.anomalous_slices,
                              "brain_pixels": first.counts.brain_pixels, "anomaly_pixels": first.counts.anomaly_pixels}
    assert data["tasks"] == [4]
