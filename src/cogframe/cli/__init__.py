"""The ``cogframe`` command line: argv in, exit status out.

Each subcommand is one module exposing ``NAME``, ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int``. Built-in ones are listed in :data:`COMMANDS`; plugins add more through the
``register_commands`` hook. So adding a command is one small file plus one line here.

Errors: a :class:`~cogframe.errors.CogframeError` (or an omegaconf error, a missing file, Ctrl-C)
prints ``error: <message>`` on stderr and exits 2 (130 for Ctrl-C); ``--debug`` adds the traceback.
Anything else is a bug: exit 1 with a request to rerun with ``--debug`` and report it. A closed
output pipe (``cogframe plugins | head -1``) ends the command quietly with status 141 (128 +
SIGPIPE), as Unix tools do.

Start-up imports no torch: the plugins' components are registered lazily (see
:mod:`cogframe.plugin_loader`), so ``--help``, ``ls``, ``plugins``, ``validate`` and ``cp`` only
import torch when a component's own check needs it.
"""

from __future__ import annotations

import argparse
import importlib
import os
import select
import sys
import traceback
from typing import Any, NamedTuple, Sequence

from omegaconf.errors import OmegaConfBaseException

from cogframe import __version__
from cogframe.errors import CogframeError

COMMANDS: tuple[str, ...] = (
    "cogframe.cli.ls",
    "cogframe.cli.plugins",
    "cogframe.cli.validate",
    "cogframe.cli.run",
    "cogframe.cli.cp",
    "cogframe.cli.env",
    "cogframe.cli.plan",
    "cogframe.cli.mask",
    "cogframe.cli.consolidate",
    "cogframe.cli.convert",
    "cogframe.cli.demo",
    "cogframe.cli.web",
    "cogframe.cli.eval",
)

EXIT_OK = 0
EXIT_BUG = 1
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what a Unix tool killed by a closed pipe reports
_MEMBERS = ("NAME", "HELP", "add_arguments", "run")


class _NotLoaded(NamedTuple):
    """A built-in command other than the one being run: its name only (its module stays unimported)."""

    NAME: str


def _builtin_name(module: str) -> str:
    # A built-in command's NAME is its module's name (tests/test_cli_startup.py checks it).
    return module.rsplit(".", 1)[-1]


def _commands(only: str | None = None) -> list[tuple[str, Any]]:
    """Returns ``(origin, command)`` for the built-in commands, then the plugins' ones.

    Args:
        only: The built-in command being run: only its module is imported and the others are
            name-only stubs (their names still clash with a plugin's). None: import all (``--help``).
    """
    from cogframe.plugins import load

    found = [("cogframe", importlib.import_module(module) if only in (None, _builtin_name(module))
              else _NotLoaded(_builtin_name(module))) for module in COMMANDS]
    found += [(plugin.origin, cmd) for plugin, cmd in load().commands()]
    return found


def _asked_builtin(argv: Sequence[str]) -> str | None:
    """The built-in command ``argv`` runs, or None (help, a plugin's command, a usage error)."""
    for token in argv:
        if token == "--debug":
            continue
        if token in {_builtin_name(m) for m in COMMANDS}:
            return token
        return None
    return None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """Builds the argparse parser with every built-in and plugin subcommand.

    Args:
        argv: The arguments it will parse; when they run a built-in command, only that command's
            module is imported (start-up time), the others are listed by name. None: all.

    Raises:
        CogframeError: A plugin command lacks one of NAME/HELP/add_arguments/run, or two commands
            share a name.
    """
    parser = argparse.ArgumentParser(
        prog="cogframe",
        description="Train and sample CogVideo-style text-to-video transformers from recipes.",
    )
    parser.add_argument("--version", action="version", version=f"cogframe {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    seen: dict[str, str] = {}
    for origin, cmd in _commands(_asked_builtin(argv) if argv is not None else None):
        missing = [] if isinstance(cmd, _NotLoaded) else [m for m in _MEMBERS if not hasattr(cmd, m)]
        if missing:
            raise CogframeError(
                f"command {cmd!r} from {origin} lacks {', '.join(missing)}: a command needs NAME, HELP, "
                "add_arguments(parser) and run(args) (see docs/plugins.md, register_commands)"
            )
        if cmd.NAME in seen:
            raise CogframeError(
                f"command '{cmd.NAME}' is defined twice: by {seen[cmd.NAME]} and by {origin}. Rename one, or "
                "leave the plugin out via COGFRAME_PLUGINS"
            )
        seen[cmd.NAME] = origin
        if isinstance(cmd, _NotLoaded):
            continue  # its name is taken (checked above); argparse never routes to it
        sub = subparsers.add_parser(cmd.NAME, help=cmd.HELP, description=cmd.HELP)
        # SUPPRESS keeps a `cogframe --debug run ...` from being reset by the subparser's default.
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        cmd.add_arguments(sub)
        sub.set_defaults(_run=cmd.run)
    return parser


def _message(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}: check the path (does it exist, is it writable?)"
    if isinstance(exc, OmegaConfBaseException):
        return f"{exc}. Fix the recipe key named above (`cogframe validate RECIPE` shows the resolved recipe)"
    return str(exc)


def _stdout_closed() -> bool:
    """Whether the reader of stdout has gone away (poll reports an error/hang-up on it)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no descriptor (tests) or no poll (Windows)
        return False


def _silence_stdout() -> None:
    """Points stdout at /dev/null after the reader of our pipe went away.

    Python flushes stdout once more at exit; without this that flush raises BrokenPipeError again
    and prints "Exception ignored ..." on stderr.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # stdout without a file descriptor (tests)
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the ``cogframe`` command line.

    Args:
        argv: Arguments without the program name; defaults to ``sys.argv[1:]``.

    Returns:
        The exit status: 0 success, 2 user error, 130 interrupted, 141 output pipe closed, 1 a bug.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    # Known before parsing, so errors while building the parser (plugin loading) honour it too.
    debug = "--debug" in argv
    try:
        try:
            args = build_parser(argv).parse_args(argv)
            status = int(args._run(args) or EXIT_OK)
        except SystemExit as exc:  # argparse: --help, --version and usage errors
            status = exc.code if isinstance(exc.code, int) else (EXIT_OK if exc.code is None else EXIT_USER_ERROR)
        # Flush here, not at interpreter exit, so that a closed pipe is noticed (and silenced) below.
        sys.stdout.flush()
        return status
    except BrokenPipeError as exc:
        if not _stdout_closed():  # some other pipe (a subprocess, a socket): a real error
            print(f"error: {_message(exc)}", file=sys.stderr)
            return EXIT_USER_ERROR
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print("error: interrupted (Ctrl-C); outputs written so far are kept", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (CogframeError, OmegaConfBaseException, OSError) as exc:
        if debug:
            traceback.print_exc()
        print(f"error: {_message(exc)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except Exception as exc:
        if debug:
            traceback.print_exc()
        print(
            f"error: internal error {type(exc).__name__}: {exc}. This is a bug in cogframe or a plugin: "
            "rerun with --debug for the traceback and report it",
            file=sys.stderr,
        )
        return EXIT_BUG
