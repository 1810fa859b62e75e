"""A plain NumPy forward pass of dlib's face-recognition ResNet, written from dlib's layer definitions.

It is the independent reference the ONNX conversion is checked against (``models.convert_dlib``,
tests/test_dlib_backbone.py): convolutions as explicit window sums, dlib's affine (inference batch
norm) as a separate step, and dlib's ``add_prev`` semantics (the output takes the larger of the two
shapes; each operand is zero-padded at the end of channels, rows and columns). Slow; for checks only.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import NDArray

from models.dlib_format import INPUT_SCALE, Affine, Conv, DlibResNet, Pool

Array64 = NDArray[np.float64]


def preprocess(chips: NDArray[np.uint8], net: DlibResNet) -> Array64:
    """(N, 150, 150, 3) RGB uint8 → (N, 3, 150, 150) as dlib's input_rgb_image_sized does."""
    mean = np.asarray(net.input_mean, dtype=np.float64)
    scaled: Array64 = (chips.astype(np.float64) - mean) / INPUT_SCALE
    return np.ascontiguousarray(scaled.transpose(0, 3, 1, 2))


def conv(x: Array64, layer: Conv) -> Array64:
    p = layer.padding
    padded = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    kh, kw = layer.weight.shape[2:]
    windows = sliding_window_view(padded, (kh, kw), axis=(2, 3))[:, :, :: layer.stride, :: layer.stride]
    out: Array64 = np.einsum("ncyxij,ocij->noyx", windows, layer.weight.astype(np.float64), optimize=True)
    return out + layer.bias.astype(np.float64)[None, :, None, None]


def affine(x: Array64, layer: Affine) -> Array64:
    gamma = layer.gamma.astype(np.float64)[None, :, None, None]
    beta = layer.beta.astype(np.float64)[None, :, None, None]
    return x * gamma + beta


def pool(x: Array64, layer: Pool) -> Array64:
    if layer.size == 0:
        whole: Array64 = x.mean(axis=(2, 3), keepdims=True)
        return whole
    windows = sliding_window_view(x, (layer.size, layer.size), axis=(2, 3))[
        :, :, :: layer.stride, :: layer.stride
    ]
    pooled: Array64 = windows.max(axis=(4, 5)) if layer.kind == "max" else windows.mean(axis=(4, 5))
    return pooled


def add_prev(a: Array64, b: Array64) -> Array64:
    shape = tuple(max(i, j) for i, j in zip(a.shape, b.shape, strict=True))
    out = np.zeros(shape)
    out[: a.shape[0], : a.shape[1], : a.shape[2], : a.shape[3]] += a
    out[: b.shape[0], : b.shape[1], : b.shape[2], : b.shape[3]] += b
    return out


def relu(x: Array64) -> Array64:
    return np.maximum(x, 0.0)


SHORTCUT_POOL = Pool("avg", 2, 2, 0)


def forward(net: DlibResNet, chips: NDArray[np.uint8]) -> Array64:
    """(N, 150, 150, 3) RGB dlib chips → (N, 128) raw descriptors (dlib does not normalise them)."""
    x = relu(affine(conv(preprocess(chips, net), net.stem_conv), net.stem_affine))
    x = pool(x, net.stem_pool)
    for block in net.blocks:
        h = relu(affine(conv(x, block.conv1), block.affine1))
        h = affine(conv(h, block.conv2), block.affine2)
        shortcut = pool(x, SHORTCUT_POOL) if block.downsample else x
        x = relu(add_prev(h, shortcut))
    pooled: Array64 = x.mean(axis=(2, 3))
    descriptors: Array64 = pooled @ net.fc_weight.astype(np.float64)
    return descriptors
