"""One binary-label vocabulary: which label is the positive class, and how one site's labels map onto a run's.

Splitting, training and reporting all ask the same question of a binary task (which of the two
label values is "something found"), and a report often meets labels written by another site than
the one a model was trained on (a run trained on ``0`` / ``1`` scored on studies labelled
``normal`` / ``tumor``). Both are answered here, from one vocabulary:

* :data:`NEGATIVE_TOKENS` / :data:`POSITIVE_TOKENS`: label texts whose polarity is known. Matching
  ignores case, surrounding whitespace, repeated inner whitespace and ``_`` / ``-`` between
  letters (``No_Lesion``, ``no-lesion`` and ``no lesion`` are one token). The two sets are disjoint.
* :func:`resolve_positive`: the positive class of a binary label set. Rules for two values: an
  explicit positive class wins; else one value known as positive and the other known as negative
  (or unknown) makes the first positive; one value known as negative and the other unknown makes
  the unknown one positive. Two values on the same side, two unknown values or more than two values
  are ambiguous and raise :class:`~medrec.errors.LabelsError` naming the values.
* :func:`map_to_classes`: each label value of a site onto a run's classes, by name when the labels
  are the run's classes, else by polarity (binary runs only).
* :func:`group_label`: the label of a study or patient from the labels of its samples (scoring at
  study / patient level, and a report that attaches labels to such rows).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from medrec.errors import LabelsError

__all__ = [
    "NEGATIVE_TOKENS",
    "POSITIVE_TOKENS",
    "distinct_labels",
    "group_label",
    "map_to_classes",
    "mapping_text",
    "normalise_label",
    "polarity",
    "positive_labels",
    "resolve_positive",
]

NEGATIVE_TOKENS: frozenset[str] = frozenset({
    "0", "0.0", "false", "no", "negative", "neg", "normal", "healthy", "benign", "absent", "none",
    "no lesion", "no lesions", "no finding", "no findings", "no tumor", "no tumour", "no nodule", "no cancer",
    "no disease", "no anomaly", "no abnormality", "lesion free", "tumor free", "tumour free", "nodule free",
    "cancer free", "disease free", "non tumor", "non tumour", "non lesion", "control", "unremarkable",
})
POSITIVE_TOKENS: frozenset[str] = frozenset({
    "1", "1.0", "true", "yes", "positive", "pos", "abnormal", "abnormality", "tumor", "tumour", "lesion",
    "lesions", "nodule", "mass", "malignant", "malignancy", "cancer", "carcinoma", "present", "finding", "findings",
    "disease", "diseased", "anomaly", "case",
})
DEFAULT_FIX = "name the positive class explicitly (a recipe's data.positive_class)"
MAX_SHOWN = 10  # label values named in an error message

_JOINER = re.compile(r"(?<=[a-z])[-_](?=[a-z])")
_SPACES = re.compile(r"\s+")


def normalise_label(label: object) -> str:
    """The vocabulary form of a label: lower case, trimmed, ``_`` / ``-`` between letters as spaces."""
    text = _SPACES.sub(" ", str(label).strip().lower())
    return _SPACES.sub(" ", _JOINER.sub(" ", text))


def polarity(label: object) -> bool | None:
    """True for a label the vocabulary knows as positive, False as negative, None when unknown."""
    token = normalise_label(label)
    if token in POSITIVE_TOKENS:
        return True
    if token in NEGATIVE_TOKENS:
        return False
    return None


def distinct_labels(values: Iterable[object]) -> list[str]:
    """Sorted distinct label texts (trimmed); empty cells and None are left out."""
    return sorted({str(value).strip() for value in values if value is not None and str(value).strip() != ""})


def _shown(values: Sequence[str]) -> str:
    listed = [*values[:MAX_SHOWN], "..."] if len(values) > MAX_SHOWN else list(values)
    return "[" + ", ".join(repr(value) for value in listed) + "]"


def _decide(values: Sequence[str], positive: str | None) -> tuple[str | None, str]:
    """The positive value among at most two distinct ``values``, or None and why not."""
    if positive is not None:
        if len(values) == 2 and positive not in values:
            return None, f"the positive class {positive!r} is neither of them"
        return positive, ""
    if not values:
        return None, "there is no label value"
    if len(values) == 1:
        if polarity(values[0]) is True:
            return values[0], ""
        known = "a negative label" if polarity(values[0]) is False else "not a known label"
        return None, f"the only value is {known}"
    first, second = (polarity(value) for value in values)
    if first is True and second is not True:
        return values[0], ""
    if second is True and first is not True:
        return values[1], ""
    if first is False and second is None:
        return values[1], ""
    if second is False and first is None:
        return values[0], ""
    if first is None and second is None:
        return None, "neither is a known positive or negative label"
    return None, f"both read as {'positive' if first else 'negative'}"


def resolve_positive(
    values: Iterable[object],
    positive: str | None = None,
    *,
    source: str = "labels",
    fix: str = DEFAULT_FIX,
) -> str:
    """The positive class of a binary task.

    Args:
        values: the label values (repeats and empty cells are fine).
        positive: an explicit positive class (recipe, command line, run); it wins when it is one of
            two values, or when the labels hold only one value.
        source: what the values are, for the error message (``"training labels"``, a file name).
        fix: what the user can do about an ambiguous set, appended to the error message.

    Returns:
        The positive class, as written in ``values`` (or ``positive`` itself).

    Raises:
        LabelsError: more than two values, or no rule decides (two unknown values, two values on the
            same side, an explicit class that is neither of two values, one value that is not
            known as positive).
    """
    distinct = distinct_labels(values)
    explicit = None if positive is None else str(positive).strip()
    if len(distinct) > 2:
        raise LabelsError(
            f"{source}: a binary task takes two label values, found {len(distinct)}: {_shown(distinct)}; "
            "relabel or drop the rows of the other values")
    decided, reason = _decide(distinct, explicit)
    if decided is None:
        raise LabelsError(f"{source}: cannot tell which of {_shown(distinct)} is the positive class ({reason}); {fix}")
    return decided


def map_to_classes(
    values: Iterable[object],
    classes: Sequence[str],
    positive_class: str | None,
    *,
    positive: str | None = None,
    source: str = "predictions",
    fix: str = DEFAULT_FIX,
) -> dict[str, str]:
    """Map one site's label values onto a run's classes.

    Labels that all are class names of the run map to themselves. Otherwise (binary runs only) the
    site's positive value (see :func:`resolve_positive`) maps to ``positive_class`` and the other to
    the run's other class, whatever either is called: ``normal`` / ``tumor`` onto a run of ``0`` /
    ``1`` with positive ``1`` gives ``{"normal": "0", "tumor": "1"}``. A site with one value maps it
    by its own polarity.

    Args:
        values: the site's label values (repeats and empty cells are fine).
        classes: the run's classes.
        positive_class: the run's positive class (binary), or None (multi-class).
        positive: the site's positive value, when known from elsewhere.
        source: what the values are, for the error message (a file name).
        fix: what the user can do, appended to the error message.

    Returns:
        ``{site label: run class}`` for every distinct non-empty value.

    Raises:
        LabelsError: the labels cannot be matched (names both vocabularies): a multi-class run with
            other label names, more than two values, an ambiguous polarity, or a site label that is
            a class name of the run but reads as the other class.
    """
    distinct = distinct_labels(values)
    run_classes = [str(name) for name in classes]
    if set(distinct) <= set(run_classes):
        return {value: value for value in distinct}
    where = (f"{source}: labels {_shown(distinct)} cannot be matched to the run's classes {_shown(run_classes)}"
             + (f" (positive {positive_class!r})" if positive_class is not None else ""))
    if len(run_classes) != 2 or positive_class is None or str(positive_class) not in run_classes:
        raise LabelsError(f"{where}: only a binary run's classes are matched by polarity, a multi-class run's "
                          f"labels must be its class names; relabel the predictions with {_shown(run_classes)}")
    run_positive = str(positive_class)
    run_negative = next(name for name in run_classes if name != run_positive)
    explicit = None if positive is None else str(positive).strip()
    if len(distinct) > 2:
        raise LabelsError(f"{where}: a binary run takes at most two label values, found {len(distinct)}; "
                          "fix the labels")
    if len(distinct) == 1 and explicit is None:
        side = polarity(distinct[0])
        if side is None:
            raise LabelsError(f"{where}: {distinct[0]!r} is not a known positive or negative label; {fix}")
        mapping = {distinct[0]: run_positive if side else run_negative}
    else:
        site_positive, reason = _decide(distinct, explicit)
        if site_positive is None:
            raise LabelsError(f"{where}: cannot tell which label is positive ({reason}); {fix}")
        mapping = {value: run_positive if value == site_positive else run_negative for value in distinct}
    clashes = [value for value, name in mapping.items() if value in run_classes and value != name]
    if clashes:
        raise LabelsError(f"{where}: {clashes[0]!r} is a class of the run but reads as {mapping[clashes[0]]!r} by "
                          f"polarity; relabel the predictions with {_shown(run_classes)}")
    return mapping


def mapping_text(mapping: Mapping[str, str]) -> str:
    """``'normal' -> '0', 'tumor' -> '1'`` (sorted by the run's class name)."""
    return ", ".join(f"{site!r} -> {name!r}" for site, name in sorted(mapping.items(), key=lambda item: item[1]))


def group_label(labels: Sequence[str], classes: Sequence[str], positive_class: str | None = None) -> str:
    """The label of a group (a study or a patient) from its members' labels.

    Empty labels are ignored. Members that agree give their label; otherwise a binary task gives the
    positive class if any member holds it, and a multi-class task the most frequent label (ties in
    the order of ``classes``, then by name).

    Args:
        labels: the members' labels.
        classes: the task's classes (binary: negative, positive).
        positive_class: the positive class of a binary task (default: the second class).

    Returns:
        The group's label, or '' when no member has one.
    """
    known = [label for label in labels if label != ""]
    if not known:
        return ""
    distinct = set(known)
    if len(distinct) == 1:
        return known[0]
    positive = positive_class if positive_class is not None else (classes[1] if len(classes) == 2 else None)
    if len(classes) == 2 and positive in distinct:
        return positive
    counts = Counter(known)
    order = {name: index for index, name in enumerate(classes)}
    return sorted(counts, key=lambda name: (-counts[name], order.get(name, len(order)), name))[0]


def positive_labels(labels: Iterable[str], positive_class: str | None = None) -> set[str]:
    """The labels counted as positive (this module's vocabulary).

    Binary: the positive class (``positive_class`` when given). One label or multi-class: every
    label that is not known as negative (``0``, ``normal``, ``none``, ``no lesion``, ...).

    Raises:
        LabelsError: two labels whose positive class the vocabulary cannot tell, and no
            ``positive_class``.
    """
    classes = distinct_labels(labels)
    if len(classes) == 2:
        return {resolve_positive(classes, positive_class, source="split labels",
                                 fix="name it in the recipe's data.positive_class")}
    return {name for name in classes if polarity(name) is not False}
