"""Tests of the five synthetic anomaly tasks on real IXI T1 slices (engine/tasks)."""

from __future__ import annotations

import itertools
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from skimage.transform import resize

from engine.errors import DataError, VolumeError
from engine.tasks import (
    TASK_NAMES,
    ArraySource,
    Corruption,
    build_tasks,
    corrupt,
    default_external_source,
    fold_tasks,
    folder_source,
    poisson_blend,
    solve_poisson_interior,
)
from engine.tasks.blending import CHANGE_THRESHOLD
from engine.tasks.shapes import ShapeSpec, distance_to_edge, sample_shape
from tests.conftest import real_scan

SUBJECT = "IXI056-HH-1327"  # the bundled IXI sample: these tests run on any clone
AXIAL_SLICES = (55, 65, 75)
ALL_TASKS = tuple(TASK_NAMES)
BLEND_TASKS = (0, 1)

# reference-method.md §2.7: median number of changed pixels per sample (synthetic 128x128 brain).
TABLE_MEDIAN_CHANGED = {0: 1402, 1: 1402, 2: 760, 3: 726, 4: 742}

# reference-method.md §1.5.
FOLD_TABLE = {
    0: ((0, 1, 2), (3, 4)),
    1: ((0, 1, 3), (2, 4)),
    2: ((0, 1, 4), (2, 3)),
    3: ((0, 2, 3), (1, 4)),
    4: ((0, 2, 4), (1, 3)),
    5: ((0, 3, 4), (1, 2)),
    6: ((1, 2, 3), (0, 4)),
    7: ((1, 2, 4), (0, 3)),
    8: ((1, 3, 4), (0, 2)),
    9: ((2, 3, 4), (0, 1)),
}


def load_axial_slices(size: int) -> list[np.ndarray]:
    """Skull-stripped axial IXI slices, resized to ``size x size`` and divided by their maximum."""
    scan = nib.as_closest_canonical(nib.load(real_scan(f"ixi-t1/val/{SUBJECT}_T1.nii.gz")))
    brain = nib.as_closest_canonical(nib.load(real_scan(f"ixi-t1/val/{SUBJECT}_brainmask.nii.gz")))
    volume = np.asarray(scan.dataobj, dtype=np.float32) * (np.asarray(brain.dataobj) > 0)
    slices = []
    for k in AXIAL_SLICES:
        image = resize(volume[:, :, k], (size, size), order=1, preserve_range=True).astype(np.float32)
        slices.append(image / image.max())
    return slices


@pytest.fixture(scope="module")
def slices128() -> list[np.ndarray]:
    return load_axial_slices(128)


@pytest.fixture(scope="module")
def slices64() -> list[np.ndarray]:
    return load_axial_slices(64)


def make_tasks(slices: list[np.ndarray]) -> dict:
    same = ArraySource(slices, [s > s.min() for s in slices])
    return build_tasks(ALL_TASKS, same_source=same, external_source=default_external_source(128))


@pytest.fixture(scope="module")
def tasks128(slices128: list[np.ndarray]) -> dict:
    return make_tasks(slices128)


def shape_masks_and_corners(corruption: Corruption) -> list[tuple[np.ndarray, tuple[int, int]]]:
    return [(ShapeSpec.from_dict(p["shape"]).rasterise(), tuple(p["corner"])) for p in corruption.params]


def bbox_union(corruption: Corruption, shape: tuple[int, int]) -> np.ndarray:
    union = np.zeros(shape, dtype=bool)
    for mask, (r, c) in shape_masks_and_corners(corruption):
        union[r : r + mask.shape[0], c : c + mask.shape[1]] = True
    return union


def check_corruption(task_id: int, image: np.ndarray, result: Corruption) -> None:
    """Invariants every corruption must satisfy."""
    fg = image > image.min()
    assert result.task_id == task_id
    assert result.image.dtype == np.float32
    assert result.image.shape == image.shape
    assert result.mask.dtype == bool
    assert result.mask.any()
    assert 1 <= len(result.params) <= 4
    assert result.image.min() >= image.min()
    assert result.image.max() <= image.max()
    diff = np.abs(result.image.astype(np.float64) - image)
    # Nothing outside the anomalies' bounding boxes ever changes.
    assert np.all(diff[~bbox_union(result, image.shape)] == 0)
    if task_id in BLEND_TASKS:
        # The Poisson solve covers the whole box; pixels changed by more than the threshold join the mask, so
        # outside it each anomaly leaves at most CHANGE_THRESHOLD.
        assert diff[~result.mask].max(initial=0) <= len(result.params) * CHANGE_THRESHOLD + 1e-6
    else:
        assert np.all(diff[~result.mask] == 0)
    for mask, (r, c) in shape_masks_and_corners(result):
        window = fg[r : r + mask.shape[0], c : c + mask.shape[1]]
        assert np.sum(window & mask) / mask.sum() >= 0.25


@pytest.mark.parametrize("task_id", ALL_TASKS)
def test_task_invariants_replay_and_determinism(task_id: int, slices128: list[np.ndarray], tasks128: dict) -> None:
    task = tasks128[task_id]
    assert task.task_id == task_id
    assert task.name == TASK_NAMES[task_id]
    image = slices128[1]
    for seed in range(6):
        result = task(image, None, np.random.default_rng(seed))
        check_corruption(task_id, image, result)
        again = task(image, None, np.random.default_rng(seed))
        assert np.array_equal(again.image, result.image)
        assert np.array_equal(again.mask, result.mask)
        replayed = task.replay(image, None, result.params)
        assert np.array_equal(replayed.image, result.image)
        assert np.array_equal(replayed.mask, result.mask)
    # The input is never modified in place.
    assert np.array_equal(image, load_axial_slices(128)[1])


@pytest.mark.parametrize("task_id", ALL_TASKS)
def test_task_mask_matches_shapes(task_id: int, slices128: list[np.ndarray], tasks128: dict) -> None:
    image = slices128[0]
    result = tasks128[task_id](image, image > 0, np.random.default_rng(100 + task_id))
    union = np.zeros(image.shape, dtype=bool)
    for mask, (r, c) in shape_masks_and_corners(result):
        placed = np.zeros_like(union)
        if task_id in BLEND_TASKS:
            placed[r + 1 : r + mask.shape[0] - 1, c + 1 : c + mask.shape[1] - 1] = mask[1:-1, 1:-1]
        else:
            placed[r : r + mask.shape[0], c : c + mask.shape[1]] = mask
        union |= placed
    if task_id in BLEND_TASKS:
        assert np.all(result.mask[union])  # the blended shape interior is always marked
    else:
        assert np.array_equal(result.mask, union)


@pytest.mark.parametrize("task_id", ALL_TASKS)
def test_changed_pixel_statistics(task_id: int, slices128: list[np.ndarray], tasks128: dict) -> None:
    image = slices128[1]
    fg = image > image.min()
    rng = np.random.default_rng(7)
    counts, fg_shares, mean_changes = [], [], []
    for _ in range(40):
        diff = np.abs(tasks128[task_id](image, None, rng).image - image)
        changed = diff > 1e-6
        counts.append(changed.sum())
        fg_shares.append((changed & fg).sum() / changed.sum())
        mean_changes.append(diff[changed].mean())
    median = np.median(counts)
    assert 0.2 * TABLE_MEDIAN_CHANGED[task_id] <= median <= 5 * TABLE_MEDIAN_CHANGED[task_id]
    assert np.mean(fg_shares) >= 0.6
    assert 0.01 <= np.mean(mean_changes) <= 0.5


def test_number_of_anomalies_follows_stop_probability(slices128: list[np.ndarray], tasks128: dict) -> None:
    rng = np.random.default_rng(11)
    counts = np.bincount([len(tasks128[4](slices128[2], None, rng).params) for _ in range(200)], minlength=5)
    assert counts[0] == 0
    assert 0.4 <= counts[1] / 200 <= 0.6  # expected 1/2
    assert 0.15 <= counts[2] / 200 <= 0.35  # expected 1/4
    assert counts[3] + counts[4] > 0


@pytest.mark.parametrize("task_id", ALL_TASKS)
def test_task_on_64_pixel_canvas(task_id: int, slices64: list[np.ndarray]) -> None:
    tasks = make_tasks(slices64)
    image = slices64[1]
    for seed in range(4):
        result = tasks[task_id](image, None, np.random.default_rng(seed))
        check_corruption(task_id, image, result)
        for p in result.params:
            grid = ShapeSpec.from_dict(p["shape"]).rasterise().shape
            assert max(grid) <= 64
        assert np.array_equal(tasks[task_id].replay(image, None, result.params).image, result.image)


def test_fold_table_matches_paper() -> None:
    assert {f: fold_tasks(f) for f in range(10)} == FOLD_TABLE
    assert [fold_tasks(f)[0] for f in range(10)] == list(itertools.combinations(range(5), 3))
    # The table is literal: a sixth task in the registry changes no fold.
    from engine.tasks import registry

    extra = registry.TaskEntry(5, "sixth", lambda entry, _: registry.SmoothIntensityTask())
    try:
        registry.TASKS[5] = extra
        assert {f: fold_tasks(f) for f in range(10)} == FOLD_TABLE
        assert 5 in build_tasks([5], same_source=None, external_source=None)
    finally:
        del registry.TASKS[5]
    for bad in (-1, 10):
        with pytest.raises(ValueError, match="fold"):
            fold_tasks(bad)


class CountingTask:
    """A minimal AnomalyTask used to test the corruption rule's task choice."""

    def __init__(self, task_id: int) -> None:
        self.task_id = task_id
        self.name = f"counting_{task_id}"

    def __call__(self, image: np.ndarray, foreground: np.ndarray | None, rng: np.random.Generator) -> Corruption:
        mask = np.zeros(image.shape, dtype=bool)
        mask[0, 0] = True
        return Corruption(image.astype(np.float32), mask, self.task_id, ())

    def replay(self, image: np.ndarray, foreground: np.ndarray | None, params: tuple) -> Corruption:
        return self(image, foreground, np.random.default_rng(0))


def test_corrupt_identity_frequency_and_uniform_choice(slices64: list[np.ndarray]) -> None:
    image = slices64[1]
    tasks = {t: CountingTask(t) for t in (1, 3, 4)}
    rng = np.random.default_rng(5)
    ids = [corrupt(image, None, tasks, rng).task_id for _ in range(4000)]
    identity = sum(i is None for i in ids) / len(ids)
    assert abs(identity - 0.2) < 0.03
    for t in tasks:
        assert abs(ids.count(t) / len(ids) - 0.8 / 3) < 0.03
    assert all(corrupt(image, None, tasks, rng, p_no_task=0.0).task_id is not None for _ in range(50))


def test_corrupt_identity_pair_is_unchanged(slices64: list[np.ndarray]) -> None:
    image = slices64[0]
    tasks = build_tasks((2, 4), same_source=None, external_source=None)
    result = corrupt(image, None, tasks, np.random.default_rng(0), p_no_task=1.0)
    assert result.task_id is None
    assert result.params == ()
    assert np.array_equal(result.image, image)
    assert not result.mask.any()
    applied = corrupt(image, None, tasks, np.random.default_rng(0), p_no_task=0.0)
    assert applied.task_id in (2, 4)
    assert applied.mask.any()


def test_dst_solver_recovers_known_solution() -> None:
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(23, 31))
    interior = truth[1:-1, 1:-1]
    laplacian = truth[:-2, 1:-1] + truth[2:, 1:-1] + truth[1:-1, :-2] + truth[1:-1, 2:] - 4 * interior
    scrambled = truth.copy()
    scrambled[1:-1, 1:-1] = rng.normal(size=interior.shape)  # only the border may be used
    np.testing.assert_allclose(solve_poisson_interior(laplacian, scrambled), truth, atol=1e-10)


def test_blending_source_equal_to_target_returns_target(slices128: list[np.ndarray]) -> None:
    block = slices128[1][40:90, 30:75].astype(np.float64)
    mask = np.zeros(block.shape, dtype=bool)
    mask[5:40, 8:30] = True
    for mix in (False, True):
        np.testing.assert_allclose(poisson_blend(block, block, mask, mix_gradients=mix), block, atol=1e-10)


def test_mixed_blending_with_stronger_source_equals_plain_blending(slices128: list[np.ndarray]) -> None:
    target = slices128[1][40:90, 30:75].astype(np.float64)
    source = slices128[2][40:90, 30:75].astype(np.float64)
    stronger = 3.0 * target  # |grad| >= the target's everywhere, so mixing always picks the source
    mask = np.zeros(target.shape, dtype=bool)
    mask[5:40, 8:30] = True
    plain = poisson_blend(target, stronger, mask, mix_gradients=False)
    np.testing.assert_allclose(poisson_blend(target, stronger, mask, mix_gradients=True), plain, atol=1e-10)
    # A different source changes the interior of the mask but never the border of the block.
    blended = poisson_blend(target, source, mask, mix_gradients=False)
    assert np.abs(blended - target)[mask].mean() > 1e-3
    assert np.array_equal(blended[0], target[0])
    assert np.array_equal(blended[:, -1], target[:, -1])


def test_shapes_fit_bounds_and_edge_distance_is_on_the_edge() -> None:
    rng = np.random.default_rng(3)
    bounds = ((6, 80), (5, 70))
    for _ in range(50):
        spec = sample_shape(rng, bounds, (128, 128))
        mask = spec.rasterise()
        assert mask.any()
        assert mask.shape[0] <= 80 + 1
        assert mask.shape[1] <= 70 + 1
        angles = rng.uniform(0, 2 * np.pi, size=16)
        directions = np.stack([np.cos(angles), np.sin(angles)])
        origin = rng.uniform(-0.2, 0.2, size=2) * np.asarray(spec.size)  # well inside the aligned shape
        origin = spec.matrix @ origin
        edge_points = origin[:, None] + distance_to_edge(spec, origin, directions) * directions
        aligned = np.linalg.solve(spec.matrix, edge_points) / (np.asarray(spec.size)[:, None] / 2)
        if spec.kind == "ellipse":
            np.testing.assert_allclose(np.sum(aligned**2, axis=0), 1.0, atol=1e-9)
        else:
            np.testing.assert_allclose(np.max(np.abs(aligned), axis=0), 1.0, atol=1e-9)


def test_default_external_source_and_folder_source(tmp_path: Path) -> None:
    from skimage.io import imsave

    source = default_external_source(128)
    assert len(source) == 8
    for index in range(len(source)):
        image, fg = source.get(index)
        assert image.shape == (128, 128)
        assert image.dtype == np.float32
        assert fg is None
        assert image.min() == 0.0
        assert image.max() == 1.0
    imsave(tmp_path / "b.png", (np.arange(40 * 60).reshape(40, 60) % 256).astype(np.uint8))
    imsave(tmp_path / "a.png", np.full((30, 30, 3), 200, dtype=np.uint8), check_contrast=False)
    folder = folder_source(tmp_path, size=32)
    assert len(folder) == 2
    assert folder.get(1)[0].shape == (32, 32)
    assert not folder.get(0)[0].any()  # a constant image maps to zeros
    with pytest.raises(DataError, match="does not exist"):
        folder_source(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no image files"):
        folder_source(tmp_path / "empty")


def test_build_tasks_and_input_errors(slices64: list[np.ndarray]) -> None:
    with pytest.raises(ValueError, match="same_source"):
        build_tasks((0,), same_source=None, external_source=None)
    with pytest.raises(ValueError, match="unknown task id"):
        build_tasks((5,), same_source=None, external_source=None)
    tasks = build_tasks((1, 2, 3, 4), same_source=None, external_source=None)
    assert {t: task.name for t, task in tasks.items()} == {t: TASK_NAMES[t] for t in (1, 2, 3, 4)}
    image = slices64[0]
    with pytest.raises(VolumeError, match="2-D"):
        tasks[2](np.stack([image, image]), None, np.random.default_rng(0))
    with pytest.raises(VolumeError, match="empty"):
        tasks[4](image, np.zeros(image.shape, dtype=bool), np.random.default_rng(0))
    with pytest.raises(VolumeError, match="does not match"):
        tasks[3](image, np.ones((3, 3), dtype=bool), np.random.default_rng(0))
