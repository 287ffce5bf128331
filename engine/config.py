"""Frozen configuration dataclasses and the named presets (``tiny``, ``small``, ``paper``).

A preset bundles everything that must agree between training and inference: the network layout, the model-space
geometry and intensity normalisation (:class:`PreprocessSpec`), and the diffusion settings. The resolved preset is
written into every model folder, so a model always carries the exact settings it was trained with.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, get_args

from engine.errors import ConfigError

Normalisation = Literal["max", "percentile", "landmarks"]
PredictionType = Literal["epsilon", "v_prediction", "sample"]


@dataclass(frozen=True)
class PreprocessSpec:
    """How a native scan is turned into model-space axial slices (and back).

    Attributes:
        size: side of the square model-space canvas, in pixels.
        spacing_mm: in-plane pixel size of the canvas, in mm. Through-plane, every native axial slice is kept.
        normalisation: ``"max"`` divides by the volume's maximum inside the brain (the paper); ``"percentile"``
            divides by the given percentile of brain voxels and clips to [0, 1].
        percentile: percentile used by ``"percentile"`` normalisation.
        landmark_percentiles / landmark_values: ``"landmarks"`` normalisation (piecewise-linear histogram
            standardisation, Nyul & Udupa 1999): the scan's brain intensities at these percentiles are mapped to
            these model values (fitted on the training scans, :func:`engine.preprocess.fit_landmarks`), with 0 kept
            at 0, linearly in between and beyond the last landmark, then clipped to [0, 1]. Scans from another
            scanner then present their tissues at the intensities the model was trained on.
        min_brain_fraction: slices whose brain covers less than this share of the canvas are not used for training
            (and are skipped, map = 0, at inference).
        slice_spacing_mm: the model's spacing through the plane. None (1.x and 2.x models, the paper) takes every
            native slice as it is. A number anti-aliases every scan along its slice axis to that spacing (a Gaussian of
            sigma ``(spacing / thickness - 1) / 2`` slices, as in-plane) before its slices are taken, in training and
            at inference alike, so a 1 mm slice reaches the network as smooth as the training scans' slabs; a
            whole-volume analysis then restores one slice per ``slice_spacing_mm`` and interpolates between them.
    """

    size: int = 64
    spacing_mm: float = 3.0
    normalisation: Normalisation = "max"
    percentile: float = 99.5
    min_brain_fraction: float = 0.02
    landmark_percentiles: tuple[float, ...] = ()
    landmark_values: tuple[float, ...] = ()
    slice_spacing_mm: float | None = None

    def __post_init__(self) -> None:
        if self.slice_spacing_mm is not None and not self.slice_spacing_mm > 0:
            raise ConfigError(f"slice_spacing_mm must be positive, got {self.slice_spacing_mm}")
        if self.size < 8 or self.size % 8:
            raise ConfigError(f"size must be a multiple of 8 and at least 8, got {self.size}")
        if self.spacing_mm <= 0:
            raise ConfigError(f"spacing_mm must be positive, got {self.spacing_mm}")
        if self.normalisation not in ("max", "percentile", "landmarks"):
            raise ConfigError(f"normalisation must be 'max', 'percentile' or 'landmarks', got {self.normalisation!r}")
        if self.normalisation == "landmarks":
            pcts, vals = self.landmark_percentiles, self.landmark_values
            if len(pcts) < 2 or len(pcts) != len(vals):
                raise ConfigError("landmarks normalisation needs at least 2 landmark_percentiles and as many "
                                 "landmark_values")
            if any(b <= a for a, b in zip(pcts, pcts[1:], strict=False)) or not (pcts[0] > 0 and pcts[-1] <= 100):
                raise ConfigError(f"landmark_percentiles must increase strictly within (0, 100], got {pcts}")
            if any(b <= a for a, b in zip(vals, vals[1:], strict=False)) or vals[0] <= 0:
                raise ConfigError(f"landmark_values must be positive and increase strictly, got {vals}")
        if not 50.0 < self.percentile <= 100.0:
            raise ConfigError(f"percentile must be in (50, 100], got {self.percentile}")
        if not 0.0 <= self.min_brain_fraction < 1.0:
            raise ConfigError(f"min_brain_fraction must be in [0, 1), got {self.min_brain_fraction}")


@dataclass(frozen=True)
class UNetConfig:
    """Arguments of diffusers' ``UNet2DModel`` that a preset chooses (the rest are the library defaults).

    ``in_channels`` is twice the image channels: the noisy image and the condition are concatenated.
    """

    block_out_channels: tuple[int, ...] = (32, 64, 128)
    down_block_types: tuple[str, ...] = ("DownBlock2D", "DownBlock2D", "AttnDownBlock2D")
    up_block_types: tuple[str, ...] = ("AttnUpBlock2D", "UpBlock2D", "UpBlock2D")
    layers_per_block: int = 2
    attention_head_dim: int = 8
    norm_num_groups: int = 32
    image_channels: int = 1

    def __post_init__(self) -> None:
        n = len(self.block_out_channels)
        if len(self.down_block_types) != n or len(self.up_block_types) != n:
            raise ConfigError("block_out_channels, down_block_types and up_block_types must have the same length")
        if any(c % self.norm_num_groups for c in self.block_out_channels):
            raise ConfigError(f"every block width must be divisible by norm_num_groups={self.norm_num_groups}")


@dataclass(frozen=True)
class DiffusionConfig:
    """The forward process and what the network predicts.

    Attributes:
        num_train_timesteps: T (1000 in the paper).
        beta_start / beta_end: linear beta schedule ends (1e-4, 0.02 in the paper).
        prediction_type: ``"epsilon"`` (the paper), ``"v_prediction"`` or ``"sample"`` (x0).
        snr_gamma: Min-SNR-γ loss weighting (1.0 in the paper); None disables it.
        offset_noise: strength of the per-image offset added to the noise (0.1 in the paper).
        train_timesteps: 0 (the paper) draws training timesteps uniformly from all T; n > 0 draws them only from the
            n timesteps that the n-step DDIM sampler visits (trailing spacing: 999, 799, ..., 199 for n = 5), as
            Fast-DDPM does, so that every training step teaches a timestep the default sampler queries. Not the
            paper's.
    """

    num_train_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    prediction_type: PredictionType = "epsilon"
    snr_gamma: float | None = 1.0
    offset_noise: float = 0.1
    train_timesteps: int = 0

    def __post_init__(self) -> None:
        if self.prediction_type not in ("epsilon", "v_prediction", "sample"):
            raise ConfigError(f"unknown prediction_type {self.prediction_type!r}")
        if not 0 <= self.train_timesteps <= self.num_train_timesteps:
            raise ConfigError(f"train_timesteps must be in 0..{self.num_train_timesteps}, got {self.train_timesteps}")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (the paper's values are the defaults, batch excepted).

    ``synthetic_slices`` > 0 adds the synthetic benchmark (:mod:`engine.synthetic`: the fold's held-out tasks on that
    many validation slices, scored like real lesions) to every training check.

    Two settings are not the paper's (their defaults switch them off):

    * ``anomaly_loss_weight``: the loss on pixels inside a synthetic anomaly counts ``1 + anomaly_loss_weight`` times
      (0 is the paper's plain loss). Anomalies cover a few per cent of a slice, so a plain loss mostly teaches the
      network to copy its condition.
    * ``condition_noise``: standard deviation of coarse Gaussian noise added to the training condition inside the
      brain (model intensity units; 0 = none). The noise is drawn on a ``condition_noise_cells`` square grid and
      upsampled smoothly to the canvas, as the denoising autoencoders of Kascenas et al. (MIDL 2022) corrupt their
      input, so the condition's local intensities cannot simply be copied. Validation and check pairs get none.
    * ``acquisition_augmentation``: share of training slices given another scanner's look (bias field, gamma,
      blur, noise, anisotropic resolution; :mod:`engine.augment`) before the synthetic anomaly, identically in
      target and condition (0 = none). Validation and check pairs get none.
    """

    batch_size: int = 16
    learning_rate: float = 1e-4
    weight_decay: float = 1e-2
    grad_clip: float = 1.0
    ema_max_decay: float = 0.9999
    p_no_task: float = 0.2
    validate_every: int = 500
    validation_slices: int = 64
    early_stop_patience: int = 50_000
    checkpoint_every: int = 250
    check_every: int = 1000
    check_slices: int = 16
    synthetic_slices: int = 0
    anomaly_loss_weight: float = 0.0
    condition_noise: float = 0.0
    condition_noise_cells: int = 8
    acquisition_augmentation: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.acquisition_augmentation <= 1.0:
            raise ConfigError(f"acquisition_augmentation must be in [0, 1], got {self.acquisition_augmentation}")
        if not self.anomaly_loss_weight >= 0:
            raise ConfigError(f"anomaly_loss_weight must be >= 0, got {self.anomaly_loss_weight}")
        if not self.condition_noise >= 0:
            raise ConfigError(f"condition_noise must be >= 0, got {self.condition_noise}")
        if self.condition_noise_cells < 1:
            raise ConfigError(f"condition_noise_cells must be at least 1, got {self.condition_noise_cells}")


NoiseDebias = Literal["none", "input", "restoration", "both"]
NOISE_DEBIAS: tuple[str, ...] = get_args(NoiseDebias)


@dataclass(frozen=True)
class MapScoring:
    """How a restoration is compared with its input, besides the SSIM constants (recorded in the model card; the
    defaults are the paper's comparison and condiff 2.0's).

    Attributes:
        mask_restoration: zero the restoration outside the brain before SSIM, as the input already is, so the brain's
            rim is not scored against whatever the network put outside it.
        input_blur_px: compare at the restoration's own sharpness: the input is smoothed inside the brain (a Gaussian
            of this sigma in model pixels, normalised by the smoothed brain mask so the rim does not darken) before
            SSIM. Detail a few-step restoration cannot reproduce then no longer scores like an anomaly. 0 = none.
        noise_debias: take each image's own noise variance off its local variance inside SSIM (``"input"``, the
            restoration's (``"restoration"``), ``"both"`` or ``"none"``), the noise estimated per slice from the image
            alone (:func:`engine.anomaly.noise_sigma`), so grain that neither image owes to anatomy is not scored.
        blur_restoration: smooth the restoration like the input (``input_blur_px``), comparing both at one coarser
            scale.

    Measured on 3.0 (README, "Trust on other scanners"): none of these beats the paper's comparison on the dev
    cases' separation, so the defaults stay the paper's.
    """

    mask_restoration: bool = False
    input_blur_px: float = 0.0
    noise_debias: NoiseDebias = "none"
    blur_restoration: bool = False

    def __post_init__(self) -> None:
        if self.noise_debias not in NOISE_DEBIAS:
            raise ConfigError(f"noise_debias must be one of {', '.join(NOISE_DEBIAS)}, got {self.noise_debias!r}")
        if not (self.input_blur_px >= 0 and self.input_blur_px < 10):
            raise ConfigError(f"input_blur_px must be in [0, 10), got {self.input_blur_px}")


DEFAULT_MIN_VOLUME_ML = 0.05
"""Findings smaller than this (mL) are not listed, by default, in the CLI, the report and the viewer: below about two
voxels of the bundled model's 3 mm canvas."""

LANDMARK_PERCENTILES: tuple[float, ...] = (2.0, 10.0, 25.0, 50.0, 75.0, 90.0, 98.0)
"""Brain-intensity percentiles that ``"landmarks"`` normalisation maps onto reference values."""

INFERENCE_ONLY_KEYS = ("description", "default_sampler", "default_steps")


@dataclass(frozen=True)
class Preset:
    """A named, complete description of a model family."""

    name: str
    description: str
    unet: UNetConfig
    preprocess: PreprocessSpec
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    default_sampler: str = "ddim"
    default_steps: int = 5

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (tuples become lists)."""
        return asdict(self)

    def training_identity(self) -> dict[str, Any]:
        """What members trained with this preset must share: everything but the description and the sampler defaults.

        The sampler a model runs with by default is chosen after training, by measuring; it does not change the weights.
        """
        return {k: v for k, v in self.to_dict().items() if k not in INFERENCE_ONLY_KEYS}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preset:
        """Rebuild a preset from :meth:`to_dict` output; unknown keys are an error."""
        def build(klass: type, values: dict[str, Any]) -> Any:
            names = {f.name for f in fields(klass)}
            unknown = set(values) - names
            if unknown:
                raise ConfigError(f"unknown {klass.__name__} keys: {sorted(unknown)}")
            out = {}
            for f in fields(klass):
                if f.name not in values:
                    continue
                v = values[f.name]
                out[f.name] = tuple(v) if isinstance(v, list) else v
            return klass(**out)

        d = dict(data)
        return cls(
            name=d["name"],
            description=d.get("description", ""),
            unet=build(UNetConfig, d["unet"]),
            preprocess=build(PreprocessSpec, d["preprocess"]),
            diffusion=build(DiffusionConfig, d.get("diffusion", {})),
            train=build(TrainConfig, d.get("train", {})),
            default_sampler=d.get("default_sampler", "ddim"),
            default_steps=int(d.get("default_steps", 5)),
        )


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        name="tiny",
        description="Test-only network (a few thousand parameters, 32x32 at 6 mm); restores nothing useful.",
        unet=UNetConfig(
            block_out_channels=(8, 16),
            down_block_types=("DownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "UpBlock2D"),
            layers_per_block=1,
            attention_head_dim=8,
            norm_num_groups=8,
        ),
        preprocess=PreprocessSpec(size=32, spacing_mm=6.0),
        diffusion=DiffusionConfig(prediction_type="v_prediction"),
        train=TrainConfig(batch_size=4, validate_every=10, validation_slices=8, checkpoint_every=10,
                          check_every=10, check_slices=4, synthetic_slices=16),
        default_sampler="ddim",
        default_steps=2,
    ),
    "small": Preset(
        name="small",
        description="CPU preset: a 4-level 2.2 M-parameter UNet on 64x64 canvases at 3 mm, v-prediction, trained on "
        "the 5 timesteps a 5-step DDIM visits with the loss inside synthetic anomalies counted 31 times, on "
        "landmark-standardised intensities, anti-aliased to 3 mm through the plane; restores with 2 DDIM steps on "
        "2 of those timesteps (999, 399). Not the paper's network or recipe.",
        unet=UNetConfig(
            block_out_channels=(16, 32, 64, 112),
            down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"),
            layers_per_block=1,
            attention_head_dim=8,
            norm_num_groups=16,
        ),
        # Landmark values: fitted on the 134 IXI T1 scans of the train role (train --normalisation landmarks does the
        # same on other data); they make a BraTS or MS scan present its tissues at the intensities the model was
        # trained on. Through the plane, every scan is anti-aliased to the 3 mm the model works at (condiff 3.0).
        preprocess=PreprocessSpec(size=64, spacing_mm=3.0, normalisation="landmarks", percentile=99.5,
                                  landmark_percentiles=LANDMARK_PERCENTILES,
                                  landmark_values=(0.1667, 0.3162, 0.4816, 0.6306, 0.7666, 0.8619, 0.9549),
                                  slice_spacing_mm=3.0),
        diffusion=DiffusionConfig(prediction_type="v_prediction", snr_gamma=None, train_timesteps=5),
        train=TrainConfig(batch_size=16, learning_rate=3e-4, validate_every=250, validation_slices=64,
                          checkpoint_every=250, check_every=500, check_slices=16, synthetic_slices=128,
                          anomaly_loss_weight=30.0),
        default_sampler="ddim",
        default_steps=2,  # condiff 3.2: as good as 5 steps by issue 21's bar, a volume in half the time (README)
    ),
    "paper": Preset(
        name="paper",
        description="The network of Baugh et al. 2024 (72.4 M parameters, 128x128, epsilon-prediction). A GPU model.",
        unet=UNetConfig(
            block_out_channels=(128, 256, 256, 512),
            down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
            up_block_types=("UpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D"),
            layers_per_block=2,
            attention_head_dim=8,
            norm_num_groups=32,
        ),
        preprocess=PreprocessSpec(size=128, spacing_mm=1.5),
        diffusion=DiffusionConfig(prediction_type="epsilon"),
        train=TrainConfig(batch_size=16, validate_every=500, validation_slices=200, checkpoint_every=1000,
                          check_every=5000, check_slices=16),
        default_sampler="paper",
        default_steps=50,
    ),
}


def get_preset(name: str) -> Preset:
    """Return the named preset or raise ``ValueError`` listing the known names."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
