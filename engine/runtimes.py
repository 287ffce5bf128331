"""The runtimes that can run an ensemble's networks (issue 21), one registry for the CLI, the viewer and the types.

* ``torch``: each member as a PyTorch module (eager). The only runtime on CUDA, and the fallback everywhere.
* ``onnxruntime``: each member exported once to ONNX and run by its own ONNX Runtime session, on the CPU. On the
  README's 2-core EPYC it analyses a whole volume 1.3-1.9x faster than eager, natively (AVX-512) and with the CPU
  made to look AVX2-only, and its maps agree with eager's within :data:`MAP_TOLERANCE`. Its outputs do not depend
  on the batch, so the ensemble runs it unpadded (:attr:`RuntimeSpec.batch_invariant`).
* ``auto`` (the default): ``onnxruntime`` on a CPU when it is installed, else ``torch``.

Exporting a member takes about a second, so exports are cached, keyed by everything that shapes the graph (the
member's weight hash, the network's configuration and input size, the torch and exporter versions): under
``$CONDIFF_CACHE_DIR``, else the platform's cache folder. A cache that cannot be written is skipped (the export then
stays in memory); a cached file ONNX Runtime cannot load is exported again.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import logging
import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from engine.errors import ConfigError, OutputError

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

RuntimeName = Literal["torch", "onnxruntime"]


@dataclass(frozen=True)
class RuntimeSpec:
    """One runtime.

    Attributes:
        name: its key in :data:`RUNTIMES`.
        description: what it is for, as the CLI's help shows it.
        batch_invariant: a slice's network output is bit for bit the same whatever else is in its batch and however
            many threads run it. Then a call needs no padding to a fixed width: one slice costs one slice. When
            False, every call is padded to the same width so a slice's result does not depend on its batch.
            Measured for ONNX Runtime (batches of 1 to 8, 1 and 2 threads, AVX-512 and AVX2;
            ``tests/engine/test_runtimes.py``); PyTorch's kernels change their blocking with the batch size.
        parallel_members: each member runs on one thread and the ensemble runs as many members side by side as the
            caller has threads (``torch.get_num_threads()``), instead of one member at a time on all of them. Only for
            a runtime whose output does not depend on its thread count, so the maps stay bit for bit the same. For
            ONNX Runtime on the README's 2-core EPYC: ten members' five calls on one slice 0.66 -> 0.33 s, on four
            slices 1.55 -> 1.11 s.
    """

    name: str
    description: str
    batch_invariant: bool
    parallel_members: bool = False


RUNTIMES: Final[dict[str, RuntimeSpec]] = {
    spec.name: spec for spec in (
        RuntimeSpec("torch", "PyTorch eager: every device; the fallback", batch_invariant=False),
        RuntimeSpec("onnxruntime", "ONNX Runtime on the CPU: 1.3-1.9x faster a volume than eager (members exported "
                    "once, cached)", batch_invariant=True, parallel_members=True),
    )
}
"""Each runtime and what it is for; ``auto`` picks among them (see :func:`resolve_runtime`)."""
RUNTIME_CHOICES: Final[tuple[str, ...]] = ("auto", *RUNTIMES)
MAP_TOLERANCE: Final = 1e-3
"""Largest difference allowed between two runtimes' anomaly maps of the same slices (1 - SSIM units; measured:
4.6e-5 over a whole volume, ten members, five steps)."""
OPSET: Final = 17
_EXPORT_VERSION: Final = 1  # bump when the export itself changes, so old cached graphs are not reused


def onnxruntime_available() -> bool:
    """True when ONNX Runtime and the ONNX exporter's one dependency (``onnx``) can be imported."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx"))


def resolve_runtime(requested: str, device: torch.device) -> RuntimeName:
    """The runtime ``requested`` (one of :data:`RUNTIME_CHOICES`) means on ``device``.

    Raises:
        ConfigError: an unknown name, ``onnxruntime`` for a GPU, or ``onnxruntime`` when it is not installed.
    """
    if requested not in RUNTIME_CHOICES:
        raise ConfigError(f"unknown runtime {requested!r}; known: {', '.join(RUNTIME_CHOICES)}")
    if requested == "torch":
        return "torch"
    if device.type != "cpu":
        if requested == "onnxruntime":
            raise ConfigError(f"the onnxruntime runtime runs on the CPU only, not on {device.type}")
        return "torch"
    if onnxruntime_available():
        return "onnxruntime"
    if requested == "onnxruntime":
        raise ConfigError("the onnxruntime runtime is not installed (pip install onnxruntime onnx)")
    return "torch"


def cache_folder() -> Path:
    """Where exported members are kept: ``$CONDIFF_CACHE_DIR``, else the platform's cache folder for condiff."""
    if os.environ.get("CONDIFF_CACHE_DIR"):
        return Path(os.environ["CONDIFF_CACHE_DIR"]) / "onnx"
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "condiff" / "onnx"


class _Output:
    """What :func:`engine.network.denoise` reads from a network call: ``.sample``."""

    __slots__ = ("sample",)

    def __init__(self, sample: torch.Tensor) -> None:
        self.sample = sample


class OnnxMember:
    """One member run by its own ONNX Runtime session, called as the diffusers UNet is: ``member(x, t).sample``."""

    def __init__(self, session: Any) -> None:
        self._session = session

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> _Output:
        import torch  # noqa: PLC0415 - this module stays importable without torch (the CLI's choices)

        out = self._session.run(None, {"x": x.detach().cpu().numpy(), "t": t.detach().cpu().numpy()})[0]
        return _Output(torch.from_numpy(out))


def _export(unet: torch.nn.Module, channels: int, size: int) -> bytes:
    import torch  # noqa: PLC0415

    class Plain(torch.nn.Module):
        """The diffusers UNet as a tensor function, for the exporter (it returns an output object)."""

        def __init__(self) -> None:
            super().__init__()
            self.unet = unet

        def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return self.unet(x, t).sample

    x = torch.zeros(1, channels, size, size)
    t = torch.zeros(1, dtype=torch.long)
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # the tracer's notes on diffusers' shape asserts, and the exporter's deprecation
        warnings.simplefilter("ignore")
        torch.onnx.export(Plain().eval(), (x, t), buffer, dynamo=False, input_names=["x", "t"],
                          output_names=["out"], opset_version=OPSET,
                          dynamic_axes={"x": {0: "batch"}, "t": {0: "batch"}, "out": {0: "batch"}})
    return buffer.getvalue()


def _cache_key(weights_sha256: str, unet_config: Any, size: int) -> str:
    import onnx  # noqa: PLC0415
    import torch  # noqa: PLC0415

    facts = {"weights": weights_sha256, "unet": asdict(unet_config), "size": size, "torch": torch.__version__,
             "onnx": onnx.__version__, "opset": OPSET, "export": _EXPORT_VERSION}
    return hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def onnx_member(unet: torch.nn.Module, *, weights_sha256: str | None, unet_config: Any, size: int, threads: int,
                cache: Path | None = None) -> OnnxMember:
    """``unet`` (a loaded member) as an ONNX Runtime session of ``threads`` threads, exported or taken from the cache.

    Args:
        unet: the member's network, weights loaded, on the CPU.
        weights_sha256: the member file's hash (from the model card): with the rest, it names the cached export;
            None for weights that have no file (nothing is cached).
        unet_config: the preset's network configuration (a dataclass).
        size: the input canvas (pixels per side).
        threads: ONNX Runtime's intra-op threads (the caller's torch thread count).
        cache: the cache folder (default :func:`cache_folder`).
    """
    import onnxruntime as ort  # noqa: PLC0415

    from engine.writers import atomic_write_bytes  # noqa: PLC0415

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: ONNX Runtime's own notes would otherwise reach the terminal
    # Each session keeps its memory arena: without it ten sessions peak 235 MB lower, but a call is 1.3-1.5x slower
    # (README, "The CPU runtime").
    channels = int(getattr(unet.config, "in_channels", 2))
    if weights_sha256 is None:
        return OnnxMember(ort.InferenceSession(_export(unet, channels, size), options,
                                               providers=["CPUExecutionProvider"]))
    path = (cache or cache_folder()) / f"{_cache_key(weights_sha256, unet_config, size)}.onnx"
    if path.is_file():
        try:
            return OnnxMember(ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]))
        except Exception as exc:  # noqa: BLE001 - a damaged cached file is exported again
            logger.warning("%s: cached export unreadable (%s); exporting again", path, exc)
    graph = _export(unet, channels, size)
    try:
        atomic_write_bytes(path, graph)
    except OutputError as exc:
        logger.info("%s: export not cached (%s)", path, exc)
    return OnnxMember(ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"]))


Denoiser = Callable[..., Any]
"""A member's network in any runtime: called with ``(cat([x_t, condition]), timesteps)`` tensors, it returns an object
whose ``.sample`` is the prediction (the diffusers UNet, :class:`OnnxMember`)."""


def in_runtime(net: torch.nn.Module, runtime: RuntimeName, preset: Any, *,
               weights_sha256: str | None = None, threads: int | None = None) -> Denoiser:
    """A loaded member's network as ``runtime`` runs it: itself for torch, else an :func:`onnx_member` of the
    ``preset``'s network (cached under ``weights_sha256`` when given) on ``threads`` threads. By default, the threads
    a member gets inside an ensemble: one for a :attr:`RuntimeSpec.parallel_members` runtime (the ensemble runs
    members side by side), else the caller's torch thread count."""
    if runtime == "torch":
        return net
    import torch  # noqa: PLC0415

    if threads is None:
        threads = 1 if RUNTIMES[runtime].parallel_members else torch.get_num_threads()
    return onnx_member(net, weights_sha256=weights_sha256, unet_config=preset.unet, size=preset.preprocess.size,
                       threads=threads)
