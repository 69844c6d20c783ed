"""The ``lesionprop`` command line: a thin dispatcher.

Each subcommand lives in ``lesionprop/commands/<name>.py`` and defines
``add_arguments(parser)`` and ``run(args) -> int``.  Modules are imported only
when their command runs, so ``lesionprop --help`` stays fast (no torch import).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import sys
import traceback
from typing import Sequence

from lesionprop import __version__
from lesionprop.errors import InputError, LesionpropError

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("lesionprop.commands.synth", "write a synthetic DeepLesion-format dataset with complete truth"),
    "import": ("lesionprop.commands.import_ct", "convert a DICOM series or NIfTI volume to the DeepLesion layout"),
    "summary": ("lesionprop.commands.summary", "summarise a DeepLesion-layout dataset (splits, sizes, intervals)"),
    "train": ("lesionprop.commands.train", "train an FPN-3DCE detector"),
    "predict": ("lesionprop.commands.predict", "predict boxes on key and/or adjacent slices (with TTA)"),
    "evaluate": ("lesionprop.commands.evaluate", "sensitivity at 0.5, 1, 2, 4, 8 FPs per image (FROC)"),
    "propagate": ("lesionprop.commands.propagate", "Algorithm 1: slice-level label propagation"),
    "mine": ("lesionprop.commands.mine", "Algorithm 2: missing ground-truth mining"),
    "distill": ("lesionprop.commands.distill", "data-distillation baseline pseudo-labels"),
    "label-sets": ("lesionprop.commands.label_sets", "MM, LP, MM + LP and DD pseudo-label sets from one read of the predictions"),
    "pipeline": ("lesionprop.commands.pipeline", "the paper's workflow: baseline -> MM/LP/DD -> retrain -> report"),
    "demo": ("lesionprop.commands.demo", "the pipeline on a fresh synthetic dataset with the CPU preset"),
    "compare": ("lesionprop.commands.compare", "paired bootstrap comparison of several detectors' predictions"),
    "link": ("lesionprop.commands.link", "link per-slice boxes into 3D lesions"),
    "detect": ("lesionprop.commands.detect", "detect lesions on one CT scan: 3D lesion table, label volume, HTML page"),
    "review": ("lesionprop.commands.review", "confirm, reject or redraw pseudo-labels in a browser (a local web app)"),
    "export": ("lesionprop.commands.export", "export annotations to other tools' formats (COCO)"),
    "import-predictions": ("lesionprop.commands.import_predictions", "other frameworks' detections (COCO results) -> predictions CSV"),
}


class CommandError(InputError):
    """A command's own argument check failed: printed as one line, exit status 2."""


#: OS errors of the machine, not of lesionprop (a full disk, a read-only or forbidden path): the
#: user fixes them, so they are one line naming the file, like a LesionpropError
_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EACCES, errno.EPERM, errno.EROFS, errno.EDQUOT}


class _DefaultsHelp(argparse.HelpFormatter):
    """Append ``(default: X)`` to an option's help unless the help already names its default
    or there is none to show (None, False, an empty value)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("default" in text.lower() or not action.option_strings or default is None or default is False
                or default == argparse.SUPPRESS or default in ((), [], "")):
            return text
        shown = ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in default) \
            if isinstance(default, (tuple, list)) else (f"{default:g}" if isinstance(default, float) else str(default))
        return f"{text} (default: {shown.replace('%', '%%')})" if text else f"default: {shown.replace('%', '%%')}"


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lesionprop",
        description="Semi-supervised lesion detection in CT (FPN-3DCE, label propagation, missing GT mining).",
    )
    parser.add_argument("--version", action="version", version=f"lesionprop {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, formatter_class=_DefaultsHelp)
        if name == command:
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    if command not in COMMANDS:
        command = None
    parser = build_parser(command)
    args = parser.parse_args(argv)
    if args.command is None:                     # no command: the help, as a usage error (exit 2)
        parser.print_help(sys.stderr)
        print("\nlesionprop: error: choose a COMMAND (lesionprop COMMAND --help for its options)", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return int(module.run(args) or 0)
    except LesionpropError as exc:
        print(f"lesionprop {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lesionprop {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:         # output piped into `head` and closed early
        sys.stderr.close()
        return 0
    except OSError as exc:
        if exc.errno not in _ENVIRONMENT_ERRNOS:
            return _bug(args.command)
        print(f"lesionprop {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except Exception:               # noqa: BLE001  (anything else is ours to fix)
        return _bug(args.command)


def _bug(command: str) -> int:
    """An error no input explains: show its traceback and say whose it is (exit status 1)."""
    traceback.print_exc()
    print(f"lesionprop {command}: internal error: the traceback above is a bug in lesionprop, not a "
          "problem with your input; please report it with the command you ran", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
