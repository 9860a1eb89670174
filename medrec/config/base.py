"""What every config section is built of: a frozen model that forbids unknown keys, and paths
resolved against the YAML file's folder (the ``base_dir`` of the validation context) when loaded.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationInfo


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base_dir") if info.context else None
    path = Path(os.path.expanduser(str(value)))
    if not path.is_absolute():
        path = Path(base or Path.cwd()) / path
    return Path(os.path.normpath(path))


ResolvedPath = Annotated[Path, AfterValidator(_resolve_path)]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
