"""The ``faces`` command: ``faces serve`` runs the API, ``faces enroll`` batch-enrolls a folder tree."""

from __future__ import annotations

import argparse
import sys
from importlib import metadata

DISTRIBUTION = "faces-service"
COMMANDS = {"serve": "run the HTTP API", "enroll": "enroll a folder tree root/<subject>/<images>"}


def version() -> str:
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:  # run from a checkout that was never pip-installed
        return "unknown (not installed)"


def _settings_epilog() -> str:
    """Every FACES_* variable with its default, for ``faces serve --help``."""
    from service.settings import Settings

    lines = [
        "Configuration: every setting is read once at start-up from a FACES_* environment variable or",
        "from a .env file in the working directory (deploy/.env.example documents them all);",
        "--host/--port override FACES_HOST/FACES_PORT. Variables and their defaults:",
    ]
    for name, field in Settings.model_fields.items():
        default = field.default_factory() if field.default_factory is not None else field.default  # type: ignore[call-arg]
        shown = "(model card's)" if default is None else ("(empty)" if default in ([], "") else default)
        lines.append(f"  FACES_{name.upper()}={shown}")
    return "\n".join(lines)


def _serve(argv: list[str]) -> int:
    # Only the settings (pydantic) before the arguments are parsed: the app's imports (FastAPI,
    # onnxruntime, FAISS, OpenCV) take seconds and ``faces serve --help`` needs none of them.
    from pydantic import ValidationError

    from service.settings import Settings

    try:
        settings = Settings()
    except ValidationError as exc:  # say what is wrong, without echoing values (keys are secrets)
        print("faces serve: invalid configuration (FACES_* environment or .env):", file=sys.stderr)
        for error in exc.errors():
            print(f"  {'.'.join(map(str, error['loc']))}: {error['msg']}", file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(
        prog="faces serve",
        description="Run the face-recognition API.",
        epilog=_settings_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default=settings.host, help="address to bind (FACES_HOST; now %(default)s)")
    parser.add_argument(
        "--port", type=int, default=settings.port, help="port to listen on (FACES_PORT; now %(default)s)"
    )
    args = parser.parse_args(argv)
    settings = settings.model_copy(update={"host": args.host, "port": args.port})

    import uvicorn

    from service.main import create_app
    from service.observability import configure_logging

    configure_logging(settings.log_level)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        timeout_graceful_shutdown=10,
    )
    return 0


def _usage() -> str:
    lines = ["usage: faces {serve,enroll} ... | faces --version", ""]
    lines += [f"  {name:8s} {help_text}" for name, help_text in COMMANDS.items()]
    lines += ["", "'faces COMMAND --help' shows a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-V", "--version"):
        print(f"faces {version()}")
        return 0
    if args and args[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if not args or args[0] not in COMMANDS:
        if args:
            print(f"faces: unknown command {args[0]!r}\n", file=sys.stderr)
        print(_usage(), file=sys.stderr)
        return 2
    command, rest = args[0], args[1:]
    if command == "serve":
        return _serve(rest)
    from faces_client.enroll import main as enroll_main

    return enroll_main(rest)


if __name__ == "__main__":
    sys.exit(main())
