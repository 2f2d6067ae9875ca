"""The ``painmon`` command line. Heavy modules are imported inside each command."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

log = logging.getLogger("painmon")

EXIT_OK = 0
EXIT_USAGE = 2


class CliError(Exception):
    """A problem the user can fix; printed as one line, exit code 2."""


def _version() -> str:
    from painmon import __version__

    return __version__


# --- commands ---------------------------------------------------------------------------


def _cmd_models_list(args: argparse.Namespace) -> int:
    from painmon.models import format_model_table

    print(format_model_table())
    return EXIT_OK


def _cmd_synth(args: argparse.Namespace) -> int:
    from painmon.core.synth import run_synth_cli

    if args.out is None and args.video is None:
        raise CliError("give --out DIR (a face-image dataset) or --video PATH (a patient video)")
    print(
        run_synth_cli(
            out=args.out,
            subjects=args.subjects,
            images_per_subject=args.images_per_subject,
            seed=args.seed,
            video=args.video,
            seconds=args.seconds,
            fps=args.fps,
        )
    )
    return EXIT_OK


def _cmd_split(args: argparse.Namespace) -> int:
    from painmon.core.splits import run_split_cli

    print(run_split_cli(args.manifest, args.out, folds=args.folds, seed=args.seed))
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    print(
        "painmon demo: the bedside window (a scripted synthetic patient scored by the shipped "
        "demo model) arrives with the app; until then try `painmon synth --video patient.mp4` "
        "and `painmon models list`."
    )
    return EXIT_OK


# --- parser -------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="painmon",
        description="Real-time bedside monitor of facial pain expression (DA-CNN, PSPI 0-4).",
    )
    parser.add_argument("--version", action="version", version=f"painmon {_version()}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    models = sub.add_parser("models", help="list the model zoo")
    models_sub = models.add_subparsers(dest="models_command", metavar="ACTION")
    models_list = models_sub.add_parser(
        "list", help="each model with parameter count and input size"
    )
    models_list.set_defaults(func=_cmd_models_list)

    synth = sub.add_parser("synth", help="draw synthetic patients (images + manifest, or a video)")
    synth.add_argument("--out", type=Path, help="folder for PNGs and manifest.csv")
    synth.add_argument("--subjects", type=int, default=20)
    synth.add_argument("--images-per-subject", type=int, default=100)
    synth.add_argument("--video", type=Path, help="write a scripted pain-episode video (.mp4)")
    synth.add_argument("--seconds", type=float, default=60.0)
    synth.add_argument("--fps", type=float, default=30.0)
    synth.add_argument("--seed", type=int, default=0)
    synth.set_defaults(func=_cmd_synth)

    split = sub.add_parser("split", help="subject-wise stratified train/val/test split and K folds")
    split.add_argument(
        "--manifest", type=Path, required=True, help="manifest CSV, UNBC or BioVid root"
    )
    split.add_argument("--out", type=Path, required=True, help="where to write splits.json")
    split.add_argument("--folds", type=int, default=5)
    split.add_argument("--seed", type=int, default=42)
    split.set_defaults(func=_cmd_split)

    demo = sub.add_parser("demo", help="the bedside window on a scripted synthetic patient")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return func(args)
    except (CliError, FileNotFoundError, ValueError, OSError) as exc:
        print(f"painmon {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"painmon {args.command}: interrupted", file=sys.stderr)
        return 130
