"""Training-time augmentation and the network's input transform, in plain torch ops (no torchvision).

Everything runs batched on the training device. Geometry (flip, small zoom-in crop, shift) is one
affine ``grid_sample``; colour jitter is per-image brightness, contrast and saturation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional

from service.runtime.model_card import InputSpec

# ITU-R BT.601 luma, the grey that contrast and saturation pivot around.
LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True, slots=True)
class AugmentConfig:
    flip: bool = True
    max_zoom: float = 1.1
    max_shift: float = 0.04
    color_jitter: float = 0.2


def _uniform(generator: torch.Generator, count: int, low: float, high: float) -> Tensor:
    return low + (high - low) * torch.rand(count, generator=generator)


def augment(images: Tensor, config: AugmentConfig, generator: torch.Generator) -> Tensor:
    """(B, 3, H, W) float RGB in [0, 255] → augmented copy, same shape and range.

    Random numbers come from ``generator`` on the CPU (reproducible on any device).
    """
    count = images.shape[0]
    device, dtype = images.device, images.dtype
    zoom = _uniform(generator, count, 1.0, config.max_zoom)
    # affine_grid coordinates span [-1, 1], so a shift of s·side is 2s.
    shift = _uniform(generator, 2 * count, -2 * config.max_shift, 2 * config.max_shift).view(count, 2)
    mirror = (
        torch.where(torch.rand(count, generator=generator) < 0.5, -1.0, 1.0)
        if config.flip
        else torch.ones(count)
    )
    theta = torch.zeros(count, 2, 3)
    theta[:, 0, 0] = mirror / zoom
    theta[:, 1, 1] = 1.0 / zoom
    theta[:, :, 2] = shift
    grid = functional.affine_grid(
        theta.to(device=device, dtype=dtype), list(images.shape), align_corners=False
    )
    out = functional.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    if config.color_jitter > 0:
        low, high = 1.0 - config.color_jitter, 1.0 + config.color_jitter
        brightness, contrast, saturation = (
            _uniform(generator, count, low, high).to(device=device, dtype=dtype).view(count, 1, 1, 1)
            for _ in range(3)
        )
        luma = torch.tensor(LUMA, device=device, dtype=dtype).view(1, 3, 1, 1)
        out = out * brightness
        grey = (out * luma).sum(dim=1, keepdim=True)
        out = (out - grey.mean(dim=(2, 3), keepdim=True)) * contrast + grey.mean(dim=(2, 3), keepdim=True)
        grey = (out * luma).sum(dim=1, keepdim=True)
        out = grey + (out - grey) * saturation
    return out.clamp(0.0, 255.0)


def crops_to_float(crops: Tensor) -> Tensor:
    """(B, H, W, 3) uint8 RGB → (B, 3, H, W) float RGB in [0, 255]."""
    return crops.permute(0, 3, 1, 2).float()


def to_network_input(images: Tensor, spec: InputSpec) -> Tensor:
    """(B, 3, H, W) float RGB [0, 255] → what the model takes, exactly as the service's embedder prepares it:
    ``(pixel[channel_order] − mean) / std`` (NCHW only: every model trained here is NCHW)."""
    if spec.layout != "NCHW":
        raise ValueError("training supports NCHW models only")
    if spec.channel_order == "BGR":
        images = images.flip(1)
    mean = torch.tensor(spec.mean, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return (images - mean) / std
