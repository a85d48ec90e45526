import random
from collections import defaultdict

import pytest

from fakefinder.config import DatasetConfig, SplitConfig
from fakefinder.faces.layouts import MediaItem, read_dataset
from fakefinder.faces.splits import assign_splits, in_shard, parse_shard


def groups_cross_splits(items) -> dict[str, set[str]]:
    seen = defaultdict(set)
    for item in items:
        seen[item.group].add(item.split)
    return {g: s for g, s in seen.items() if len(s) > 1}


def ffpp_like_items(n_ids: int, seed: int) -> list[MediaItem]:
    """Originals 000..n and fakes A_B and B_A for random pairs (as in FF++), under four methods
    that share file names."""
    rng = random.Random(seed)
    ids = [f"{i:03d}" for i in range(n_ids)]
    items = [MediaItem("ff", None, "real", f"ff:orig/{v}", "original", (f"yt:{v}",)) for v in ids]
    shuffled = ids[:]
    rng.shuffle(shuffled)
    pairs = list(zip(shuffled[::2], shuffled[1::2]))
    for a, b in pairs + [(b, a) for a, b in pairs]:
        for method in ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures"):
            items.append(
                MediaItem("ff", None, "fake", f"ff:{method}/{a}_{b}", method, (f"yt:{a}", f"yt:{b}"))
            )
    return items


@pytest.mark.parametrize("seed", range(5))
def test_no_identity_group_crosses_splits(seed):
    items = ffpp_like_items(60, seed)
    dropped = assign_splits(items, SplitConfig(train=0.7, val=0.15, test=0.15, seed=seed))
    assert dropped == []
    assert groups_cross_splits(items) == {}
    # every fake sits in the split of both of its originals
    split_of = {i.video_id.split("/")[-1]: i.split for i in items if i.label == "real"}
    for fake in (i for i in items if i.label == "fake"):
        a, b = fake.video_id.split("/")[-1].split("_")
        assert fake.split == split_of[a] == split_of[b]
    assert {i.split for i in items} == {"train", "val", "test"}


def test_ratios_are_respected_over_many_groups():
    items = [MediaItem("d", None, "real", f"d:{k}", "original", (f"g{k}",)) for k in range(1000)]
    assign_splits(items, SplitConfig(train=0.8, val=0.1, test=0.1))
    counts = {s: sum(i.split == s for i in items) for s in ("train", "val", "test")}
    assert counts == {"train": 800, "val": 100, "test": 100}


def test_assignment_is_stable_and_seeded():
    def run(seed, extra=0):
        items = [MediaItem("d", None, "real", f"d:{k}", "original", (f"g{k}",)) for k in range(200 + extra)]
        assign_splits(items, SplitConfig(seed=seed))
        return {i.video_id: i.split for i in items}

    assert run(1) == run(1)
    assert run(1) != run(2)


def test_official_split_kept_and_leaking_member_dropped():
    items = [
        MediaItem("c", None, "real", "c:r1", "original", ("celeb:id0_0",), official_split="test"),
        MediaItem("c", None, "fake", "c:f1", "fake", ("celeb:id0_0",), official_split="trainval"),
        MediaItem("c", None, "fake", "c:f2", "fake", ("celeb:id0_0",), official_split=None),
        MediaItem("c", None, "real", "c:r2", "original", ("celeb:id1_0",), official_split="trainval"),
    ]
    dropped = assign_splits(items, SplitConfig(train=0.5, val=0.0, test=0.5))
    assert [(i.video_id, "split guard" in reason) for i, reason in dropped] == [("c:f1", True)]
    splits = {i.video_id: i.split for i in items}
    assert splits == {"c:r1": "test", "c:f2": "test", "c:r2": "train"}  # trainval never lands in test
    assert groups_cross_splits(items) == {}


def test_real_layouts_split_without_leaks(trees):
    for layout in ("ffpp", "dfdc", "celebdf", "csv"):
        items = read_dataset(DatasetConfig(name=layout, layout=layout, root=trees[layout]))
        assign_splits(items, SplitConfig(train=0.5, val=0.25, test=0.25))
        assert groups_cross_splits(items) == {}, layout


def test_shards_partition_the_items():
    ids = [f"x:{k}" for k in range(500)]
    owners = [[s for s in range(4) if in_shard(v, (s, 4))] for v in ids]
    assert all(len(o) == 1 for o in owners)
    assert all(in_shard(v, None) for v in ids)
    assert parse_shard("3/8") == (3, 8)
    for bad in ("8/8", "x", "1/0", "-1/3"):
        with pytest.raises(ValueError, match="shard"):
            parse_shard(bad)
