"""Embedding networks: a backbone, a projection to 128-d, then L2 normalisation onto the unit sphere.

On the sphere squared distances lie in [0, 4], the scale every threshold and margin here speaks.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional

from models.train.config import TrainConfig
from models.train.onnx_import import load_onnx_module
from service.runtime.model_card import InputSpec, ModelCard

EMBEDDING_DIM = 128
INPUT_NAME = "input"
OUTPUT_NAME = "embedding"
# The small CNN sees raw RGB centred and scaled to about [-1, 1].
SMALL_CNN_INPUT = InputSpec(
    width=112,
    height=112,
    layout="NCHW",
    channel_order="RGB",
    mean=(127.5, 127.5, 127.5),
    std=(128.0, 128.0, 128.0),
    input_name=INPUT_NAME,
    output_name=OUTPUT_NAME,
)


class SmallCNN(nn.Module):
    """Four stride-2 conv blocks after a 2× average pool (112 → 56 px): cheap enough for CPU tests."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        channels = [3, width, 2 * width, 4 * width, 8 * width]
        blocks: list[nn.Module] = [nn.AvgPool2d(2)]
        for cin, cout in itertools.pairwise(channels):
            blocks += [
                nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(),
            ]
        blocks += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*blocks)
        self.out_features = channels[-1]

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.features(x)
        return out


class ProjectionHead(nn.Module):
    """Linear projection to the embedding size; the BatchNorm after it (as in SFace's own head) spreads
    the initial embeddings over the sphere instead of letting them start bunched together."""

    def __init__(self, in_features: int, dim: int = EMBEDDING_DIM) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, dim, bias=False)
        self.norm = nn.BatchNorm1d(dim)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.norm(self.linear(x))
        return out


class EmbeddingNet(nn.Module):
    """Preprocessed image batch → unit-length embeddings; what gets exported to ONNX."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: Tensor) -> Tensor:
        return functional.normalize(self.head(self.backbone(x)), dim=1)


def freeze_batchnorm_statistics(model: nn.Module) -> None:
    """Put every BatchNorm in eval mode (running statistics fixed, affine weights still trained)."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def sface_base(config: TrainConfig) -> tuple[ModelCard, Path]:
    card = ModelCard.load(config.base_card)
    return card, config.base_card.parent / card.onnx_file


def build_model(config: TrainConfig) -> tuple[EmbeddingNet, InputSpec]:
    """The network named by the config and the input spec its exported card will carry."""
    if config.backbone == "small_cnn":
        backbone = SmallCNN(config.small_cnn_width)
        return EmbeddingNet(backbone, ProjectionHead(backbone.out_features)), SMALL_CNN_INPUT
    card, onnx_path = sface_base(config)
    if card.embedding_dim != EMBEDDING_DIM:
        raise ValueError(f"{onnx_path.name} gives {card.embedding_dim}-d embeddings, not {EMBEDDING_DIM}")
    # SFace already ends in its own linear projection to 128-d (Gemm + BatchNorm, "fc1"): keeping it
    # keeps the pretrained embedding, so the head here is the identity before normalisation.
    spec = card.single_input.model_copy(update={"input_name": INPUT_NAME, "output_name": OUTPUT_NAME})
    return EmbeddingNet(load_onnx_module(onnx_path), nn.Identity()), spec


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def default_device(choice: str) -> torch.device:
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")
