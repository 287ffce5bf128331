"""Runtimes (issue 21): ONNX Runtime runs the members with maps equal to torch's within the stated tolerance, ``auto``
falls back to torch where it cannot run, and exported members are cached safely."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from engine import runtimes
from engine.config import get_preset
from engine.ensemble import default_model_path, load_ensemble
from engine.errors import ConfigError, ModelLoadError
from engine.network import build_unet
from engine.preprocess import axial_axis
from engine.progress import Progress
from engine.readers import load_mask, load_volume
from engine.results import AnalysisSettings
from engine.runtimes import MAP_TOLERANCE, onnx_member, resolve_runtime
from tests.conftest import SAMPLE_IXI, SAMPLE_IXI_MASK

pytest.importorskip("onnxruntime")


def test_onnxruntime_maps_equal_torch_within_the_tolerance_on_a_real_slice() -> None:
    volume = load_volume(SAMPLE_IXI)
    mask = load_mask(SAMPLE_IXI_MASK, volume)
    settings = AnalysisSettings()
    maps = {}
    for name in ("torch", "onnxruntime"):
        ensemble = load_ensemble(default_model_path(), device="cpu", folds=[0, 1], runtime=name)
        assert ensemble.info.runtime == name
        plan = ensemble.plan_slices(volume, settings=settings, brain_mask=mask)
        middle = plan[len(plan) // 2]
        maps[name] = ensemble.analyse(volume, settings=settings, slices=[middle], brain_mask=mask).anomaly_map
    assert maps["torch"].max() > 0.1  # a real map, not an empty one that would match anything
    assert np.abs(maps["onnxruntime"] - maps["torch"]).max() <= MAP_TOLERANCE


def test_onnxruntime_gives_the_same_map_every_time() -> None:
    volume = load_volume(SAMPLE_IXI)
    mask = load_mask(SAMPLE_IXI_MASK, volume)
    ensemble = load_ensemble(default_model_path(), device="cpu", folds=[3], runtime="onnxruntime")
    plan = ensemble.plan_slices(volume, settings=AnalysisSettings(), brain_mask=mask)
    chosen = plan[len(plan) // 2 - 1: len(plan) // 2 + 1]
    first = ensemble.analyse(volume, slices=chosen, brain_mask=mask).anomaly_map
    again = ensemble.analyse(volume, slices=chosen, brain_mask=mask).anomaly_map
    assert np.array_equal(first, again)


def test_auto_is_onnxruntime_on_a_cpu_and_torch_elsewhere_or_without_it(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert resolve_runtime("auto", cpu) == "onnxruntime"
    assert resolve_runtime("auto", gpu) == "torch"
    assert resolve_runtime("torch", cpu) == "torch"
    with pytest.raises(ConfigError, match="CPU only, not on cuda"):
        resolve_runtime("onnxruntime", gpu)
    with pytest.raises(ConfigError, match="unknown runtime 'tensorrt'"):
        resolve_runtime("tensorrt", cpu)
    monkeypatch.setattr(runtimes, "onnxruntime_available", lambda: False)
    assert resolve_runtime("auto", cpu) == "torch"
    with pytest.raises(ConfigError, match=r"not installed \(pip install onnxruntime onnx\)"):
        resolve_runtime("onnxruntime", cpu)


def _tiny_member(seed: int) -> tuple[torch.nn.Module, dict]:
    preset = get_preset("tiny")
    torch.manual_seed(seed)
    net = build_unet(preset.unet, preset.preprocess.size).eval()
    return net, {"unet_config": preset.unet, "size": preset.preprocess.size, "threads": 1}


def _output(member: object, size: int) -> torch.Tensor:
    x = torch.linspace(0, 1, 2 * 2 * size * size).reshape(2, 2, size, size)
    return member(x, torch.tensor([3, 7])).sample  # type: ignore[operator]


def test_exports_are_cached_and_a_damaged_cached_file_is_exported_again(tmp_path: Path) -> None:
    net, kw = _tiny_member(0)
    expected = _output(lambda x, t: net(x, t), kw["size"])
    first = onnx_member(net, weights_sha256="a" * 64, cache=tmp_path, **kw)
    (cached,) = tmp_path.glob("*.onnx")
    stamp = cached.stat().st_mtime_ns
    again = onnx_member(net, weights_sha256="a" * 64, cache=tmp_path, **kw)
    assert cached.stat().st_mtime_ns == stamp  # read, not exported again
    for member in (first, again):
        assert torch.allclose(_output(member, kw["size"]), expected, atol=1e-4)
    cached.write_bytes(b"not an onnx graph")
    mended = onnx_member(net, weights_sha256="a" * 64, cache=tmp_path, **kw)
    assert torch.allclose(_output(mended, kw["size"]), expected, atol=1e-4)
    assert cached.stat().st_size > 1000
    other, _ = _tiny_member(1)
    onnx_member(other, weights_sha256="b" * 64, cache=tmp_path, **kw)
    assert len(list(tmp_path.glob("*.onnx"))) == 2  # other weights: another entry, never the first one's graph


def test_a_cache_that_cannot_be_written_is_skipped(tmp_path: Path) -> None:
    net, kw = _tiny_member(2)
    blocked = tmp_path / "a-file"
    blocked.write_text("in the way of the cache folder")
    member = onnx_member(net, weights_sha256="c" * 64, cache=blocked / "onnx", **kw)
    assert torch.allclose(_output(member, kw["size"]), _output(lambda x, t: net(x, t), kw["size"]), atol=1e-4)
    assert blocked.read_text() == "in the way of the cache folder"


def test_auto_falls_back_to_torch_when_the_export_fails_and_a_request_for_onnxruntime_says_why(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("exporter failed\n  at some frame")

    monkeypatch.setattr(runtimes, "onnx_member", broken)
    ensemble = load_ensemble(default_model_path(), device="cpu", folds=[0], runtime="auto")
    assert ensemble.info.runtime == "torch"
    assert ensemble.info.runs_on == "cpu"
    assert ("onnxruntime unavailable here (RuntimeError: exporter failed at some frame); running with torch"
            in caplog.text)
    with pytest.raises(ModelLoadError) as info:
        load_ensemble(default_model_path(), device="cpu", folds=[0], runtime="onnxruntime")
    assert str(info.value).endswith("cannot run with onnxruntime (RuntimeError: exporter failed at some frame)")


def test_onnxruntime_is_batch_invariant_as_its_registry_entry_says() -> None:
    """The ensemble skips padding for a batch-invariant runtime, so this property must hold bit for bit."""
    assert runtimes.RUNTIMES["onnxruntime"].batch_invariant
    assert not runtimes.RUNTIMES["torch"].batch_invariant
    ensemble = load_ensemble(default_model_path(), device="cpu", folds=[0], runtime="onnxruntime")
    member = ensemble._members[0][1]  # noqa: SLF001 - the property is about the network calls themselves
    size = ensemble.preset.preprocess.size
    x = torch.rand(5, 2, size, size, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([799, 799, 599, 399, 0])
    together = member(x, t).sample
    for lo, hi in ((0, 1), (1, 3), (3, 5), (2, 3)):
        assert torch.equal(member(x[lo:hi], t[lo:hi]).sample, together[lo:hi])


def test_a_slice_alone_gets_the_map_it_gets_in_a_chunk() -> None:
    volume = load_volume(SAMPLE_IXI)
    mask = load_mask(SAMPLE_IXI_MASK, volume)
    ensemble = load_ensemble(default_model_path(), device="cpu", folds=[1], runtime="onnxruntime")
    plan = ensemble.plan_slices(volume, brain_mask=mask)
    chunk = list(plan[len(plan) // 2: len(plan) // 2 + 3])
    alone = ensemble.analyse(volume, slices=chunk[:1], brain_mask=mask)
    within = ensemble.analyse(volume, slices=chunk, brain_mask=mask)
    index: list[object] = [slice(None)] * 3
    index[axial_axis(volume.affine)] = chunk[0]
    assert alone.anomaly_map[tuple(index)].max() > 0.05
    assert np.array_equal(alone.anomaly_map[tuple(index)], within.anomaly_map[tuple(index)])


@pytest.mark.parametrize(("runtime", "expected"), [("onnxruntime", {1}), ("torch", {4})])
def test_a_lone_slice_costs_one_slice_only_where_the_runtime_is_batch_invariant(runtime: str,
                                                                                 expected: set[int]) -> None:
    volume = load_volume(SAMPLE_IXI)
    mask = load_mask(SAMPLE_IXI_MASK, volume)
    ensemble = load_ensemble(default_model_path(), device="cpu", folds=[2], runtime=runtime)
    fold, network = ensemble._members[0]  # noqa: SLF001 - counting the network's batch sizes
    widths: set[int] = set()

    def counted(x: torch.Tensor, t: torch.Tensor) -> object:
        widths.add(int(x.shape[0]))
        return network(x, t)

    ensemble._members = [(fold, counted)]  # noqa: SLF001
    plan = ensemble.plan_slices(volume, brain_mask=mask)
    ensemble.analyse(volume, slices=[plan[len(plan) // 2]], brain_mask=mask)
    assert widths == expected


def test_members_side_by_side_give_the_same_result_bit_for_bit_and_do_run_side_by_side() -> None:
    """ONNX Runtime's members run one thread each, as many at once as torch has threads: the result must not change,
    the calls must come from more than one thread, and progress must still rise to its total."""
    assert runtimes.RUNTIMES["onnxruntime"].parallel_members
    assert not runtimes.RUNTIMES["torch"].parallel_members
    volume = load_volume(SAMPLE_IXI)
    mask = load_mask(SAMPLE_IXI_MASK, volume)
    ensemble = load_ensemble(default_model_path(), device="cpu", folds=[0, 1, 2, 3], runtime="onnxruntime")
    threads: set[int] = set()

    def watched(network: object) -> object:
        def call(x: torch.Tensor, t: torch.Tensor) -> object:
            threads.add(threading.get_ident())
            return network(x, t)  # type: ignore[operator]

        return call

    ensemble._members = [(fold, watched(net)) for fold, net in ensemble._members]  # noqa: SLF001
    plan = ensemble.plan_slices(volume, brain_mask=mask)
    chosen = list(plan[len(plan) // 2 - 2: len(plan) // 2 + 3])
    before = torch.get_num_threads()
    results = {}
    reports: list[Progress] = []
    try:
        for n_threads in (1, 2):
            torch.set_num_threads(n_threads)
            threads.clear()
            reports.clear()
            results[n_threads] = ensemble.analyse(volume, slices=chosen, brain_mask=mask, on_progress=reports.append)
            assert len(threads) == n_threads
    finally:
        torch.set_num_threads(before)
    one, two = results[1], results[2]
    assert one.anomaly_map.max() > 0.05
    for name in ("anomaly_map", "member_spread", "restored", "slice_scores"):
        np.testing.assert_array_equal(getattr(one, name), getattr(two, name), err_msg=name)
    dones = [report.done for report in reports]  # those of the side-by-side run
    assert dones == sorted(dones)
    assert dones[-1] == reports[-1].total == len(chosen) * 4 * ensemble.steps_for(AnalysisSettings())
