"""The ``medrec`` command line: one entry point, one sub-command per pipeline stage.

Each sub-command lives in ``medrec/commands/<name>.py`` and exposes ``register(app)``.
Errors that medrec raises on purpose (:class:`medrec.errors.MedrecError`) end the command
with a one-line reason and a non-zero exit code; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import importlib
import re
import sys

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
    """Run the CLI; turn :class:`MedrecError` into a one-line message and exit code."""
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
        console.print("[bold red]interrupted[/]")
        sys.exit(130)
