"""The ``faces`` command: ``faces serve`` runs the API, ``faces enroll`` batch-enrolls a folder tree."""

from __future__ import annotations

import argparse
import sys


def _serve(argv: list[str]) -> int:
    import uvicorn
    from pydantic import ValidationError

    from service.main import create_app
    from service.observability import configure_logging
    from service.settings import Settings

    try:
        settings = Settings()
    except ValidationError as exc:  # say what is wrong, without echoing values (keys are secrets)
        print("faces serve: invalid configuration (FACES_* environment or .env):", file=sys.stderr)
        for error in exc.errors():
            print(f"  {'.'.join(map(str, error['loc']))}: {error['msg']}", file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(prog="faces serve", description="Run the face-recognition API.")
    parser.add_argument("--host", default=settings.host)
    parser.add_argument("--port", type=int, default=settings.port)
    args = parser.parse_args(argv)
    settings = settings.model_copy(update={"host": args.host, "port": args.port})
    configure_logging(settings.log_level)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        timeout_graceful_shutdown=10,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    commands = {"serve": "run the HTTP API", "enroll": "enroll a folder tree root/<subject>/<images>"}
    if not args or args[0] in ("-h", "--help") or args[0] not in commands:
        print("usage: faces {serve,enroll} ...\n")
        for name, help_text in commands.items():
            print(f"  {name:8s} {help_text}")
        return 0 if args and args[0] in ("-h", "--help") else 2
    command, rest = args[0], args[1:]
    if command == "serve":
        return _serve(rest)
    from service.enroll_client import main as enroll_main

    return enroll_main(rest)


if __name__ == "__main__":
    sys.exit(main())
