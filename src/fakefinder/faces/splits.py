"""Identity-safe train/val/test splits.

Items that share any identity key (an FF++ fake `A_B` with originals `A` and `B`, a DFDC fake with
its `original`, rows of one CSV `group`) form one group, and a group never crosses splits. Official
splits are kept where the dataset has them; a member that would leak into another split than its
group's is dropped and reported rather than silently moved.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable

from fakefinder.config import SplitConfig
from fakefinder.faces.layouts import MediaItem

SPLITS = ("train", "val", "test")
_STRICTNESS = {"train": 0, "val": 1, "test": 2}


def stable_hash(*parts: object) -> int:
    digest = hashlib.blake2b("\x1f".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, key: str) -> str:
        self.parent.setdefault(key, key)
        root = key
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[key] != root:  # path compression
            self.parent[key], key = root, self.parent[key]
        return root

    def union(self, a: str, b: str) -> None:
        root_a, root_b = self.find(a), self.find(b)
        if root_a != root_b:
            # the smaller key becomes the root, so group names do not depend on input order
            low, high = sorted((root_a, root_b))
            self.parent[high] = low


def assign_groups(items: Iterable[MediaItem]) -> None:
    """Set `item.group` to a name shared by every item connected through identity keys."""
    items = list(items)
    union = _UnionFind()
    for item in items:
        keys = [f"{item.dataset}/{link}" for link in item.links]
        for key in keys[1:]:
            union.union(keys[0], key)
        union.find(keys[0])
    for item in items:
        item.group = union.find(f"{item.dataset}/{item.links[0]}")


def _ratio_assign(groups: dict[str, int], ratios: dict[str, float], seed: int) -> dict[str, str]:
    """Give whole groups to splits so each split's item share is as close as possible to its ratio.

    Groups are visited in a seeded hash order (stable when other groups are added) and each one
    goes to the split that is furthest below its target.
    """
    total = sum(groups.values())
    names = [name for name, ratio in ratios.items() if ratio > 0]
    if not names:
        return {}
    weight = sum(ratios[n] for n in names)
    targets = {n: ratios[n] / weight * total for n in names}
    filled = {n: 0 for n in names}
    assignment = {}
    for group in sorted(groups, key=lambda g: stable_hash(seed, g)):
        split = max(names, key=lambda n: (targets[n] - filled[n], -SPLITS.index(n)))
        assignment[group] = split
        filled[split] += groups[group]
    return assignment


def assign_splits(items: list[MediaItem], config: SplitConfig) -> list[tuple[MediaItem, str]]:
    """Set `item.group` and `item.split` on every item, whole groups at a time.

    Items whose official split disagrees with their group's are removed from `items` and returned
    with the reason, so nothing leaks and nothing is dropped silently.
    """
    assign_groups(items)
    members: dict[str, list[MediaItem]] = defaultdict(list)
    for item in items:
        members[item.group].append(item)

    dropped: list[tuple[MediaItem, str]] = []
    free: dict[str, int] = {}  # groups with no official split
    trainval: dict[str, int] = {}  # groups only known to be outside the official test set
    group_split: dict[str, str] = {}
    for group, group_items in members.items():
        concrete = {i.official_split for i in group_items if i.official_split in _STRICTNESS}
        if concrete:
            group_split[group] = max(concrete, key=_STRICTNESS.__getitem__)
        elif any(i.official_split == "trainval" for i in group_items):
            trainval[group] = len(group_items)
        else:
            free[group] = len(group_items)

    ratios = {"train": config.train, "val": config.val, "test": config.test}
    group_split.update(_ratio_assign(free, ratios, config.seed))
    group_split.update(_ratio_assign(trainval, {"train": config.train, "val": config.val}, config.seed))

    for group, group_items in members.items():
        split = group_split[group]
        for item in group_items:
            own = item.official_split
            if own is None or own == split or (own == "trainval" and split != "test"):
                item.split = split
            else:
                dropped.append(
                    (
                        item,
                        f"dropped by the split guard: official split '{own}' but its identity group {group} "
                        f"is in '{split}'",
                    )
                )
    dropped_ids = {id(item) for item, _ in dropped}
    items[:] = [item for item in items if id(item) not in dropped_ids]
    return dropped


def in_shard(video_id: str, shard: tuple[int, int] | None) -> bool:
    if shard is None:
        return True
    index, count = shard
    return stable_hash("shard", video_id) % count == index


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """'2/8' -> (2, 8); shards are numbered from 0."""
    if text is None:
        return None
    try:
        index_text, count_text = text.split("/")
        index, count = int(index_text), int(count_text)
    except ValueError:
        raise ValueError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from None
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"--shard {text}: need 0 <= i < n")
    return index, count
