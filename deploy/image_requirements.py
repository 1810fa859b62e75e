"""Print the pip requirements of a container image variant, read from pyproject.toml.

``cpu``: the base dependencies (CPU wheels: onnxruntime, faiss-cpu) plus the ``postgres`` and
``milvus`` extras.
``gpu``: the same with the CPU wheels swapped for the ``gpu`` extra (onnxruntime-gpu, faiss-gpu-cu12).
The two wheels of each pair install the same Python package, so they must never both be installed;
resolving the list up front avoids uninstalling one over the other. Run by deploy/Dockerfile with
the build stage's python (stdlib only).
"""

from __future__ import annotations

import argparse
import re
import tomllib
from pathlib import Path

CPU_ONLY = frozenset({"onnxruntime", "faiss-cpu"})
# Every image can run either vector engine (FACES_VECTOR_BACKEND): the milvus extra is in both.
EXTRAS = {"cpu": ("postgres", "milvus"), "gpu": ("gpu", "postgres", "milvus")}
# The GPU image is CUDA 12 (CUDA_BASE_IMAGE, and faiss-gpu-cu12 is built for it); onnxruntime-gpu
# wheels from 1.27 on are built for CUDA 13 and fall back to the CPU there. pip merges this with the
# extra's own specifier; drop it once pyproject.toml's `gpu` extra carries the bound.
IMAGE_CONSTRAINTS = {"cpu": (), "gpu": ("onnxruntime-gpu<1.27",)}


def requirement_name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if match is None:
        raise ValueError(f"unparsable requirement {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def image_requirements(pyproject: Path, variant: str) -> list[str]:
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    requirements: list[str] = list(project["dependencies"])
    if variant == "gpu":
        requirements = [r for r in requirements if requirement_name(r) not in CPU_ONLY]
    for extra in EXTRAS[variant]:
        requirements.extend(project["optional-dependencies"][extra])
    requirements.extend(IMAGE_CONSTRAINTS[variant])
    return requirements


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("variant", choices=sorted(EXTRAS))
    parser.add_argument("--pyproject", type=Path, default=Path("pyproject.toml"))
    args = parser.parse_args()
    print("\n".join(image_requirements(args.pyproject, args.variant)))


if __name__ == "__main__":
    main()
