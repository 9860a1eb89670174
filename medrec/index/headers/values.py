"""Tolerant value access: headers in the wild hold blanks, junk and wrong multiplicities."""

from __future__ import annotations

import math


def _text(dataset, keyword: str) -> str:
    try:
        value = dataset.get(keyword)
    except Exception:  # noqa: BLE001 - a malformed value reads as missing
        return ""
    if type(value) is str:  # the common case, first
        return value.strip().strip("\x00").strip()
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = "\\".join(str(v) for v in value)
    return str(value).strip().strip("\x00").strip()


def _multi(dataset, keyword: str) -> list[str]:
    try:
        value = dataset.get(keyword)
    except Exception:  # noqa: BLE001
        return []
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [part for part in value.split("\\") if part]
    try:
        return [str(v) for v in value]
    except TypeError:
        return [str(value)]


def _int(dataset, keyword: str) -> int | None:
    try:
        value = dataset.get(keyword)
        if type(value) is int:  # the common case, first
            return value
        if value is None or value == "":
            return None
        if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
            value = value[0]
        return int(float(value))
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    except Exception:  # noqa: BLE001
        return None


def _float(dataset, keyword: str) -> float | None:
    try:
        value = dataset.get(keyword)
        if value is None or value == "":
            return None
        if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
            value = value[0]
        number = float(value)
    except Exception:  # noqa: BLE001
        return None
    return number if math.isfinite(number) else None


def _floats(dataset, keyword: str, count: int) -> tuple[float, ...] | None:
    try:
        value = dataset.get(keyword)
        if value is None or value == "":
            return None
        numbers = tuple(float(v) for v in value)
    except Exception:  # noqa: BLE001
        return None
    if len(numbers) != count or not all(math.isfinite(n) for n in numbers):
        return None
    return numbers


def _short(error: BaseException, limit: int = 160) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
