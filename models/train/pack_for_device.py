"""Pack what the lent GPU machine lacks for ``finetune_gpu.sh`` into ``.device/`` (git-ignored).

That machine has Python 3.12 with CUDA PyTorch, onnx, onnxruntime, OpenCV, Pillow, tqdm, matplotlib
and scikit-learn, but nothing can be downloaded there and each call carries at most 64 MiB beside the
repository (~38 MiB itself). So this writes, here:

* ``.device/lfw-NN.tar``: the LFW images of people with 2+ images (the only ones training and the
  pairs use) plus the protocol files, in parts small enough to carry one per call (``.device/`` is
  git-ignored, so it travels only when named in ``carry``);
* ``.device/wheels/``: cp312 wheels of the pure-Python packages the image lacks (pydantic & co.).

    python -m models.train.pack_for_device                # then follow models/README.md
    python -m models.train.pack_for_device --part-mib 20  # smaller parts
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tarfile
from pathlib import Path

from models.train.config import DEFAULT_LFW, REPO_ROOT

# The versions this repository is tested with; pydantic pins its pydantic-core exactly.
WHEELS = ["pydantic==2.14.3", "pydantic-core==2.50.4", "annotated-types==0.8.0", "typing-inspection==0.4.5"]
PLATFORMS = ["manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_28_x86_64"]
PROTOCOL_FILES = ["pairs.txt", "pairsDevTrain.txt", "pairsDevTest.txt"]


def images_to_pack(lfw: Path) -> list[Path]:
    """Every image of every person with at least two (single-image people are in no pair and
    cannot form a triplet), sorted so the parts are reproducible."""
    files: list[Path] = []
    for person in sorted(p for p in (lfw / "images").iterdir() if p.is_dir()):
        images = sorted(person.glob("*.jpg"))
        if len(images) >= 2:
            files.extend(images)
    return files


def _tar_bytes(length: int) -> int:
    """What one regular file takes in a tar: a 512-byte header plus its data in 512-byte blocks."""
    return 512 + -(-length // 512) * 512


def write_parts(lfw: Path, out: Path, part_bytes: int) -> list[Path]:
    files = [lfw / name for name in PROTOCOL_FILES if (lfw / name).is_file()] + images_to_pack(lfw)
    # A tar ends with two zero blocks and is padded to whole 10240-byte records.
    limit = (part_bytes // tarfile.RECORDSIZE) * tarfile.RECORDSIZE - 2 * 512
    groups: list[list[Path]] = [[]]
    size = 0
    for path in files:
        length = _tar_bytes(path.stat().st_size)
        if groups[-1] and size + length > limit:
            groups.append([])
            size = 0
        groups[-1].append(path)
        size += length
    parts = []
    for number, group in enumerate(groups, start=1):
        part = out / f"lfw-{number:02d}.tar"
        with tarfile.open(part, "w", format=tarfile.USTAR_FORMAT) as archive:
            for path in group:
                archive.add(path, arcname=str(path.relative_to(lfw)))
        parts.append(part)
    return parts


def download_wheels(out: Path) -> None:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    command += ["--python-version", "3.12", "--implementation", "cp", "-d", str(out)]
    for platform in PLATFORMS:
        command += ["--platform", platform]
    subprocess.run([*command, *WHEELS], check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lfw-dir", type=Path, default=DEFAULT_LFW)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / ".device")
    parser.add_argument("--part-mib", type=int, default=24, help="size of each LFW part")
    parser.add_argument("--no-wheels", action="store_true")
    args = parser.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    for stale in args.out.glob("lfw-*.tar"):
        stale.unlink()
    parts = write_parts(args.lfw_dir, args.out, args.part_mib * 2**20)
    if not args.no_wheels:
        download_wheels(args.out / "wheels")
    for part in parts:
        print(
            f"{part.relative_to(REPO_ROOT) if part.is_relative_to(REPO_ROOT) else part}  "
            f"{part.stat().st_size / 2**20:.1f} MiB"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
