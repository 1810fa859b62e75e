"""Exact graph rewrites that make onnxruntime's CPU provider run our models faster.

Profiled on SFace (bench/results/README_performance.md): ONNX Runtime's CPU ``PRelu`` is a generic
broadcasting kernel that MLAS cannot fuse, so each of its 27 PReLUs also forces the blocked (NCHWc)
layout of the surrounding convolutions back to NCHW and again to NCHWc. PReLU, reorders and all took
~58% of the run time. ``PRelu(x, s) = s·x + (1 − s)·Relu(x)`` holds for every x and slope; written
that way, every op lands on kernels the NCHWc transformer keeps in the blocked layout, and SFace runs
about 1.7× faster at the same outputs (float rounding only, ~1e-6).

Only used for CPU sessions: CUDA runs PRelu as one fused kernel and gains nothing from more ops.
"""

from __future__ import annotations

import onnx
from onnx import helper, numpy_helper


def _fresh(base: str, taken: set[str]) -> str:
    name = base
    suffix = 0
    while name in taken:
        suffix += 1
        name = f"{base}_{suffix}"
    taken.add(name)
    return name


def rewrite_prelu(model: onnx.ModelProto) -> int:
    """Replace, in place, each PRelu whose slope is an initializer by Relu, two Muls and an Add.

    Returns how many were rewritten. PRelus whose slope is computed or overridable (a graph input),
    and those inside subgraphs, are left alone.
    """
    graph = model.graph
    # An initializer that is also a graph input can be overridden at run time: not a constant.
    overridable = {value.name for value in graph.input}
    initializers = {tensor.name: tensor for tensor in graph.initializer if tensor.name not in overridable}
    taken = (
        {name for node in graph.node for name in (*node.input, *node.output, node.name)}
        | set(initializers)
        | {value.name for value in (*graph.input, *graph.output)}
    )
    nodes: list[onnx.NodeProto] = []
    rewritten = 0
    for node in graph.node:
        if node.op_type != "PRelu" or node.domain not in ("", "ai.onnx") or node.input[1] not in initializers:
            nodes.append(node)
            continue
        x, slope_name = node.input
        (y,) = node.output
        slope = numpy_helper.to_array(initializers[slope_name])
        if slope.dtype.kind != "f":
            nodes.append(node)
            continue
        prefix = node.name or y
        slope_init = _fresh(f"{prefix}/slope", taken)
        keep_init = _fresh(f"{prefix}/one_minus_slope", taken)
        graph.initializer.append(numpy_helper.from_array(slope.copy(), slope_init))
        graph.initializer.append(numpy_helper.from_array((1 - slope).astype(slope.dtype), keep_init))
        relu, kept, leaked = (_fresh(f"{prefix}/{part}", taken) for part in ("relu", "kept", "leaked"))
        nodes += [
            helper.make_node("Relu", [x], [relu], name=_fresh(f"{prefix}/Relu", taken)),
            helper.make_node("Mul", [relu, keep_init], [kept], name=_fresh(f"{prefix}/MulKept", taken)),
            helper.make_node("Mul", [x, slope_init], [leaked], name=_fresh(f"{prefix}/MulSlope", taken)),
            helper.make_node("Add", [kept, leaked], [y], name=_fresh(f"{prefix}/Add", taken)),
        ]
        rewritten += 1
    if rewritten:
        del graph.node[:]
        graph.node.extend(nodes)
        used = {name for node in graph.node for name in node.input}
        for tensor in [t for t in graph.initializer if t.name in initializers and t.name not in used]:
            graph.initializer.remove(tensor)
    return rewritten
