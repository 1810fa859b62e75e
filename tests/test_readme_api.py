"""The README's API table against the app's routes, so that it cannot rot again.

The rule: **every operation of the OpenAPI document has a row** in the table under ``## API``,
whatever its prefix (``/v1/...``, ``/healthz``, or a route added later, such as a compatibility facade
at ``POST /``: whoever adds a route adds its row in the same change, or this test fails). A route that
is not part of the documented HTTP surface (``/docs``, the console's static files) is left out of
the OpenAPI document with ``include_in_schema=False``, and then needs no row. Conversely, every row
names routes the app really serves (the console page ``/ui`` is served but not in the OpenAPI
document), so a removed route cannot leave a stale row.

A row is ``| METHOD / METHOD | `path`, `path` | what |``: every method of the first cell with every
backticked path of the second; path parameters match whatever their name (``{c}`` is
``{collection}``). The table is the contiguous run of ``|`` lines after its header, so a paragraph
pasted inside it cuts the table short and the routes after it count as missing.
"""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import FastAPI
from starlette.routing import Match

from service.main import create_app
from tests.test_api import make_settings

README = Path(__file__).resolve().parents[1] / "README.md"
HEADER = "| method | path | what |"
METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE"}

Route = tuple[str, str]  # (method, path with every parameter written "{}")


def normalise(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path)


def split_row(line: str) -> list[str]:
    """The cells of a Markdown table row; ``\\|`` inside a cell is text, not a separator."""
    cells = re.split(r"(?<!\\)\|", line.strip())
    assert cells[0] == "", f"not a table row: {line!r}"
    assert cells[-1] == "", f"not a table row: {line!r}"
    return [cell.strip() for cell in cells[1:-1]]


def readme_api_rows(text: str) -> set[Route]:
    section = text.split("\n## API\n", 1)[1].split("\n## ", 1)[0]
    lines = section.splitlines()
    start = lines.index(HEADER)
    assert set(lines[start + 1].replace("|", "")) <= {"-", ":", " "}, "no |---| line under the header"
    routes: set[Route] = set()
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        method_cell, path_cell, what = split_row(line)
        methods = {m.strip() for m in method_cell.split("/")}
        assert methods <= METHODS, f"unknown method in {line!r}"
        paths = [p for p in re.findall(r"`([^`]+)`", path_cell) if p.startswith("/")]
        assert paths, f"row without a path: {line!r}"
        assert what, f"row without a description: {line!r}"
        routes |= {(m, normalise(p)) for m in methods for p in paths}
    return routes


def serves(app: FastAPI, method: str, path: str) -> bool:
    """Some route of ``app`` answers ``method path`` (every parameter filled with a plain value)."""
    scope = {"type": "http", "path": path.replace("{}", "x"), "root_path": "", "method": method}
    return any(route.matches(dict(scope))[0] == Match.FULL for route in app.router.routes)


def test_readme_api_table_lists_every_route(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path))  # the routes only: the app is not started
    documented: set[Route] = {
        (method.upper(), normalise(path))
        for path, operations in app.openapi()["paths"].items()
        for method in operations
        if method.upper() in METHODS
    }
    rows = readme_api_rows(README.read_text(encoding="utf-8"))
    missing = sorted(documented - rows)
    assert not missing, f"README API table has no row for {missing}"
    stale = sorted(route for route in rows - documented if not serves(app, *route))
    assert not stale, f"README API table lists routes the app does not serve: {stale}"
    assert not serves(app, "DELETE", "/v1/verify")  # (serves() can say no)


def test_the_table_parser_sees_what_breaks_a_table() -> None:
    """A paragraph inside the table ends it (the routes after it are missing); ``\\|`` is cell text."""
    table = (
        "intro\n\n## API\n\ntext\n\n" + HEADER + "\n|---|---|---|\n"
        "| POST / GET | `/v1/collections` | create / list |\n"
        "| POST | `/v1/x/{c}/faces` | files, `face_selection=strict\\|largest` |\n"
        "stray paragraph\n"
        "| GET | `/healthz`, `/readyz` | alive / ready |\n\n## Next\n"
    )
    assert readme_api_rows(table) == {
        ("POST", "/v1/collections"),
        ("GET", "/v1/collections"),
        ("POST", "/v1/x/{}/faces"),
    }
