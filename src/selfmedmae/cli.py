"""The ``selfmedmae`` command: ``selfmedmae COMMAND CONFIG [key=value ...]``.

Each command is a thin wrapper; the work lives in the stage modules, imported lazily so that
``selfmedmae --help`` stays fast. Bad input (a :class:`~selfmedmae.errors.UserError`) is printed as one
line naming the file or key, with exit code 2 and no traceback.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from selfmedmae.errors import UserError

CONVERT_SOURCES = ("official-mae3d", "official-unetr3d", "mae2d", "vit2d")


def _config_cmd(module: str, func: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from importlib import import_module

        from selfmedmae.config import load_config

        cfg = load_config(args.config, args.overrides)
        return int(getattr(import_module(module), func)(cfg) or 0)

    return run


def _convert(args: argparse.Namespace) -> int:
    from selfmedmae.models.convert import convert_file

    out = convert_file(args.src, args.dst, args.source_format, args.overrides)
    print(f"wrote {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="selfmedmae",
        description="Self pre-training with masked autoencoders for medical images (2D and 3D).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def config_command(name: str, help_: str, handler: Callable[[argparse.Namespace], int]) -> None:
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument("config", metavar="CONFIG", help="YAML config file (see configs/)")
        p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.epochs=10")
        p.set_defaults(handler=handler)

    config_command("pretrain", "MAE self pre-training", _config_cmd("selfmedmae.train.pretrain", "run"))
    config_command("finetune", "fine-tune a classifier or UNETR", _config_cmd("selfmedmae.train.finetune", "run"))
    config_command("check-data", "check a dataset before a long run", _config_cmd("selfmedmae.data.validate", "run"))

    p = sub.add_parser("convert", help="import a checkpoint of the official code or of the original MAE")
    p.add_argument("src", metavar="SRC")
    p.add_argument("dst", metavar="DST")
    p.add_argument("--from", dest="source_format", required=True, choices=CONVERT_SOURCES)
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="model values a state dict cannot tell, e.g. num_heads=12")
    p.set_defaults(handler=_convert)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value items after an option (``convert A B --from X num_heads=12``) land in ``extra``
    if extra and all("=" in e and not e.startswith("-") for e in extra) and hasattr(args, "overrides"):
        args.overrides = list(args.overrides) + extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.handler(args)
    except UserError as exc:
        print(f"selfmedmae: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("selfmedmae: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
