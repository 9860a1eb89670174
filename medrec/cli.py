"""The ``medrec`` command line: one entry point, one sub-command per pipeline stage.

Each sub-command lives in ``medrec/commands/<name>.py`` and exposes ``register(app)``.
Errors that medrec raises on purpose (:class:`medrec.errors.MedrecError`) end the command
with a one-line reason and a non-zero exit code; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import importlib
import os
import re
import shlex
import sys
from collections.abc import Sequence
from typing import Any

import typer
from rich.markup import escape

from medrec import __version__
from medrec.console import console
from medrec.errors import MedrecError

# The order here is the order of ``medrec --help``: the pipeline, stage by stage (typer lists the
# ``recipes`` command group after the plain commands).
COMMAND_MODULES: tuple[str, ...] = ("synth", "index", "split", "models", "train", "score", "report", "evaluate", "run",
                                    "demo", "recipes")

app = typer.Typer(
    name="medrec",
    help="Turn folders of DICOM series and NIfTI volumes into validated tumor / anomaly classifiers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_state = {"debug": False}


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"medrec {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """medrec: index scans, split by patient, train, score and report."""
    _state["debug"] = debug


for _name in COMMAND_MODULES:
    importlib.import_module(f"medrec.commands.{_name}").register(app)


MIN_TORCH_VERSION: tuple[int, int] = (2, 10)


def check_torch_version(version_string: str) -> None:
    """Refuse torch releases older than :data:`MIN_TORCH_VERSION` (their ``torch.load`` defaults are unsafe).

    Args:
        version_string: ``torch.__version__``, e.g. ``"2.13.0+cpu"``.

    Raises:
        MedrecError: the version is older than 2.10 or cannot be parsed.
    """
    match = re.match(r"^\s*(\d+)\.(\d+)", str(version_string))
    if match is None:
        raise MedrecError(f"torch version {version_string!r} cannot be parsed; medrec needs torch >= 2.10")
    found = (int(match.group(1)), int(match.group(2)))
    if found < MIN_TORCH_VERSION:
        raise MedrecError(
            f"torch {version_string} is too old; medrec needs torch >= "
            f"{MIN_TORCH_VERSION[0]}.{MIN_TORCH_VERSION[1]} (pip install -U 'torch>=2.10')"
        )


def _check_installed_torch() -> None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version("torch")
    except PackageNotFoundError as e:
        raise MedrecError("torch is not installed; medrec needs torch >= 2.10") from e
    check_torch_version(installed)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; turn :class:`MedrecError` into a one-line message and exit code, and Ctrl-C into
    exit code 130 with what was kept and the command line that resumes (:func:`interruption_message`)."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        _check_installed_torch()
        app(args=args, prog_name="medrec", standalone_mode=True)
    except MedrecError as e:
        if debug:
            raise
        # the message is plain text: "[lower, upper]" in it is not rich markup
        console.print(f"[bold red]error:[/] {escape(str(e))}", soft_wrap=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        _report_interrupt(args)
        sys.exit(130)
    except SystemExit as e:
        # typer turns Ctrl-C inside a command into a silent exit 130 (raised from the KeyboardInterrupt)
        if e.code == 130 and _raised_by_interrupt(e):
            _report_interrupt(args)
        raise


def _raised_by_interrupt(error: BaseException) -> bool:
    """Whether ``error`` was raised while handling a :class:`KeyboardInterrupt` (its cause or context chain)."""
    seen: set[int] = set()
    link: BaseException | None = error
    while link is not None and id(link) not in seen:
        if isinstance(link, KeyboardInterrupt):
            return True
        seen.add(id(link))
        link = link.__cause__ or link.__context__
    return False


def _parsed_command(args: Sequence[str]) -> tuple[str | None, dict[str, Any]]:
    """The sub-command named in ``args`` and its parsed parameters (``{}`` when they cannot be parsed)."""
    # the root options (--debug, --version) take no value: the first other word names the command
    name = next((word for word in args if not word.startswith("-")), None)
    if name is None:
        return None, {}
    group = typer.main.get_command(app)
    root = typer.Context(group, info_name="medrec")
    command = group.get_command(root, name)
    if command is None:
        return name, {}
    rest = list(args)[list(args).index(name) + 1:]
    try:
        with command.make_context(name, rest, parent=root, resilient_parsing=True) as context:
            return name, dict(context.params)
    except Exception:  # noqa: BLE001 - a command line that does not parse still gets the plain message
        return name, {}


def interruption_message(args: Sequence[str]) -> str:
    """What an interrupted command kept on disk and the command line that resumes it.

    A command module may define ``on_interrupt(params, args) -> (kept, resume_args)``: ``params``
    are the command's parsed parameters, ``args`` the command line after ``medrec``; ``kept`` says
    what was kept, ``resume_args`` is the command line that resumes (usually ``args`` itself).

    Args:
        args: the command line after ``medrec`` (``sys.argv[1:]``).

    Returns:
        One or two lines of plain text (no markup).
    """
    words = list(args)
    name, params = _parsed_command(words)
    kept, resume_args = "", words
    hook = getattr(importlib.import_module(f"medrec.commands.{name}"), "on_interrupt", None) \
        if name in COMMAND_MODULES and params else None
    if hook is not None:
        try:
            kept, resume_args = hook(params, words)
        except Exception:  # noqa: BLE001 - describing what was kept must never hide the interrupt itself
            kept, resume_args = "", words
    command = shlex.join(["medrec", *resume_args])
    if kept:
        return f"interrupted: {kept}\nresume with: {command}"
    return f"interrupted: medrec {name or ''} stopped before it finished\nrun it again with: {command}"


def _report_interrupt(args: Sequence[str]) -> None:
    if os.environ.get("RANK", "0") != "0":
        return  # under torchrun every process is interrupted: rank 0 speaks for them
    message = interruption_message(args).removeprefix("interrupted: ")
    # soft_wrap: the command line stays on one line, to be copied as it is
    console.print(f"[bold red]interrupted:[/] {escape(message)}", soft_wrap=True)
