"""The denoising network: diffusers' ``UNet2DModel`` built from a preset's :class:`~engine.config.UNetConfig`.

The condition is given by channel concatenation, so the network takes ``2 * image_channels`` inputs
(``cat([x_t, condition], dim=1)``: noisy image first, as in the paper's code) and predicts ``image_channels`` outputs.
"""

from __future__ import annotations

import torch
from diffusers import UNet2DModel

from engine.config import UNetConfig
from engine.runtimes import Denoiser


def build_unet(config: UNetConfig, sample_size: int) -> UNet2DModel:
    """Instantiate the UNet of ``config`` for square inputs of side ``sample_size``.

    Everything not in the config keeps diffusers' defaults, which are the paper's settings (sinusoidal time
    embedding with ``flip_sin_to_cos``, SiLU, GroupNorm eps 1e-5, conv down/upsampling, no dropout).
    """
    return UNet2DModel(
        sample_size=sample_size,
        in_channels=2 * config.image_channels,
        out_channels=config.image_channels,
        block_out_channels=tuple(config.block_out_channels),
        down_block_types=tuple(config.down_block_types),
        up_block_types=tuple(config.up_block_types),
        layers_per_block=config.layers_per_block,
        attention_head_dim=config.attention_head_dim,
        norm_num_groups=config.norm_num_groups,
    )


def count_parameters(model: torch.nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def denoise(model: UNet2DModel | Denoiser, x_t: torch.Tensor, condition: torch.Tensor,
            timesteps: torch.Tensor) -> torch.Tensor:
    """One network call: the prediction for noisy images ``x_t`` given their ``condition``.

    Args:
        model: the UNet, or a member in another runtime (:class:`engine.runtimes.OnnxMember`).
        x_t: noisy images, shape ``(B, C, H, W)``.
        condition: conditioning images, same shape.
        timesteps: integer timesteps, shape ``(B,)`` (or a scalar).
    """
    model_input = torch.cat([x_t, condition], dim=1)  # (B, 2C, H, W)
    return model(model_input, timesteps).sample
