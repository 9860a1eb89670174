"""Reading and writing config files: YAML in, one :class:`~medrec.errors.ConfigError` naming every bad
key by its dotted path (with the allowed keys and the nearest name) out, and the resolved config back
to YAML.

Paths in the YAML are relative to the YAML file's folder and are resolved to absolute paths
when loaded.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from yaml.reader import ReaderError

from medrec.config.model import UNKNOWN_MODEL_ARGUMENT
from medrec.config.train import TrainConfig
from medrec.errors import ConfigError


def _section_model(loc: tuple[Any, ...], root: type[BaseModel]) -> type[BaseModel] | None:
    """The pydantic model that holds the key at ``loc`` (for listing its allowed keys)."""
    current: type[BaseModel] | None = root
    for part in loc[:-1]:
        if current is None or not isinstance(part, str) or part not in current.model_fields:
            return None
        annotation = current.model_fields[part].annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        current = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
    return current


def format_validation_error(error: ValidationError, source: str, root: type[BaseModel] | None = None,
                            what: str = "training config") -> str:
    """One readable message naming each bad key by dotted path and what is allowed there (``what``: the
    kind of file, for the message)."""
    problems = []
    for item in error.errors():
        loc = tuple(part for part in item["loc"] if not (isinstance(part, str) and part.startswith("function-")))
        dotted = ".".join(str(part) for part in loc) or "(top level)"
        if item["type"] == "extra_forbidden":
            section = _section_model(loc, root or TrainConfig)
            allowed = sorted(section.model_fields) if section is not None else []
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"unknown key '{dotted}'{hint}; allowed keys here: {', '.join(allowed)}")
        elif item["type"] == UNKNOWN_MODEL_ARGUMENT:
            context = item["ctx"]
            for key in context["keys"]:
                close = difflib.get_close_matches(key, context["accepted"], n=1, cutoff=0.6)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                problems.append(f"unknown key '{dotted}.{key}'{hint}; {context['model']} accepts: "
                                f"{', '.join(context['accepted']) or 'no arguments'}")
        elif item["type"] == "missing":
            problems.append(f"'{dotted}' is required")
        else:
            message = item["msg"].removeprefix("Value error, ")
            shown = item.get("input")
            got = "" if isinstance(shown, dict) else f" (got {shown!r})"
            problems.append(f"'{dotted}': {message}{got}" if loc else message)
    return f"{source}: invalid {what}: " + "; ".join(problems)


def parse_config(data: Any, base_dir: str | Path | None = None, source: str = "config") -> TrainConfig:
    """Validate a config mapping; relative paths are resolved against ``base_dir`` (default: cwd).

    Raises:
        ConfigError: the mapping does not describe a valid config (every problem named by key).
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a training config must be a mapping of sections (data, model, training, ...)")
    try:
        return TrainConfig.model_validate(data, context={"base_dir": str(base_dir) if base_dir else None})
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, source)) from e


def load_config(path: str | Path) -> TrainConfig:
    """Read and validate a training YAML; relative paths are taken from the YAML file's folder.

    Raises:
        ConfigError: missing file, bad YAML, unknown keys or bad values.
    """
    source = Path(path)
    data = read_yaml(source, "config file not found")
    return parse_config(data if data is not None else {}, base_dir=source.resolve().parent, source=str(source))


def read_yaml(source: Path, not_found: str) -> Any:
    """The parsed content of a YAML file (None when empty).

    Raises:
        ConfigError: the file is missing (``not_found`` says what to do), not UTF-8 or not valid YAML.
    """
    if not source.is_file():
        raise ConfigError(f"{source}: {not_found}")
    try:
        text = source.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{source}: not a UTF-8 text file") from e
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: {describe_yaml_error(e, text)}") from e


def describe_yaml_error(error: yaml.YAMLError, text: str) -> str:
    """One line saying where a YAML text is broken and why (PyYAML's own message spans several lines).

    Args:
        error: what :func:`yaml.safe_load` raised.
        text: the text it was parsing (to place errors that carry only a character offset).

    Returns:
        ``not valid YAML at line L, column C: <problem> (<context> at line L', column C')`` with
        1-based positions, or as much of it as the error tells.
    """
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        mark = error.problem_mark
        message = f"not valid YAML at line {mark.line + 1}, column {mark.column + 1}: {error.problem or 'syntax error'}"
        if error.context:
            context_mark = error.context_mark
            where = (f" at line {context_mark.line + 1}, column {context_mark.column + 1}"
                     if context_mark is not None else "")
            message += f" ({error.context}{where})"
        return message
    if isinstance(error, ReaderError):
        before = text[: error.position]
        line, column = before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1
        character = f"#x{error.character:04x}" if isinstance(error.character, int) else repr(error.character)
        return f"not valid YAML at line {line}, column {column}: unacceptable character {character}: {error.reason}"
    return "not valid YAML: " + " ".join(str(error).split())


def dump_config(config: TrainConfig) -> str:
    """The resolved config as YAML text (loadable again with :func:`load_config`)."""
    text: str = yaml.safe_dump(config.to_yaml_dict(), sort_keys=False, default_flow_style=False)
    return text
