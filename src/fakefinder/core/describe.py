"""Pieces of a dataset description (what the platform's dataset picker and upload check show): counts
per split and class, notes joined into one line, the errors a user's files can make a reader raise."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable

from fakefinder.core.errors import FakefinderError

READ_ERRORS = (FakefinderError, ValueError, OSError)  # what a user's files can make a reader raise
SPLIT_ORDER = {"train": 0, "val": 1, "eval": 1, "test": 2}


def split_counts(pairs: Iterable[tuple[object, object]]) -> dict[str, dict[str, int]]:
    """{split: {class: count}} from (split, class) pairs, splits in train/val/test order."""
    table: dict[str, Counter] = defaultdict(Counter)
    for split, label in pairs:
        table[str(split)][str(label)] += 1
    order = sorted(table, key=lambda s: (SPLIT_ORDER.get(s, 3), s))
    return {split: dict(sorted(table[split].items())) for split in order}


def join_notes(notes: Iterable[str]) -> str:
    return "; ".join(note for note in notes if note)


def described(
    layout: str, splits: dict | None = None, notes: Iterable[str] = (), usable: bool = True
) -> dict:
    """A kind's answer to `describe_dataset`."""
    return {"layout": layout, "splits": splits or {}, "note": join_notes(notes), "usable": usable}
