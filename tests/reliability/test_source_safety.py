"""Item 1: the package source never deserialises with pickle nor evaluates code (checked on the AST)."""

from __future__ import annotations

import ast
from pathlib import Path

import medrec

PACKAGE = Path(medrec.__file__).resolve().parent


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return f"{inner}.{node.attr}"
    return "<expr>"


def _keyword_is(call: ast.Call, name: str, value: object) -> bool:
    return any(
        k.arg == name and isinstance(k.value, ast.Constant) and k.value.value is value for k in call.keywords
    )


def unsafe_calls(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, reason) for each unsafe deserialisation / evaluation found in ``tree``."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names]
            if isinstance(node, ast.ImportFrom) and node.module:
                names.append(node.module)
            if any(n.split(".")[0] in ("cloudpickle", "dill") for n in names):
                found.append((node.lineno, "imports cloudpickle/dill"))
            if isinstance(node, ast.ImportFrom) and node.module in ("pickle", "joblib", "cloudpickle"):
                if any(a.name in ("load", "loads", "Unpickler") for a in node.names):
                    found.append((node.lineno, f"from {node.module} import load"))
            continue
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        tail = name.rsplit(".", 1)[-1]
        if name in ("eval", "exec", "builtins.eval", "builtins.exec"):
            found.append((node.lineno, f"{name}("))
        elif name in ("pickle.load", "pickle.loads", "pickle.Unpickler", "joblib.load", "_pickle.load",
                      "_pickle.loads"):
            found.append((node.lineno, f"{name}("))
        elif name.startswith("cloudpickle.") or name.startswith("dill."):
            found.append((node.lineno, f"{name}("))
        elif name == "torch.load" or (tail == "load" and name.startswith("torch.")):
            if not _keyword_is(node, "weights_only", True):
                found.append((node.lineno, f"{name}( without weights_only=True"))
        elif name in ("np.load", "numpy.load") and _keyword_is(node, "allow_pickle", True):
            found.append((node.lineno, f"{name}(allow_pickle=True)"))
        elif name in ("yaml.load", "yaml.load_all", "yaml.unsafe_load", "yaml.full_load", "yaml.unsafe_load_all"):
            found.append((node.lineno, f"{name}( (use yaml.safe_load)"))
    return found


def test_detector_finds_every_pattern() -> None:
    source = "\n".join(
        [
            "import torch, pickle, joblib, numpy as np, yaml, cloudpickle",
            "torch.load('a')",
            "torch.load('a', weights_only=False)",
            "pickle.load(f)",
            "pickle.loads(b)",
            "joblib.load('x')",
            "cloudpickle.loads(b)",
            "np.load('x', allow_pickle=True)",
            "yaml.load(s)",
            "eval('1')",
            "exec('x=1')",
        ]
    )
    lines = sorted({line for line, _ in unsafe_calls(ast.parse(source))})
    assert lines == list(range(1, 12))


def test_detector_accepts_safe_forms() -> None:
    source = "\n".join(
        [
            "torch.load('a', weights_only=True)",
            "np.load('x', allow_pickle=False)",
            "np.load('x')",
            "yaml.safe_load(s)",
            "json.loads(s)",
            "model.eval()",
            "model.to(device).eval()",
            "safetensors.torch.load_file('x')",
        ]
    )
    assert unsafe_calls(ast.parse(source)) == []


def test_package_source_has_no_unsafe_deserialisation_or_eval() -> None:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 10
    problems = []
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        problems += [f"{path.relative_to(PACKAGE.parent)}:{line}: {why}" for line, why in unsafe_calls(tree)]
    assert problems == [], "unsafe calls in medrec source:\n" + "\n".join(problems)
