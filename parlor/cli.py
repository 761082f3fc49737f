"""`parlor`: the project's command line (`uv run parlor <command>`).

    parlor up         run the whole chat on this machine, without Docker
    parlor download   fetch the default model (lm_api.download)
    parlor synth      write a synthetic GGUF model (parlor.synth)
    parlor migrate    bring a database's schema to the newest revision (db_api.migrate)

The service packages are imported only by the command that needs them, so `parlor up
--help` answers at once and a missing optional part fails only its own command.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="parlor", description="Parlor, a private LLM chat.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = commands.add_parser(
        "up",
        help="run db_api, lm_api, chat_ui (and nginx when installed) on this machine",
        description="Run the whole chat on loopback, with SQLite under the data directory. "
        "A part that dies is restarted; Ctrl-C stops them all.",
    )
    up.add_argument("--port", type=int, default=8080, help="port of the chat (default 8080)")
    model = up.add_mutually_exclusive_group()
    model.add_argument("--model", type=Path, metavar="PATH", help="a GGUF model file to serve")
    model.add_argument(
        "--demo",
        action="store_true",
        help="serve a small synthetic model (random weights, written on first use): "
        "no download, nonsense answers",
    )
    up.add_argument(
        "--data-dir",
        type=Path,
        default=Path("data"),
        help="where the database, secret key and demo model live (default ./data)",
    )
    up.add_argument(
        "--no-nginx", action="store_true", help="serve chat_ui directly, even if nginx is installed"
    )
    up.add_argument(
        "--reload",
        action="store_true",
        help="restart a service when a file of its package (or db_contract) changes "
        "(for working on Parlor)",
    )
    up.add_argument(
        "--no-download",
        action="store_true",
        help="without --model/--demo and no downloaded model, stop instead of fetching "
        "the default model ($PARLOR_MODEL_URL, else Qwen2.5-0.5B-Instruct Q4_K_M)",
    )

    # Listed for --help only: main() hands their arguments to the tools unparsed.
    commands.add_parser("download", help="download the default model (see its --help)")
    commands.add_parser("synth", help="write a synthetic GGUF model (see its --help)")
    commands.add_parser("migrate", help="apply the database migrations (see its --help)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["download"]:
        from lm_api.download import main as download

        return download(argv[1:])
    if argv[:1] == ["synth"]:
        from parlor.synth import main as synth

        return synth(argv[1:])
    if argv[:1] == ["migrate"]:
        from db_api.migrate import main as migrate

        return migrate(argv[1:], prog="parlor migrate")
    args = _parser().parse_args(argv)
    from parlor.up import UpOptions, run

    return run(
        UpOptions(
            port=args.port,
            model=args.model,
            demo=args.demo,
            data_dir=args.data_dir,
            nginx=not args.no_nginx,
            download=not args.no_download,
            reload=args.reload,
        )
    )


if __name__ == "__main__":
    sys.exit(main())
