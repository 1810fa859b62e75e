"""Rebuild a plain ONNX CNN as trainable PyTorch modules, so the shipped model can be fine-tuned.

A small graph interpreter instead of onnx2torch (whose torchvision dependency does not install
with this torch). It covers the operators of MobileFaceNet-style embedders such as SFace: Conv,
BatchNormalization, PRelu/Relu, Add/Sub/Mul, Gemm, Flatten, Reshape, Dropout, pooling; nodes whose
inputs are all constants are folded once with onnx's reference evaluator. Anything else is refused
by name rather than approximated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from numpy.typing import NDArray
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator
from torch import Tensor, nn
from torch.nn import functional


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


class _AnyRankBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNormalization over channel axis 1 for inputs of any rank, like the ONNX operator."""

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"BatchNorm needs (N, C, ...) input, got {input.dim()}-d")


class _Conv(nn.Module):
    def __init__(
        self, weight: NDArray[np.float32], bias: NDArray[np.float32] | None, attrs: dict[str, Any]
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.from_numpy(weight.copy()))
        self.bias = nn.Parameter(torch.from_numpy(bias.copy())) if bias is not None else None
        pads = list(attrs.get("pads", [0, 0, 0, 0]))
        if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            raise ValueError("Conv auto_pad is not supported")
        self.symmetric = pads[:2] == pads[2:]
        self.padding = (pads[0], pads[1]) if self.symmetric else (0, 0)
        # functional.pad wants (left, right, top, bottom); ONNX gives (top, left, bottom, right).
        self.explicit_pad = (pads[1], pads[3], pads[0], pads[2])
        self.stride = tuple(attrs.get("strides", [1, 1]))
        self.dilation = tuple(attrs.get("dilations", [1, 1]))
        self.groups = int(attrs.get("group", 1))

    def forward(self, x: Tensor) -> Tensor:
        if not self.symmetric:
            x = functional.pad(x, self.explicit_pad)
        return functional.conv2d(
            x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups
        )


class _PRelu(nn.Module):
    def __init__(self, slope: NDArray[np.float32]) -> None:
        super().__init__()
        self.slope = nn.Parameter(torch.from_numpy(slope.copy()))
        # functional.prelu (one slope per channel) exports as ONNX PRelu, which the service's CPU
        # rewrite recognises; the where/mul form exports as GreaterOrEqual/Where/Mul, 3x slower.
        self.per_channel = slope.ndim == 3 and slope.shape[1:] == (1, 1)

    def forward(self, x: Tensor) -> Tensor:
        if self.per_channel and x.dim() == 4:
            return functional.prelu(x, self.slope.reshape(-1))
        return torch.where(x >= 0, x, x * self.slope)


class _Gemm(nn.Module):
    """Y = alpha·A·B' + beta·C with B' = Bᵀ when transB (a Linear layer in the usual case)."""

    def __init__(
        self, weight: NDArray[np.float32], bias: NDArray[np.float32] | None, attrs: dict[str, Any]
    ) -> None:
        super().__init__()
        if attrs.get("transA", 0):
            raise ValueError("Gemm transA is not supported")
        matrix = weight if attrs.get("transB", 0) else weight.T
        self.weight = nn.Parameter(torch.from_numpy(np.ascontiguousarray(matrix * attrs.get("alpha", 1.0))))
        scaled = None if bias is None else bias * attrs.get("beta", 1.0)
        self.bias = (
            nn.Parameter(torch.from_numpy(np.ascontiguousarray(scaled))) if scaled is not None else None
        )

    def forward(self, x: Tensor) -> Tensor:
        return functional.linear(x, self.weight, self.bias)


class OnnxGraphModule(nn.Module):
    """Runs the ONNX graph node by node; weights are Parameters, BatchNorm statistics are buffers."""

    def __init__(self, model: onnx.ModelProto) -> None:
        super().__init__()
        graph = model.graph
        constants: dict[str, NDArray[Any]] = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
        self.input_name = next(i.name for i in graph.input if i.name not in constants)
        self.output_name = graph.output[0].name
        self.steps: list[tuple[str, str, list[str], str]] = []  # (op, module key, inputs, output)
        self.layers = nn.ModuleDict()
        self._buffer_keys: dict[str, str] = {}
        self._flatten_axes: dict[str, int] = {}
        weight_ops = {"Conv", "BatchNormalization", "PRelu", "Gemm"}
        for index, node in enumerate(graph.node):
            attrs = _attrs(node)
            if node.op_type == "Constant":
                constants[node.output[0]] = numpy_helper.to_array(attrs["value"])
                continue
            if node.op_type not in weight_ops and all(i in constants for i in node.input if i):
                constants[node.output[0]] = self._fold(node, constants)
                continue
            key = f"n{index}_{node.op_type}"
            inputs = list(node.input)
            if node.op_type == "Conv":
                self.layers[key] = _Conv(constants[inputs[1]], self._optional(constants, inputs, 2), attrs)
            elif node.op_type == "BatchNormalization":
                scale, bias, mean, var = (constants[name] for name in inputs[1:5])
                norm = _AnyRankBatchNorm(
                    scale.shape[0],
                    eps=float(attrs.get("epsilon", 1e-5)),
                    momentum=1.0 - float(attrs.get("momentum", 0.9)),
                )
                with torch.no_grad():
                    norm.weight.copy_(torch.from_numpy(scale))
                    norm.bias.copy_(torch.from_numpy(bias))
                    norm.running_mean.copy_(torch.from_numpy(mean))  # type: ignore[union-attr]
                    norm.running_var.copy_(torch.from_numpy(var))  # type: ignore[union-attr]
                self.layers[key] = norm
            elif node.op_type == "PRelu":
                self.layers[key] = _PRelu(constants[inputs[1]])
            elif node.op_type == "Gemm":
                self.layers[key] = _Gemm(constants[inputs[1]], self._optional(constants, inputs, 2), attrs)
            elif node.op_type in {"Add", "Sub", "Mul", "Reshape"}:
                for name in inputs:
                    if name in constants and name not in self._buffer_keys:
                        buffer_key = f"const{len(self._buffer_keys)}"
                        self.register_buffer(buffer_key, torch.from_numpy(np.array(constants[name])))
                        self._buffer_keys[name] = buffer_key
            elif node.op_type in {"Flatten", "Dropout", "Relu", "GlobalAveragePool", "Identity"}:
                pass
            else:
                raise ValueError(f"ONNX operator {node.op_type} ({node.name}) is not supported")
            self.steps.append((node.op_type, key, inputs, node.output[0]))
            if node.op_type == "Flatten":
                self._flatten_axes[key] = int(attrs.get("axis", 1))

    @staticmethod
    def _optional(constants: dict[str, NDArray[Any]], inputs: list[str], index: int) -> NDArray[Any] | None:
        return constants[inputs[index]] if len(inputs) > index and inputs[index] else None

    @staticmethod
    def _fold(node: onnx.NodeProto, constants: dict[str, NDArray[Any]]) -> NDArray[Any]:
        feeds = {name: constants[name] for name in node.input if name}
        graph = helper.make_graph(
            [node],
            "fold",
            [
                helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
                for n, v in feeds.items()
            ],
            [helper.make_tensor_value_info(node.output[0], onnx.TensorProto.UNDEFINED, None)],
        )
        outputs = ReferenceEvaluator(helper.make_model(graph)).run(None, feeds)
        result = outputs[node.output[0]] if isinstance(outputs, dict) else outputs[0]
        return np.asarray(result)

    def forward(self, x: Tensor) -> Tensor:
        values: dict[str, Tensor] = {self.input_name: x}

        def value(name: str) -> Tensor:
            if name in self._buffer_keys:
                buffer: Tensor = getattr(self, self._buffer_keys[name])
                return buffer
            return values[name]

        for op, key, inputs, output in self.steps:
            if op in {"Conv", "BatchNormalization", "PRelu", "Gemm"}:
                result = self.layers[key](value(inputs[0]))
            elif op == "Add":
                result = value(inputs[0]) + value(inputs[1])
            elif op == "Sub":
                result = value(inputs[0]) - value(inputs[1])
            elif op == "Mul":
                result = value(inputs[0]) * value(inputs[1])
            elif op == "Reshape":
                data = value(inputs[0])
                # ONNX Reshape: 0 copies the input's size on that axis.
                shape = [
                    data.shape[i] if int(v) == 0 else int(v) for i, v in enumerate(value(inputs[1]).tolist())
                ]
                result = data.reshape(shape)
            elif op == "Flatten":
                result = torch.flatten(value(inputs[0]), self._flatten_axes[key])
            elif op == "Relu":
                result = torch.relu(value(inputs[0]))
            elif op == "GlobalAveragePool":
                result = value(inputs[0]).mean(dim=(2, 3), keepdim=True)
            else:  # Dropout (inference semantics: fine-tuning keeps the pretrained head as it was), Identity
                result = value(inputs[0])
            values[output] = result
        return values[self.output_name]


def load_onnx_module(path: Path) -> OnnxGraphModule:
    return OnnxGraphModule(onnx.load(str(path)))
