"""The README's performance table is written from the saved benchmark JSON, between its markers only."""

from __future__ import annotations

from pathlib import Path

from bench.common import RESULTS_DIR, fmt
from bench.readme_table import END, START, headline_rows, update_readme
from bench.run_all import load_reports

REPO = Path(__file__).resolve().parents[2]


def test_readme_table_is_rewritten_between_the_markers_only(tmp_path: Path) -> None:
    reports = load_reports(RESULTS_DIR)
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nbefore\n\n{START}\n| stale | table |\n{END}\n\nafter\n", encoding="utf-8")

    assert update_readme(readme, reports)
    text = readme.read_text(encoding="utf-8")
    assert text.startswith("# Title\n\nbefore\n\n")
    assert text.endswith("\n\nafter\n")
    assert "stale" not in text
    embed = next(r for r in reports if r.name == "bench_embed")
    ours = next(
        r for r in embed.raw["results"] if r["pipeline"] == "ours" and r["stage"] == "detect+align+embed"
    )
    assert f"**{fmt(ours['images_per_s'])}**" in text  # the number comes from the JSON
    assert update_readme(readme, reports)
    assert readme.read_text(encoding="utf-8") == text

    plain = tmp_path / "plain.md"
    plain.write_text("no markers\n", encoding="utf-8")
    assert not update_readme(plain, reports)
    assert plain.read_text(encoding="utf-8") == "no markers\n"


def test_committed_readme_table_matches_the_committed_json() -> None:
    reports = load_reports(RESULTS_DIR)
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for what, result, _ in headline_rows(reports):
        assert f"| {what} | {result} |" in readme, f"stale README row {what!r}: python -m bench --report-only"
