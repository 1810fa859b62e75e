"""Reader for dlib's serialisation of ``dlib_face_recognition_resnet_model_v1.dat`` (no dlib needed).

The byte format follows dlib's own ``serialize``/``deserialize`` functions (dlib/serialize.h,
dlib/dnn/core.h, layers.h, input.h, loss.h, cuda/tensor.h), read field by field:

- integers: one control byte (low nibble = byte count, 0x80 = negative) then little-endian bytes;
- floats/doubles: ``float_details`` = integer mantissa then integer exponent (value = m·2^e);
- bool: the character ``'0'`` or ``'1'``; string: integer length then the bytes;
- tensor: version 2, then num_samples, k, nr, nc, then raw little-endian float32 values;
- ``add_layer``: version, *the sub-network first* (recursively), then the layer's own details and a
  trailer (flags and the cached training tensors); tag and skip layers only wrap their sub-network.

So the details of the innermost layer (the first convolution) come first in the file. The network
is dlib's ``anet_type`` from ``tools/python/src/face_recognition.cpp``: a 29-convolution ResNet on a
150×150 RGB chip, ``(pixel - mean) / 256`` per channel, global average pooling and a 256→128 linear
layer without bias (``loss_metric``). :func:`read_dlib_resnet` checks every layer type and
hyper-parameter against that definition and that the file is consumed to its last byte.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float32]

# (channels, residual blocks, first block downsamples), input to output: dlib's alevel4 .. alevel0.
STAGES: tuple[tuple[int, int, bool], ...] = (
    (32, 3, False),
    (64, 4, True),
    (128, 3, True),
    (256, 3, True),
    (256, 1, True),
)
STEM_CHANNELS = 32
EMBEDDING_DIM = 128
CHIP_SIZE = 150
INPUT_SCALE = 256.0  # dlib's input_rgb_image: (pixel - avg) / 256


class DlibFormatError(ValueError):
    """The file is not the network this reader knows, byte for byte."""


class DlibStream:
    """Sequential reader of dlib's primitive encodings."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.pos = 0

    @property
    def remaining(self) -> int:
        return len(self._data) - self.pos

    def _take(self, n: int) -> bytes:
        if self.pos + n > len(self._data):
            raise DlibFormatError(f"unexpected end of file at byte {self.pos} (wanted {n} more)")
        chunk = self._data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def integer(self) -> int:
        control = self._take(1)[0]
        size = control & 0x0F
        if size == 0 or size > 8 or control & 0x70:
            raise DlibFormatError(f"bad integer control byte {control:#04x} at byte {self.pos - 1}")
        value = int.from_bytes(self._take(size), "little")
        return -value if control & 0x80 else value

    def real(self) -> float:
        """A float/double in dlib's binary ``float_details`` form (mantissa·2^exponent)."""
        if self._data[self.pos] & 0x70:
            raise DlibFormatError(f"old ASCII float encoding at byte {self.pos} is not supported")
        mantissa = self.integer()
        exponent = self.integer()
        if exponent >= 32000:  # is_inf / is_ninf / is_nan markers
            raise DlibFormatError(f"non-finite float at byte {self.pos}")
        return float(np.ldexp(float(mantissa), exponent))

    def boolean(self) -> bool:
        char = self._take(1)
        if char not in (b"0", b"1"):
            raise DlibFormatError(f"bad bool {char!r} at byte {self.pos - 1}")
        return char == b"1"

    def string(self) -> str:
        return self._take(self.integer()).decode("ascii")

    def expect_version(self, allowed: tuple[int, ...], what: str) -> int:
        version = self.integer()
        if version not in allowed:
            raise DlibFormatError(f"{what}: version {version}, expected one of {allowed}")
        return version

    def tensor(self) -> Array:
        self.expect_version((2,), "tensor")
        shape = tuple(self.integer() for _ in range(4))
        count = int(np.prod(shape))
        values = np.frombuffer(self._take(4 * count), dtype="<f4").astype(np.float32)
        return values.reshape(shape)

    def alias_shape(self) -> tuple[int, int, int, int]:
        self.expect_version((1,), "alias_tensor")
        n, k, nr, nc = (self.integer() for _ in range(4))
        return n, k, nr, nc


@dataclass(frozen=True)
class Conv:
    weight: Array  # (out, in, kh, kw), cross-correlation as in ONNX Conv
    bias: Array  # (out,)
    stride: int
    padding: int


@dataclass(frozen=True)
class Affine:
    """Per-channel ``gamma·x + beta`` (dlib's inference form of batch norm)."""

    gamma: Array
    beta: Array


@dataclass(frozen=True)
class Pool:
    kind: str  # "max" or "avg"
    size: int  # 0: the whole feature map
    stride: int
    padding: int


@dataclass(frozen=True)
class ResidualBlock:
    """relu(affine2(conv2(relu(affine1(conv1(x))))) + shortcut(x)); the shortcut of a downsampling
    block is a 2×2/2 average pool, and dlib's add zero-pads the smaller operand (channels, rows,
    columns at the end) to the larger shape."""

    conv1: Conv
    affine1: Affine
    conv2: Conv
    affine2: Affine
    downsample: bool


@dataclass(frozen=True)
class DlibResNet:
    input_mean: tuple[float, float, float]  # RGB, subtracted before dividing by INPUT_SCALE
    stem_conv: Conv
    stem_affine: Affine
    stem_pool: Pool
    blocks: list[ResidualBlock]
    fc_weight: Array  # (256, 128): embedding = pooled @ fc_weight
    loss: dict[str, float] = field(default_factory=dict)

    def tensors(self) -> dict[str, Array]:
        """Every weight under a stable name (the ONNX initializer names)."""
        named: dict[str, Array] = {
            "stem.conv.weight": self.stem_conv.weight,
            "stem.conv.bias": self.stem_conv.bias,
            "stem.affine.gamma": self.stem_affine.gamma,
            "stem.affine.beta": self.stem_affine.beta,
            "fc.weight": self.fc_weight,
        }
        for i, block in enumerate(self.blocks):
            for part, conv, affine in (
                ("1", block.conv1, block.affine1),
                ("2", block.conv2, block.affine2),
            ):
                named[f"block{i}.conv{part}.weight"] = conv.weight
                named[f"block{i}.conv{part}.bias"] = conv.bias
                named[f"block{i}.affine{part}.gamma"] = affine.gamma
                named[f"block{i}.affine{part}.beta"] = affine.beta
        return named


def block_plan() -> list[tuple[int, bool]]:
    """(channels, downsample) of every residual block, input to output."""
    return [(channels, downsample and i == 0) for channels, count, downsample in STAGES for i in range(count)]


def layer_kinds() -> list[str]:
    """dlib's anet_type as the chain of wrappers from the loss inwards (outermost first)."""

    def block(stride: int) -> list[str]:
        return ["affine", "con3x3s1", "relu", "affine", f"con3x3s{stride}"]

    kinds = ["fc", "avg_pool_everything"]
    for _channels, downsample in reversed(block_plan()):
        if downsample:
            kinds += ["relu", "add_prev", "avg_pool2", "skip", "tag", *block(2), "tag"]
        else:
            kinds += ["relu", "add_prev", *block(1), "tag"]
    return [*kinds, "max_pool", "relu", "affine", "con7x7s2"]


@dataclass
class _Record:
    kind: str
    value: Conv | Affine | Pool | Array | None


class _Reader:
    def __init__(self, stream: DlibStream) -> None:
        self.s = stream
        self.kinds = layer_kinds()
        self.records: list[_Record] = []  # input to output
        self.input_mean: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def layer(self, index: int) -> None:
        kind = self.kinds[index]
        if kind in ("tag", "skip"):
            self.s.expect_version((1,), kind)
            self.layer(index + 1)
            return
        innermost = index == len(self.kinds) - 1
        version = self.s.expect_version((2, 3) if innermost else (1, 2), f"add_layer {kind}")
        if innermost:
            self.input_layer()
        else:
            self.layer(index + 1)
        self.records.append(_Record(kind, self.details(kind)))
        for _ in range(3):  # this_layer_setup_called, gradient_input_is_stale, output/gradient disabled
            self.s.boolean()
        self.s.tensor()  # x_grad
        self.s.tensor()  # cached_output
        if innermost:
            self.s.tensor()  # grad_final
            if version == 3:
                self.s.integer()  # _sample_expansion_factor
        elif version == 2:
            self.s.tensor()  # params_grad

    def input_layer(self) -> None:
        name = self.s.string()
        if name != "input_rgb_image_sized":
            raise DlibFormatError(f"input layer {name!r}, expected input_rgb_image_sized")
        mean = (self.s.real(), self.s.real(), self.s.real())
        rows, cols = self.s.integer(), self.s.integer()
        if (rows, cols) != (CHIP_SIZE, CHIP_SIZE):
            raise DlibFormatError(f"input size {rows}x{cols}, expected {CHIP_SIZE}")
        self.input_mean = mean

    def details(self, kind: str) -> Conv | Affine | Pool | Array | None:
        if kind.startswith("con"):
            return self.conv(kind)
        if kind == "affine":
            return self.affine()
        if kind == "relu":
            name = self.s.string()
            if name == "relu_2":
                if self.s.boolean():
                    raise DlibFormatError("disabled relu layer")
            elif name != "relu_":
                raise DlibFormatError(f"expected relu_, found {name!r}")
            return None
        if kind == "add_prev":
            name = self.s.string()
            if name != "add_prev_":
                raise DlibFormatError(f"expected add_prev_, found {name!r}")
            return None
        if kind in ("max_pool", "avg_pool2", "avg_pool_everything"):
            return self.pool(kind)
        if kind == "fc":
            return self.fc()
        raise AssertionError(kind)

    def conv(self, kind: str) -> Conv:
        name = self.s.string()
        if name not in ("con_4", "con_5", "con_6"):
            raise DlibFormatError(f"expected con_4..6, found {name!r}")
        params = self.s.tensor().ravel()
        filters = self.s.integer()
        rows, cols = self.s.integer(), self.s.integer()
        stride_y, stride_x = self.s.integer(), self.s.integer()
        pad_y, pad_x = self.s.integer(), self.s.integer()
        weight_shape = self.s.alias_shape()
        bias_shape = self.s.alias_shape()
        for _ in range(4):  # learning-rate and weight-decay multipliers
            self.s.real()
        use_bias = self.s.boolean() if name in ("con_5", "con_6") else True
        if name == "con_6" and self.s.boolean():
            raise DlibFormatError("fused relu in a convolution is not expected here")
        size, stride = (7, 2) if kind == "con7x7s2" else (3, int(kind[-1]))
        # dlib's default padding: nr/2 for stride 1, none for larger strides.
        padding = size // 2 if stride == 1 else 0
        if (rows, cols, stride_y, stride_x, pad_y, pad_x) != (size, size, stride, stride, padding, padding):
            raise DlibFormatError(
                f"{kind}: got {rows}x{cols} stride {stride_y},{stride_x} padding {pad_y},{pad_x}"
            )
        if weight_shape[0] != filters or weight_shape[2:] != (size, size):
            raise DlibFormatError(f"{kind}: filter shape {weight_shape} for {filters} filters")
        n_weight = int(np.prod(weight_shape))
        weight = params[:n_weight].reshape(weight_shape)
        if use_bias:
            n_bias = int(np.prod(bias_shape))
            if n_bias != filters or params.size != n_weight + n_bias:
                raise DlibFormatError(
                    f"{kind}: {params.size} parameters for shape {weight_shape}+{bias_shape}"
                )
            bias = params[n_weight:]
        else:
            bias = np.zeros(filters, dtype=np.float32)
        return Conv(np.ascontiguousarray(weight), np.ascontiguousarray(bias), stride, padding)

    def affine(self) -> Affine:
        name = self.s.string()
        if name == "bn_con2":  # dlib converts a serialised batch norm to its inference affine form
            params = self.s.tensor().ravel()
            gamma_shape, beta_shape = self.s.alias_shape(), self.s.alias_shape()
            for _ in range(2):  # batch means / invstds
                self.s.tensor()
            running_mean = self.s.tensor().ravel()
            running_var = self.s.tensor().ravel()
            self.s.integer()  # num_updates
            self.s.integer()  # running_stats_window_size
            for _ in range(4):
                self.s.real()
            eps = self.s.real()
            k = gamma_shape[1]
            scale = params[:k] / np.sqrt(running_var.astype(np.float64) + eps)
            shift = params[k : 2 * k] - scale * running_mean
            del beta_shape
            return Affine(scale.astype(np.float32), shift.astype(np.float32))
        if name not in ("affine_", "affine_2"):
            raise DlibFormatError(f"expected affine_, found {name!r}")
        params = self.s.tensor().ravel()
        gamma_shape, beta_shape = self.s.alias_shape(), self.s.alias_shape()
        mode = self.s.integer()
        if name == "affine_2" and self.s.boolean():
            raise DlibFormatError("disabled affine layer")
        k = gamma_shape[1]
        if mode != 0 or gamma_shape != (1, k, 1, 1) or beta_shape != gamma_shape or params.size != 2 * k:
            raise DlibFormatError(
                f"affine: mode {mode}, shapes {gamma_shape} {beta_shape}, {params.size} params"
            )
        return Affine(np.ascontiguousarray(params[:k]), np.ascontiguousarray(params[k:]))

    def pool(self, kind: str) -> Pool:
        name = self.s.string()
        expected = "max_pool_2" if kind == "max_pool" else "avg_pool_2"
        if name != expected:
            raise DlibFormatError(f"expected {expected}, found {name!r}")
        rows, cols, stride_y, stride_x, pad_y, pad_x = (self.s.integer() for _ in range(6))
        want = {"max_pool": (3, 3, 2, 2, 0, 0), "avg_pool2": (2, 2, 2, 2, 0, 0)}.get(kind, (0, 0, 1, 1, 0, 0))
        if (rows, cols, stride_y, stride_x, pad_y, pad_x) != want:
            raise DlibFormatError(f"{kind}: got {(rows, cols, stride_y, stride_x, pad_y, pad_x)}")
        return Pool("max" if kind == "max_pool" else "avg", rows, stride_y, pad_y)

    def fc(self) -> Array:
        name = self.s.string()
        if name not in ("fc_2", "fc_3"):
            raise DlibFormatError(f"expected fc_2/fc_3, found {name!r}")
        outputs, inputs = self.s.integer(), self.s.integer()
        params = self.s.tensor().ravel()
        weight_shape = self.s.alias_shape()
        self.s.alias_shape()  # biases (unused: FC_NO_BIAS)
        bias_mode = self.s.integer()
        for _ in range(4):
            self.s.real()
        if name == "fc_3":
            self.s.boolean()
        if (outputs, inputs, bias_mode) != (EMBEDDING_DIM, 256, 1) or weight_shape != (inputs, outputs, 1, 1):
            raise DlibFormatError(f"fc: {inputs}->{outputs}, bias mode {bias_mode}, shape {weight_shape}")
        return np.ascontiguousarray(params[: inputs * outputs].reshape(inputs, outputs))

    def loss(self) -> dict[str, float]:
        self.s.expect_version((1,), "add_loss_layer")
        name = self.s.string()
        if name == "loss_metric_":
            return {"margin": 0.1, "dist_thresh": 0.75}
        if name != "loss_metric_2":
            raise DlibFormatError(f"expected loss_metric_, found {name!r}")
        return {"margin": self.s.real(), "dist_thresh": self.s.real()}


def read_dlib_resnet(data: bytes) -> DlibResNet:
    """Parse the .dat bytes into weights, checking the architecture and that every byte is read."""
    reader = _Reader(DlibStream(data))
    loss = reader.loss()
    reader.layer(0)
    if reader.s.remaining:
        raise DlibFormatError(f"{reader.s.remaining} bytes left after the network")
    records = iter(reader.records)

    def take(kind_prefix: str) -> Conv | Affine | Pool | Array | None:
        record = next(records)
        if not record.kind.startswith(kind_prefix):
            raise DlibFormatError(f"expected {kind_prefix}, found {record.kind}")
        return record.value

    def conv(prefix: str) -> Conv:
        value = take(prefix)
        assert isinstance(value, Conv)
        return value

    def affine() -> Affine:
        value = take("affine")
        assert isinstance(value, Affine)
        return value

    def pool(prefix: str) -> Pool:
        value = take(prefix)
        assert isinstance(value, Pool)
        return value

    stem_conv, stem_affine = conv("con7x7s2"), affine()
    take("relu")
    stem_pool = pool("max_pool")
    blocks: list[ResidualBlock] = []
    in_channels = STEM_CHANNELS
    for channels, downsample in block_plan():
        conv1, affine1 = conv("con3x3s2" if downsample else "con3x3s1"), affine()
        take("relu")
        conv2, affine2 = conv("con3x3s1"), affine()
        if downsample:
            pool("avg_pool2")
        take("add_prev")
        take("relu")
        if conv1.weight.shape[:2] != (channels, in_channels) or conv2.weight.shape[:2] != (
            channels,
            channels,
        ):
            raise DlibFormatError(f"block {len(blocks)}: shapes {conv1.weight.shape} {conv2.weight.shape}")
        blocks.append(ResidualBlock(conv1, affine1, conv2, affine2, downsample))
        in_channels = channels
    pool("avg_pool_everything")
    fc = take("fc")
    assert isinstance(fc, np.ndarray)
    if next(records, None) is not None:
        raise DlibFormatError("layers left over")
    return DlibResNet(
        input_mean=reader.input_mean,
        stem_conv=stem_conv,
        stem_affine=stem_affine,
        stem_pool=stem_pool,
        blocks=blocks,
        fc_weight=fc,
        loss=loss,
    )
