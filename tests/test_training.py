"""Done-when test of the training pipeline on CPU (marked ``train``; about a minute on 2 idle cores).

A small CNN trains for a few dozen P×K steps on real LFW faces aligned by the service's own detector
and aligner, with every person of the evaluated folds kept out; it must visibly learn, export to an
ONNX file that onnxruntime runs like PyTorch, and evaluate end to end on the held-out folds.
"""

from __future__ import annotations

import csv
import json
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

pytest.importorskip("torch")

import torch

from models.lfw import fold_people, read_pairs
from models.train.augment import AugmentConfig, augment, crops_to_float, to_network_input
from models.train.backbones import build_model
from models.train.cli import main as cli_main
from models.train.config import ARTIFACTS, TrainConfig, parse_folds
from models.train.data import CropCache, PKBatchSampler, YuNetAligner
from models.train.evaluate import evaluate
from models.train.export import MAX_ABS_DIFF, export, export_onnx, load_checkpoint
from models.train.pack_for_device import write_parts
from models.train.trainer import train
from service.runtime.embedder import load_embedder
from service.runtime.model_card import ModelCard

pytestmark = pytest.mark.train

HOLDOUT = [1, 2]
STEPS = 60
WINDOW = 15  # steps averaged at each end of the run: single P×K batches are noisy


def small_config(lfw_root: Path, cache_dir: Path, out_dir: Path, **overrides: Any) -> TrainConfig:
    values: dict[str, Any] = {
        "data_root": lfw_root,
        "lfw_pairs": lfw_root / "pairs.txt",
        "holdout_folds": HOLDOUT,
        "cache_dir": cache_dir,
        "out_dir": out_dir,
        "backbone": "small_cnn",
        "min_images": 4,
        "max_identities": 24,
        "max_images_per_identity": 6,
        "identities_per_batch": 8,
        "images_per_identity": 4,
        "steps": STEPS,
        "lr": 3e-3,
        "warmup_steps": 0,
        "miner": "semihard",
        "margin": 0.2,
        "threads": 2,
        "progress": False,
        "checkpoint_every": 1000,
    }
    values.update(overrides)
    return TrainConfig.model_validate(values)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("train")


@pytest.fixture(scope="module")
def trained(lfw_root: Path, workdir: Path) -> TrainConfig:
    torch.set_num_threads(2)
    config = small_config(lfw_root, workdir / "cache", workdir / "run")
    train(config, "pytest tests/test_training.py")
    return config


def read_metrics(path: Path) -> list[dict[str, float]]:
    with path.open(newline="") as handle:
        return [{key: float(value) for key, value in row.items()} for row in csv.DictReader(handle)]


def window_mean(rows: list[dict[str, float]], key: str, first: bool) -> float:
    chosen = rows[:WINDOW] if first else rows[-WINDOW:]
    return float(np.mean([row[key] for row in chosen]))


def test_training_learns(trained: TrainConfig) -> None:
    rows = read_metrics(trained.out_dir / "metrics.csv")
    assert [int(row["step"]) for row in rows] == list(range(STEPS))
    assert all(np.isfinite(row["loss"]) for row in rows)
    d_ap_start, d_ap_end = window_mean(rows, "mean_d_ap", True), window_mean(rows, "mean_d_ap", False)
    active_start = window_mean(rows, "active_fraction", True)
    active_end = window_mean(rows, "active_fraction", False)
    d_an_end = window_mean(rows, "mean_d_an", False)
    # Same-person faces pull together and fewer triplets violate the margin, without collapsing
    # everyone together (different people stay far apart).
    assert d_ap_end < d_ap_start - 0.1, (d_ap_start, d_ap_end)
    assert active_end < active_start - 0.03, (active_start, active_end)
    assert d_an_end > d_ap_end + 0.4


def test_training_never_sees_held_out_people(trained: TrainConfig, lfw_root: Path) -> None:
    identities = set(json.loads((trained.out_dir / "identities.json").read_text()))
    people = fold_people(read_pairs(lfw_root / "pairs.txt", lfw_root / "images"))
    held_out = set().union(*(people[fold - 1] for fold in HOLDOUT))
    assert len(identities) >= 20
    assert not identities & held_out
    # The exclusion really bit: the first identities alphabetically include held-out people.
    first_names = sorted(p.name for p in (lfw_root / "images").iterdir())[:200]
    assert set(first_names) & held_out


def test_resume_continues_exactly(lfw_root: Path, workdir: Path, trained: TrainConfig) -> None:
    """Stopping at step 2 and resuming gives the same run as going straight to step 4."""
    straight = small_config(lfw_root, workdir / "cache", workdir / "straight", steps=4)
    resumed = small_config(lfw_root, workdir / "cache", workdir / "resumed", steps=4)
    train(straight, "straight")
    train(resumed, "first half", stop_at=2)
    assert [int(r["step"]) for r in read_metrics(resumed.out_dir / "metrics.csv")] == [0, 1]
    train(resumed.model_copy(update={"resume": True}), "second half")
    a, b = read_metrics(straight.out_dir / "metrics.csv"), read_metrics(resumed.out_dir / "metrics.csv")
    assert [int(r["step"]) for r in b] == [0, 1, 2, 3]
    for row_a, row_b in zip(a, b, strict=True):
        assert row_b["loss"] == pytest.approx(row_a["loss"], rel=1e-4, abs=1e-6)
        assert row_b["mean_d_ap"] == pytest.approx(row_a["mean_d_ap"], rel=1e-4)


def test_export_and_evaluate_end_to_end(
    trained: TrainConfig, lfw_root: Path, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = workdir / "export"
    result = export(trained.out_dir / "checkpoints" / "last.pt", out, "tiny_cnn", "pytest export")
    assert result.max_abs_diff < MAX_ABS_DIFF
    card = ModelCard.load(result.card_path)
    assert card.onnx_file == "tiny_cnn.onnx"
    assert card.embedding_dim == 128
    assert card.normalized
    assert card.provenance["training_command"] == "pytest tests/test_training.py"
    assert card.provenance["data"]["holdout_folds"] == HOLDOUT
    assert card.provenance["data"]["excluded_people"] > 0

    # The service's embedder, reading only the card, reproduces the PyTorch model (preprocessing included).
    embedder, _ = load_embedder(out, "tiny_cnn.json", "cpu", 2)
    crops = (
        CropCache(trained.cache_dir, YuNetAligner(trained.detector_model, threads=2))
        .load(sorted((lfw_root / "images" / "Aaron_Peirsol").iterdir()), progress=False)
        .crops
    )
    model, spec, _ = load_checkpoint(trained.out_dir / "checkpoints" / "last.pt")
    with torch.no_grad():
        expected = model(to_network_input(crops_to_float(torch.from_numpy(crops)), spec)).numpy()
    assert np.abs(embedder.embed(crops) - expected).max() < MAX_ABS_DIFF
    assert embedder.embed(crops[:1]).shape == (1, 128)

    cache = CropCache(trained.cache_dir, YuNetAligner(trained.detector_model, threads=2))
    report = evaluate(
        out,
        "tiny_cnn.json",
        lfw_root,
        HOLDOUT,
        cache,
        workdir / "eval",
        "pytest evaluate",
        pairs_per_fold=40,
        provider="cpu",
        threads=2,
        update_card=True,
        progress=False,
    )
    verification = report["verification"]
    assert verification["n_pairs"] == 80
    assert verification["n_same"] == 40
    assert 0.5 <= verification["accuracy_mean"] <= 1.0
    assert (
        verification["roc_auc"] > 0.55
    )  # a few dozen steps on 24 people: better than chance, far from SFace
    assert 0.0 <= verification["threshold_mean"] <= 4.0
    assert report["mean_d2_same"] < report["mean_d2_different"]
    identification = report["identification"]
    assert identification["probes"] > 50
    assert identification["gallery"] > 20
    assert 0.0 <= identification["rank1"] <= 1.0
    assert Path(report["plots"]["roc"]).stat().st_size > 1000
    assert Path(report["plots"]["histogram"]).stat().st_size > 1000
    updated = ModelCard.load(result.card_path)
    assert updated.threshold == pytest.approx(verification["threshold_mean"], abs=1e-6)
    assert updated.metrics["lfw_holdout"]["accuracy_mean"] == verification["accuracy_mean"]

    assert cli_main(["summarize", str(workdir / "eval" / "report.json")]) == 0
    table_row = capsys.readouterr().out.strip().splitlines()[-1]
    assert table_row.startswith("| tiny_cnn | 1,2 | 80 | ")


def test_sface_rebuilt_in_pytorch_matches_the_shipped_onnx(lfw_root: Path, workdir: Path) -> None:
    """The fine-tuning start point is the shipped model itself: same embeddings as the service computes."""
    if not (ARTIFACTS / "embedder.json").is_file():
        pytest.fail("models/artifacts/embedder.json is missing")
    config = TrainConfig(backbone="sface", cache_dir=workdir / "cache")
    model, spec = build_model(config)
    model.eval()
    paths = [lfw_root / "images" / "Abel_Pacheco" / f"Abel_Pacheco_000{n}.jpg" for n in (1, 2, 3)]
    crops = CropCache(config.cache_dir, YuNetAligner(config.detector_model, threads=2)).load(
        paths, progress=False
    )
    embedder, card = load_embedder(ARTIFACTS, "embedder.json", "cpu", 2)
    assert spec.channel_order == card.input.channel_order
    assert spec.mean == card.input.mean
    with torch.no_grad():
        ours = model(to_network_input(crops_to_float(torch.from_numpy(crops.crops)), spec)).numpy()
    assert np.abs(ours - embedder.embed(crops.crops)).max() < MAX_ABS_DIFF

    # Exported again, its activations stay ONNX PRelu: the op the service's CPU rewrite speeds up.
    export_onnx(model, spec, workdir / "sface_again.onnx")
    ops = {node.op_type for node in onnx.load(str(workdir / "sface_again.onnx")).graph.node}
    assert "PRelu" in ops
    assert "Where" not in ops


def test_pk_sampler_batches() -> None:
    labels = np.repeat(np.arange(10), [2, 3, 4, 5, 6, 2, 3, 4, 5, 6]).astype(np.int64)
    sampler = PKBatchSampler(labels, identities_per_batch=4, images_per_identity=3, seed=5)
    for step in range(12):
        batch = sampler.batch(step)
        assert batch.shape == (12,)
        per_identity = np.bincount(labels[batch], minlength=10)
        assert sorted(per_identity[per_identity > 0].tolist()) == [3, 3, 3, 3]
        for identity in np.unique(labels[batch]):  # no repeats unless the identity is too small
            rows = batch[labels[batch] == identity]
            assert len(set(rows.tolist())) == min(3, int((labels == identity).sum()))
        assert np.array_equal(batch, sampler.batch(step))  # a pure function of the step
    seen = np.unique(np.concatenate([labels[sampler.batch(s)] for s in range(sampler.batches_per_pass)]))
    assert len(seen) == 4 * sampler.batches_per_pass  # one pass visits distinct identities


def test_augmentation_keeps_range_and_flips() -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(6, 3, 32, 32) * 255
    out = augment(images, AugmentConfig(), generator)
    assert out.shape == images.shape
    assert float(out.min()) >= 0
    assert float(out.max()) <= 255
    assert not torch.allclose(out, images)
    mirror_only = AugmentConfig(flip=True, max_zoom=1.0, max_shift=0.0, color_jitter=0.0)
    flipped = augment(images, mirror_only, torch.Generator().manual_seed(1))
    for original, result in zip(images, flipped, strict=True):
        assert torch.allclose(result, original, atol=1e-3) or torch.allclose(
            result, original.flip(2), atol=1e-3
        )


def test_fold_parsing() -> None:
    assert parse_folds("1-3,7") == [1, 2, 3, 7]
    assert parse_folds("") == []
    assert TrainConfig(holdout_folds="6-10").holdout_folds == [6, 7, 8, 9, 10]
    with pytest.raises(ValueError, match="numbered from 1"):
        TrainConfig(holdout_folds="0-2")


def test_pack_for_device_splits_lfw_into_carryable_parts(tmp_path: Path) -> None:
    lfw = tmp_path / "lfw"
    rng = np.random.default_rng(0)
    for person, count in (("Ann_A", 3), ("Bob_B", 1), ("Cid_C", 2)):
        (lfw / "images" / person).mkdir(parents=True)
        for n in range(1, count + 1):
            (lfw / "images" / person / f"{person}_{n:04d}.jpg").write_bytes(rng.bytes(6000))
    (lfw / "pairs.txt").write_text("10\t300\n")
    out = tmp_path / "out"
    out.mkdir()

    parts = write_parts(lfw, out, part_bytes=30 * 1024)

    assert len(parts) > 1
    assert all(part.stat().st_size <= 30 * 1024 for part in parts)
    members: list[str] = []
    for part in parts:
        with tarfile.open(part) as archive:
            members += archive.getnames()
    assert members[0] == "pairs.txt"
    assert sorted(members[1:]) == sorted(
        [f"images/Ann_A/Ann_A_{n:04d}.jpg" for n in (1, 2, 3)]
        + [f"images/Cid_C/Cid_C_{n:04d}.jpg" for n in (1, 2)]
    )  # Bob_B has one image: in no pair, no triplet
