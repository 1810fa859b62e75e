"""The ``faces`` command line: version, unknown commands, and a serve --help that documents configuration."""

from __future__ import annotations

import subprocess
import sys

import pytest

from service.cli import main, version


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    out = capsys.readouterr().out
    assert out.strip() == f"faces {version()}"
    assert version()[0].isdigit()


def test_unknown_command_says_so_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["srve"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'srve'" in err
    assert "serve" in err
    assert "enroll" in err


def test_no_command_prints_usage_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: faces" in capsys.readouterr().err


def test_serve_help_shows_defaults_and_the_environment(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert ".env" in out
    assert "FACES_PORT" in out
    assert "8000" in out
    # Every setting is listed with its default, including the limits users hit.
    for line in (
        "FACES_MAX_IMAGES_PER_REQUEST=16",
        "FACES_DEFAULT_MAX_FACES=10",
        "FACES_MAX_REQUEST_PIXELS=",
    ):
        assert line in out


def test_serve_help_parses_arguments_before_the_heavy_imports() -> None:
    """``faces serve --help`` answers without loading the app (FastAPI, onnxruntime, FAISS, OpenCV,
    numpy, SQLAlchemy): those take seconds and are imported only once the arguments are parsed."""
    heavy = ("fastapi", "starlette", "uvicorn", "onnxruntime", "faiss", "cv2", "numpy", "sqlalchemy", "PIL")
    probe = (
        "import sys\n"
        "from service.cli import main\n"
        "try:\n"
        "    main(['serve', '--help'])\n"
        "except SystemExit as exit_:\n"
        "    assert exit_.code == 0, exit_.code\n"
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    assert "FACES_PORT" in done.stdout  # it did print the help
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout.splitlines()[-1]
