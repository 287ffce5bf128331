"""Anomaly maps from a restoration and its conditioning image, slice scores, and ensemble aggregation.

The map follows Baugh et al. (2024): a local SSIM between the model's restoration and the input it was
conditioned on, turned into ``clamp(1 - SSIM, 0, 1)`` and zeroed outside the brain. The SSIM is the one of
``torchgeometry`` 0.1.2 (11x11 Gaussian window, sigma 1.5, depthwise convolution with zero padding, biased
local variances).

Two constant conventions are offered:

* ``"paper"``: ``C1 = (0.01 * 255)^2``, ``C2 = (0.03 * 255)^2``. The reference passed ``max_val=255`` while
  its images were in ``[0, 1]``, so both constants dwarf the local statistics and the map stays small (a 10x10
  block zeroed in uniform noise peaks around 0.03-0.05). Use it to reproduce the published numbers.
* ``"standard"``: constants for a data range of 1 (``C1 = 0.01^2``, ``C2 = 0.03^2``), the usual SSIM; the same
  block peaks near 1. This is not a monotone rescaling of the ``"paper"`` map.

Every function works on batched torch tensors on whatever device they live on.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F  # noqa: N812

from engine.config import MapScoring

SSIMConvention = Literal["paper", "standard"]
SliceScoreMode = Literal["canvas", "brain", "topk"]
TOPK_PIXELS = 32
"""Pixels averaged by the ``"topk"`` slice score (about 3 cm^2 at 3 mm: a small lesion's worth)."""

_K1 = 0.01
_K2 = 0.03
_DATA_RANGE: dict[str, float] = {"paper": 255.0, "standard": 1.0}


def _gaussian_window(window: int, sigma: float, *, device: torch.device) -> torch.Tensor:
    """Normalised 2-D Gaussian window (outer product of a normalised 1-D kernel), float32 (window, window)."""
    offsets = torch.arange(window, dtype=torch.float64, device=device) - window // 2
    if window % 2 == 0:
        offsets = offsets + 0.5
    kernel_1d = torch.exp(-(offsets**2) / (2.0 * sigma**2))
    kernel_1d = kernel_1d / kernel_1d.sum()
    return torch.outer(kernel_1d, kernel_1d).to(torch.float32)


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.ndim != 4 or y.ndim != 4:
        raise ValueError(f"SSIM needs (B, C, H, W) tensors, got shapes {tuple(x.shape)} and {tuple(y.shape)}")
    if x.shape != y.shape:
        raise ValueError(f"SSIM inputs differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}")


def _ssim_per_channel(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    convention: SSIMConvention,
    window: int,
    sigma: float,
    y_noise_var: torch.Tensor | None = None,
    x_noise_var: torch.Tensor | None = None,
) -> torch.Tensor:
    """Local SSIM per channel, float32, shape (B, C, H, W).

    ``y_noise_var`` (broadcastable to (B, C, 1, 1)), when given, is taken off ``y``'s local variance (floored at 0):
    the structure ``y`` owes to its own noise is then not asked of ``x``.
    """
    _check_pair(x, y)
    if convention not in _DATA_RANGE:
        raise ValueError(f"convention must be 'paper' or 'standard', got {convention!r}")
    if window < 1 or sigma <= 0:
        raise ValueError(f"window must be >= 1 and sigma > 0, got window={window}, sigma={sigma}")
    x = x.to(torch.float32)
    y = y.to(torch.float32)
    channels = x.shape[1]
    data_range = _DATA_RANGE[convention]
    c1 = (_K1 * data_range) ** 2
    c2 = (_K2 * data_range) ** 2

    # One grouped convolution filters the five quantities of every channel at once.
    stacked = torch.cat([x, y, x * x, y * y, x * y], dim=1)
    kernel = _gaussian_window(window, sigma, device=x.device)
    weight = kernel.expand(5 * channels, 1, window, window).contiguous()
    filtered = F.conv2d(stacked, weight, padding=window // 2, groups=5 * channels)
    mu_x, mu_y, e_xx, e_yy, e_xy = torch.split(filtered, channels, dim=1)

    mu_xx = mu_x * mu_x
    mu_yy = mu_y * mu_y
    mu_xy = mu_x * mu_y
    var_x = e_xx - mu_xx
    var_y = e_yy - mu_yy
    if y_noise_var is not None:
        var_y = torch.clamp(var_y - y_noise_var.to(var_y), min=0.0)
    if x_noise_var is not None:
        var_x = torch.clamp(var_x - x_noise_var.to(var_x), min=0.0)
    cov_xy = e_xy - mu_xy
    numerator = (2.0 * mu_xy + c1) * (2.0 * cov_xy + c2)
    denominator = (mu_xx + mu_yy + c1) * (var_x + var_y + c2)
    return numerator / denominator


def ssim_map(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    convention: SSIMConvention = "standard",
    window: int = 11,
    sigma: float = 1.5,
) -> torch.Tensor:
    """Local SSIM between two batches of images, averaged over channels.

    The window is a normalised ``window x window`` Gaussian of standard deviation ``sigma`` applied per
    channel with zero padding of ``window // 2`` (so values within ``window // 2`` pixels of the border see
    zeros outside the image, as ``torchgeometry`` 0.1.2 did). Local variances are biased: ``E[x^2] - E[x]^2``.

    Args:
        x: first batch, shape (B, C, H, W), any float dtype (computed in float32).
        y: second batch, same shape as ``x``.
        convention: ``"paper"`` (constants for a data range of 255, as the reference) or ``"standard"``
            (data range 1).
        window: side of the Gaussian window in pixels.
        sigma: standard deviation of the Gaussian window in pixels.

    Returns:
        float32 tensor of shape (B, 1, H, W) on the inputs' device.

    Raises:
        ValueError: if the shapes differ or are not 4-D, or the convention is unknown.
    """
    ssim = _ssim_per_channel(x, y, convention=convention, window=window, sigma=sigma)
    return ssim.mean(dim=1, keepdim=True)


def default_foreground(condition: torch.Tensor) -> torch.Tensor:
    """The reference's brain mask: pixels where any channel of the input is above 0, shape (B, 1, H, W).

    The reference kept pixels above the per-column minimum over the whole batch; for MRI slices whose
    background is exactly 0 (skull-stripped, max-normalised) that minimum is 0, so the two rules select the
    same pixels.
    """
    if condition.ndim != 4:
        raise ValueError(f"condition must be (B, C, H, W), got shape {tuple(condition.shape)}")
    return (condition > 0).any(dim=1, keepdim=True)


def anomaly_map(
    restored: torch.Tensor,
    condition: torch.Tensor,
    *,
    convention: SSIMConvention = "standard",
    foreground: torch.Tensor | None = None,
    scoring: MapScoring | None = None,
) -> torch.Tensor:
    """The anomaly map ``clamp(1 - SSIM, 0, 1)`` between a restoration and its conditioning image.

    As in the reference, the clamp is applied per channel and the clamped values are averaged over channels
    (for single-channel MRI this is just ``clamp(1 - SSIM, 0, 1)``). Inputs are cast to float32 first, since
    the reference's sampler returned float32 even under autocast. Pixels outside ``foreground`` are set to 0.

    Args:
        restored: the model's restoration, shape (B, C, H, W).
        condition: the input image the model was conditioned on, same shape.
        convention: SSIM constants, see :func:`ssim_map`.
        foreground: boolean mask broadcastable to (B, 1, H, W); defaults to :func:`default_foreground` of
            ``condition`` (``condition > 0``), which for zero-background MRI equals the reference's rule of
            "above the batch's per-column minimum".
        scoring: restoration masking and input smoothing (:class:`MapScoring`); None is the paper's comparison.

    Returns:
        float32 tensor of shape (B, 1, H, W) with values in [0, 1].
    """
    if foreground is None:
        foreground = default_foreground(condition)
    foreground = torch.broadcast_to(foreground.to(device=restored.device, dtype=torch.bool),
                                    (restored.shape[0], 1, *restored.shape[2:]))
    if scoring is not None and scoring.mask_restoration:
        restored = torch.where(foreground, restored.to(torch.float32), torch.zeros((), device=restored.device))
    if scoring is not None and scoring.input_blur_px > 0:
        condition = smooth_inside(condition.to(torch.float32), foreground, scoring.input_blur_px)
        if scoring.blur_restoration:
            restored = smooth_inside(restored.to(torch.float32), foreground, scoring.input_blur_px)
    noise_var = restored_var = None
    if scoring is not None and scoring.noise_debias in ("input", "both"):
        noise_var = noise_sigma(condition, foreground) ** 2
    if scoring is not None and scoring.noise_debias in ("restoration", "both"):
        restored_var = noise_sigma(restored, foreground) ** 2
    ssim = _ssim_per_channel(restored, condition, convention=convention, window=11, sigma=1.5, y_noise_var=noise_var,
                             x_noise_var=restored_var)
    maps = torch.clamp(1.0 - ssim, 0.0, 1.0).mean(dim=1, keepdim=True)
    return torch.where(foreground, maps, torch.zeros((), dtype=maps.dtype, device=maps.device))


NOISE_MIN_PIXELS = 64
"""Fewest interior brain pixels a slice needs for :func:`noise_sigma` to estimate its noise (else 0)."""


def noise_sigma(images: torch.Tensor, foreground: torch.Tensor) -> torch.Tensor:
    """Each slice's noise standard deviation, estimated from the image alone, shape (B, C, 1, 1).

    Immerkaer's mask (the difference of two Laplacians, which cancels any locally linear intensity) is applied at
    every brain pixel whose 3 x 3 neighbourhood lies inside ``foreground``; for Gaussian noise of deviation s its
    response is Gaussian with deviation 6 s, so s = median(|response|) / (0.6745 * 6). The median keeps edges and a
    lesion of less than half the slice from counting as noise. Slices with fewer than :data:`NOISE_MIN_PIXELS` such
    pixels get 0.
    """
    images = images.to(torch.float32)
    channels = images.shape[1]
    mask = torch.tensor([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]], device=images.device)
    response = F.conv2d(images, mask.expand(channels, 1, 3, 3).contiguous(), padding=1, groups=channels).abs()
    inside = foreground.to(torch.float32)
    interior = F.conv2d(inside, torch.ones(1, 1, 3, 3, device=images.device), padding=1) > 8.5
    interior = torch.broadcast_to(interior, response.shape)
    values = torch.where(interior, response, torch.full((), float("nan"), device=images.device)).flatten(2)
    sigma = values.nanmedian(dim=2).values / (0.6745 * 6.0)
    enough = interior.flatten(2).sum(dim=2) >= NOISE_MIN_PIXELS
    sigma = torch.where(enough & torch.isfinite(sigma), sigma, torch.zeros((), device=images.device))
    return sigma[:, :, None, None]


def smooth_inside(images: torch.Tensor, foreground: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian smoothing of (B, C, H, W) images inside a (B, 1, H, W) mask, normalised by the smoothed mask
    (normalised convolution), so pixels near the mask's edge are averaged over the mask only; zero outside it."""
    radius = max(1, int(4.0 * sigma + 0.5))
    kernel = _gaussian_window(2 * radius + 1, sigma, device=images.device)
    channels = images.shape[1]
    mask = foreground.to(torch.float32)
    weight = kernel.expand(channels, 1, *kernel.shape).contiguous()
    num = F.conv2d(images * mask, weight, padding=radius, groups=channels)
    den = F.conv2d(mask, kernel[None, None], padding=radius)
    out = num / den.clamp(min=1e-6)
    return torch.where(foreground, out, torch.zeros((), device=images.device))


def slice_scores(
    maps: torch.Tensor,
    foreground: torch.Tensor | None = None,
    *,
    mode: SliceScoreMode = "canvas",
    k: int = TOPK_PIXELS,
) -> torch.Tensor:
    """One anomaly score per image.

    Args:
        maps: anomaly maps, shape (B, C, H, W) (C is 1 for :func:`anomaly_map` output).
        foreground: boolean mask broadcastable to ``maps``; required for ``mode="brain"``, unused for
            ``"canvas"``.
        mode: ``"canvas"`` averages over all C*H*W pixels, background included (the paper's score, so it
            scales with brain area); ``"brain"`` averages over foreground pixels only (0 for an image with
            none); ``"topk"`` averages the ``k`` highest foreground values (fewer when the foreground is smaller; 0
            for none), a score that does not grow with the brain's area.
        k: pixels of the ``"topk"`` score.

    Returns:
        float32 tensor of shape (B,).
    """
    if maps.ndim != 4:
        raise ValueError(f"maps must be (B, C, H, W), got shape {tuple(maps.shape)}")
    maps = maps.to(torch.float32)
    if mode == "canvas":
        return maps.mean(dim=(1, 2, 3))
    if mode not in ("brain", "topk"):
        raise ValueError(f"mode must be 'canvas', 'brain' or 'topk', got {mode!r}")
    if foreground is None:
        raise ValueError(f"slice_scores(mode={mode!r}) needs a foreground mask")
    mask = torch.broadcast_to(foreground.to(device=maps.device, dtype=torch.bool), maps.shape)
    if mode == "topk":
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        flat = torch.where(mask, maps, torch.full((), -1.0, device=maps.device)).flatten(1)
        top = torch.topk(flat, min(k, flat.shape[1]), dim=1).values
        valid = top >= 0
        counts = valid.sum(dim=1)
        totals = torch.where(valid, top, torch.zeros((), device=maps.device)).sum(dim=1)
        return torch.where(counts > 0, totals / counts.clamp(min=1).to(torch.float32), torch.zeros_like(totals))
    totals = torch.where(mask, maps, torch.zeros((), dtype=maps.dtype, device=maps.device)).sum(dim=(1, 2, 3))
    counts = mask.sum(dim=(1, 2, 3))
    return torch.where(counts > 0, totals / counts.clamp(min=1).to(torch.float32), torch.zeros_like(totals))


class MemberMoments:
    """Pixel-wise equal-weight mean and spread of an ensemble's member maps, accumulated one member (and one batch
    of slices) at a time, so the members' maps never have to be held together.

    Sums are kept in float64; ``std`` is the population standard deviation over the members (zero for one member).
    """

    def __init__(self, shape: tuple[int, ...]) -> None:
        self._sum = torch.zeros(shape, dtype=torch.float64)
        self._sum_sq = torch.zeros(shape, dtype=torch.float64)
        self._members = 0

    def add(self, maps: torch.Tensor, start: int = 0) -> None:
        """Add one member's maps for the slices ``start : start + len(maps)`` (any device and float dtype)."""
        values = maps.detach().cpu().double()
        stop = start + values.shape[0]
        self._sum[start:stop] += values
        self._sum_sq[start:stop] += values * values

    def member_done(self) -> None:
        """Count one member as complete (call once per member, after all its batches)."""
        self._members += 1

    def mean_std(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, std)`` over the members counted so far, float32, each of the accumulated shape.

        Raises:
            ValueError: if no member was counted.
        """
        if self._members < 1:
            raise ValueError("no member maps were added")
        mean = self._sum / self._members
        std = torch.sqrt(torch.clamp(self._sum_sq / self._members - mean * mean, min=0.0))
        return mean.float(), std.float()


def aggregate_members(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-wise equal-weight mean and spread of stacked member maps (see :class:`MemberMoments`).

    Args:
        maps: member maps stacked on the first axis, shape (M, B, 1, H, W).

    Returns:
        ``(mean, std)``, each float32 of shape (B, 1, H, W); ``std`` is the population standard deviation over
        the M members (zero when M is 1).
    """
    if maps.ndim != 5 or maps.shape[0] < 1:
        raise ValueError(f"member maps must be (M, B, C, H, W) with M >= 1, got shape {tuple(maps.shape)}")
    moments = MemberMoments(tuple(maps.shape[1:]))
    for member in maps:
        moments.add(member)
        moments.member_done()
    return moments.mean_std()
