import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import cli, make_crops, torchrun_train, train_config
from fakefinder.api import train
from fakefinder.config import ConfigError, config_from_dict, load_config
from fakefinder.core.checkpoint import load_checkpoint
from fakefinder.faces.manifest import read_manifest
from fakefinder.faces.truth import difference_mask
from fakefinder.faces.truth import source_partners as mask_partners
from fakefinder.synthetic import identity_face
from fakefinder.tasks.classification.augment import (
    build_train_transform,
    face_mask,
    self_blend,
)
from fakefinder.tasks.classification.data import (
    CropDataset,
    EpochSampler,
    opencv_single_threaded,
)
from fakefinder.tasks.classification.optim import Schedule


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return make_crops(tmp_path_factory.mktemp("crops"), groups=10, datasets=("a", "b"))


def test_training_writes_checkpoints_logs_plots_and_config(manifest, tmp_path):
    config = train_config(
        manifest,
        tmp_path / "run",
        loss={"ce": 0.5, "focal": 0.3, "f1": 0.2},
        ema=0.9,
        trackers=["tensorboard"],
        plots=True,
    )
    result = train(config)
    out = tmp_path / "run"
    for name in (
        "model/model.json",
        "model/model.safetensors",
        "last.pt",
        "config.yaml",
        "history.jsonl",
        "history.csv",
        "curves.png",
    ):
        assert (out / name).is_file(), name
    assert not (out / "best.pt").exists()  # the selected weights live in the artifact only
    assert list((out / "tensorboard").iterdir())
    assert len(result.history) == 2 and result.stopped == "completed"
    state = load_checkpoint(out / "last.pt")
    assert {
        "model",
        "optimizer",
        "schedule",
        "scaler",
        "ema",
        "epoch",
        "step_in_epoch",
        "global_step",
        "rng",
        "config",
        "class_names",
        "threshold",
        "model_info",
    } <= set(state)
    assert state["class_names"] == ["real", "fake"]
    assert state["epoch"] == 2 and state["global_step"] == result.steps
    assert 0.0 <= state["threshold"] <= 1.0
    row = result.history[-1]
    assert {
        "train_loss",
        "train_loss_ce",
        "train_loss_focal",
        "train_loss_f1",
        "val_loss",
        "val_auc",
        "val_macro_f1",
        "lr",
        "data_wait_pct",
        "cpu_pct",
        "ram_gb",
    } <= set(row)
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["train"]["loss"] == {"ce": 0.5, "focal": 0.3, "f1": 0.2}


def folder_state(folder: Path) -> list:
    return sorted((p.relative_to(folder), p.stat().st_mtime_ns, p.stat().st_size) for p in folder.rglob("*"))


def test_a_rerun_into_a_finished_run_is_refused_until_told_to_overwrite(manifest, tmp_path):
    from fakefinder.core.runlock import RunFolderError

    config = train_config(manifest, tmp_path / "run", epochs=1)
    train(config)
    before = folder_state(tmp_path / "run")
    with pytest.raises(
        RunFolderError,
        match=r"already holds a training run \(.*last\.pt.*\)\. Choose: --resume to "
        r"continue it, --overwrite to replace it, or a new output folder",
    ):
        train(config)
    done = cli(
        "train",
        f"train.manifest={manifest}",
        f"train.output_dir={tmp_path / 'run'}",
        "model.name=test_efficientnet",
    )
    assert done.returncode == 2 and "--overwrite" in done.stderr
    assert folder_state(tmp_path / "run") == before  # nothing was touched
    again = train(config, overwrite=True)
    assert again.stopped == "completed" and folder_state(tmp_path / "run") != before


def test_warmup_then_cosine_schedule():
    config = config_from_dict({"train": {"epochs": 10, "lr": 1e-3, "min_lr": 1e-5, "warmup_epochs": 2}}).train
    schedule = Schedule(config, steps_per_epoch=10)
    factors = [schedule.factor(s) for s in range(100)]
    assert factors[0] == pytest.approx(0.05) and factors[19] == pytest.approx(1.0)
    assert all(b > a for a, b in zip(factors[:19], factors[1:20]))  # linear warmup
    assert all(b <= a + 1e-12 for a, b in zip(factors[20:], factors[21:]))  # then only down
    assert factors[-1] == pytest.approx(0.01, abs=2e-3)  # towards min_lr / lr
    step = Schedule(
        config_from_dict(
            {"train": {"scheduler": "step", "step_epochs": 3, "gamma": 0.5, "warmup_epochs": 0}}
        ).train,
        10,
    )
    assert [step.factor(s) for s in (0, 29, 30, 60)] == [1.0, 1.0, 0.5, 0.25]
    plateau = Schedule(
        config_from_dict({"train": {"scheduler": "plateau", "gamma": 0.5, "warmup_epochs": 0}}).train, 10
    )
    for value in (0.5, 0.6, 0.6, 0.6):
        plateau.epoch_end(value, higher_is_better=True)
    assert plateau.factor(100) == 0.5


def test_lr_follows_the_schedule_during_training(manifest, tmp_path):
    result = train(train_config(manifest, tmp_path / "run", scheduler="constant", warmup_epochs=0, lr=5e-4))
    assert all(row["lr"] == pytest.approx(5e-4) for row in result.history)


def test_early_stopping(manifest, tmp_path):
    # with lr ~ 0 the weights stay put, so improvements stop soon
    config = train_config(
        manifest,
        tmp_path / "run",
        epochs=8,
        lr=1e-12,
        min_lr=0,
        warmup_epochs=0,
        early_stopping={"metric": "loss", "patience": 2},
    )
    result = train(config)
    assert result.stopped == "early_stopping"
    assert len(result.history) == result.best_epoch + 2 < 8
    assert [r["epoch"] for r in result.history if r["is_best"]][-1] == result.best_epoch
    best = json.loads((tmp_path / "run" / "model" / "model.json").read_text())
    assert (
        best["training"]["best_epoch"] == result.best_epoch
        and best["threshold"] == result.details["threshold"]
    )


def test_sampler_balances_datasets_and_classes_and_splits_ranks():
    labels = np.array([0] * 90 + [1] * 10 + [0] * 5 + [1] * 5)
    datasets = ["a"] * 100 + ["b"] * 10
    sampler = EpochSampler(labels, datasets, "balanced", epoch_size=8000, seed=1)
    rows = [r for r, _ in sampler.order()]
    cells = {(datasets[r], labels[r]) for r in rows}
    counts = {cell: sum((datasets[r], labels[r]) == cell for r in rows) for cell in cells}
    assert all(1700 < c < 2300 for c in counts.values()), counts
    ranks = [EpochSampler(labels, datasets, "balanced", 100, 1, rank=r, world=2).order() for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 50
    assert [x for pair in zip(*ranks) for x in pair] == EpochSampler(
        labels, datasets, "balanced", 100, 1
    ).order()
    sampler.set_epoch(3, start=10)
    assert list(sampler) == sampler.order()[10:]
    shuffle = EpochSampler(labels, datasets, "shuffle", seed=0).order()
    assert sorted(r for r, _ in shuffle) == list(range(110))


def test_paired_sampler_keeps_identity_groups_together():
    groups = [g for g in "aabbbccdde"]
    labels = [0, 1, 0, 1, 1, 0, 1, 0, 1, 0]
    order = [row for row, _ in EpochSampler(labels, ["x"] * 10, "paired", seed=3, groups=groups).order()]
    assert sorted(order) == list(range(10))
    runs = [groups[i] for i in order]
    assert [g for i, g in enumerate(runs) if i == 0 or g != runs[i - 1]] == sorted(set(runs), key=runs.index)
    again = [row for row, _ in EpochSampler(labels, ["x"] * 10, "paired", seed=3, groups=groups).order()]
    assert order == again  # deterministic in (seed, epoch)
    ranks = [
        [
            r
            for r, _ in EpochSampler(
                labels, ["x"] * 10, "paired", seed=3, rank=k, world=2, groups=groups
            ).order()
        ]
        for k in (0, 1)
    ]
    assert len(ranks[0]) == len(ranks[1]) == 5
    assert not {groups[i] for i in ranks[0]} & {groups[i] for i in ranks[1]}  # a group never spans ranks
    with pytest.raises(ValueError, match="group"):
        EpochSampler(labels, ["x"] * 10, "paired")


def test_mirror_tta_averages_both_views_and_reaches_checkpoint_scoring(manifest, tmp_path):
    import torch

    from fakefinder.tasks.classification.networks import MirrorAverage, with_tta
    from fakefinder.tasks.classification.scoring import load_detector

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 5, 1), torch.nn.Flatten(0))
    x = torch.randn(2, 3, 4, 5)
    assert torch.allclose(with_tta(net, "hflip")(x), (net(x) + net(torch.flip(x, dims=[3]))) / 2)
    assert with_tta(net, "none") is net
    config = train_config(manifest, tmp_path / "run", epochs=1, sampler="paired")
    config.model.tta = "hflip"
    result = train(config)
    detector = load_detector(result.artifact)
    assert isinstance(detector.model, MirrorAverage)


def test_augmentations_are_seeded_per_sample(manifest):
    frame = read_manifest(manifest)
    config = config_from_dict({}).augment
    dataset = CropDataset(
        frame[frame.split == "train"],
        manifest.parent,
        32,
        (0.5,) * 3,
        (0.5,) * 3,
        build_train_transform(config),
    )
    a, _ = dataset[(0, 123)]
    b, _ = dataset[(0, 123)]
    c, _ = dataset[(0, 999)]
    plain, _ = dataset[0]
    assert torch.equal(a, b)
    assert not torch.equal(a, c) or not torch.equal(a, plain)


class _OpenCvThreads(torch.utils.data.Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, index):
        import cv2

        return cv2.getNumThreads()


def test_loader_workers_run_opencv_on_one_thread_without_deadlock():
    import cv2

    before = cv2.getNumThreads()
    cv2.setNumThreads(2)  # as on a 2-core machine: each forked worker would inherit this
    try:
        cv2.GaussianBlur(np.zeros((2000, 2000), np.float32), (0, 0), 5)  # this process's pool is running
        plain = list(torch.utils.data.DataLoader(_OpenCvThreads(), num_workers=1, timeout=60))
        with opencv_single_threaded():
            batches = iter(torch.utils.data.DataLoader(_OpenCvThreads(), num_workers=1, timeout=60))
        assert cv2.getNumThreads() == 2  # restored at once: training keeps its own setting
        pinned = list(batches)
    finally:
        cv2.setNumThreads(before)
    assert [int(t) for t in plain] == [2, 2]
    assert [int(t) for t in pinned] == [1, 1]


def test_self_blended_pseudo_fakes():
    real = identity_face(3)
    rng = np.random.default_rng(0)
    mask = face_mask(real.shape[:2], np.random.default_rng(0))
    assert 0.05 < mask.mean() < 0.5 and mask.max() > 0.99 and mask[0, 0] < 0.01
    blended = self_blend(real, rng)
    assert blended.shape == real.shape and blended.dtype == np.uint8
    changed = np.abs(blended.astype(int) - real.astype(int)).sum(axis=2) > 0
    height, width = changed.shape
    assert changed[height // 2 - 10 : height // 2 + 10, width // 2 - 10 : width // 2 + 10].mean() > 0.5
    assert changed[:5, :5].mean() == 0 and changed[-5:, -5:].mean() == 0  # corners untouched
    assert np.array_equal(
        self_blend(real, np.random.default_rng(7)), self_blend(real, np.random.default_rng(7))
    )


def test_difference_masks_find_the_swapped_region_and_follow_augmentation(manifest):
    real, fake = identity_face(5), identity_face(5, fake=True)
    mask = difference_mask(fake, real)
    height, width = mask.shape
    assert mask[int(0.47 * height), width // 2] > 0.9  # the blended inner face
    assert mask[:10, :10].max() < 0.05 and mask[-10:, -10:].max() < 0.05  # untouched corners
    with pytest.raises(ValueError, match="one size"):
        difference_mask(fake, real[:-2])

    frame = read_manifest(manifest)
    rows = frame[frame.split == "train"].reset_index(drop=True)
    partners = mask_partners(rows)
    for i, partner in enumerate(partners):
        if rows.label[i] == "real":
            assert partner == -1
        else:
            assert rows.label[partner] == "real" and rows.group[partner] == rows.group[i]
    orphan = rows.drop(index=int(partners[rows.index[rows.label == "fake"][0]])).reset_index(drop=True)
    assert (mask_partners(orphan) == -1).sum() == (orphan.label == "real").sum() + 1

    flip = config_from_dict(
        {
            "augment": {
                "hflip": 1.0,
                "rotate": 0,
                "jpeg": 0,
                "blur": 0,
                "color_jitter": 0,
                "downscale": 0,
                "cutout": 0,
            }
        }
    ).augment
    plain = CropDataset(rows, manifest.parent, 48, (0.5,) * 3, (0.5,) * 3, masks=True)
    flipped = CropDataset(
        rows, manifest.parent, 48, (0.5,) * 3, (0.5,) * 3, build_train_transform(flip), masks=True
    )
    fake = int(np.flatnonzero(rows.label == "fake")[0])
    image, label, target, valid = plain[(fake, 1)]
    assert label == 1 and valid == 1 and target.shape == (1, 6, 6)
    assert target.max() > 0.2 and target[0, 0].max() == target[0, :, 0].max() == 0  # the face, not the border
    image_f, _, target_f, _ = flipped[(fake, 1)]
    assert torch.allclose(target_f, torch.flip(target, dims=[2]), atol=1e-5)
    assert torch.allclose(image_f, torch.flip(image, dims=[2]), atol=1e-5)
    real = int(np.flatnonzero(rows.label == "real")[0])
    assert plain[(real, 1)][2].max() == 0 and plain[(real, 1)][3] == 1
    lonely = CropDataset(orphan, manifest.parent, 48, (0.5,) * 3, (0.5,) * 3, masks=True)
    no_partner = int(np.flatnonzero((mask_partners(orphan) == -1) & (orphan.label == "fake").to_numpy())[0])
    assert lonely[(no_partner, 1)][3] == 0  # unknown mask: left out of the mask loss
    sbi = CropDataset(rows, manifest.parent, 48, (0.5,) * 3, (0.5,) * 3, sbi=1.0, masks=True)
    _, label, target, valid = sbi[(real, 1)]
    assert label == 1 and valid == 1 and target.max() > 0.3  # the self-blend's own mask


def test_mask_supervision_trains_and_reloads(manifest, tmp_path):
    from fakefinder.tasks.classification.scoring import load_detector

    config = train_config(manifest, tmp_path / "run", epochs=1, mask_loss=0.5)
    assert config.model.mask_head  # switched on by the mask loss
    result = train(config)
    assert all(np.isfinite(row["train_loss_mask"]) and row["train_loss_mask"] > 0 for row in result.history)
    detector = load_detector(result.artifact)
    assert detector.info["mask_head"] and detector.model.mask_head is not None


def test_mask_head_on_a_middle_stage_trains_and_reloads(manifest, tmp_path):
    from fakefinder.tasks.classification.scoring import load_detector

    config = train_config(manifest, tmp_path / "run", epochs=1, mask_loss=0.5)
    config.model.mask_stride = 16
    result = train(config)
    detector = load_detector(result.artifact)
    assert detector.info["mask_stride"] == 16
    image = torch.zeros(1, 3, 32, 32)
    logit, mask = detector.model(image, return_mask=True)
    assert mask.shape[-2:] == (2, 2)  # 32 px / 16, where the last map is 1 x 1
    assert torch.allclose(logit, detector.model(image))
    config.model.mask_stride = 64
    before = folder_state(tmp_path / "run")
    with pytest.raises(ValueError, match=r"mask_stride=64: .* strides: \[2, 4, 8, 16, 32\]"):
        train(config, overwrite=True)
    assert folder_state(tmp_path / "run") == before  # a bad config never costs the run it would replace


def test_sbi_trains_on_reals_only(manifest, tmp_path):
    config = train_config(manifest, tmp_path / "run", epochs=1)
    config.augment.sbi_reals_only = True
    config.augment.sbi = 0.5
    from fakefinder.engine.run import Run
    from fakefinder.tasks import get_task
    from fakefinder.tasks.classification.train import RUN_FILES, Trainer
    from fakefinder.tasks.deepfake_detector.data import train_data

    with Run(get_task(config.task), config, RUN_FILES, "a training run") as run:
        trainer = Trainer(run, train_data(config))
        trainer.setup()
        assert set(trainer.train_set.labels) == {0}  # only real crops are read...
        labels = [trainer.train_set[key][1].item() for key in trainer.sampler.order()[:40]]
        assert 0 < sum(labels) < 40  # ...and about half become self-blended fakes
        assert trainer.fit().stopped == "completed"


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("train.lr=-0.1", "train.lr"),
        ("train.loss={ce: 1, dice: 1}", "dice"),
        ("train.optimizer=adam", "train.optimizer"),
    ],
)
def test_bad_config_values(override, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_config(None, [override])


def test_cli_unknown_model_lists_close_names(manifest, tmp_path):
    done = cli(
        "train", f"train.manifest={manifest}", f"train.output_dir={tmp_path}", "model.name=convnext_tinny"
    )
    assert done.returncode == 2
    assert "unknown model 'convnext_tinny'" in done.stderr and "convnext_tiny" in done.stderr


def run_config_file(manifest, tmp_path, **train):
    config = train_config(manifest, tmp_path / "run", **train)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    return path


def wait_for_step(path: Path, step: int, process, timeout: float = 180) -> int:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise AssertionError("the run ended before it could be interrupted")
        if path.is_file():
            try:
                found = load_checkpoint(path)["global_step"]
            except Exception:  # noqa: BLE001 - being replaced right now
                found = -1
            if found >= step:
                return found
        time.sleep(0.05)
    raise AssertionError("no checkpoint appeared")


def test_resume_after_kill_mid_epoch_matches_uninterrupted_run(manifest, tmp_path):
    settings = dict(epochs=2, batch_size=2, save_steps=1, num_workers=1, ema=0.9)
    reference = train(train_config(manifest, tmp_path / "reference", **settings))
    cfg = run_config_file(manifest, tmp_path, **settings)
    process = subprocess.Popen(
        [sys.executable, "-m", "fakefinder", "train", "-c", str(cfg)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    steps_per_epoch = reference.steps // 2
    killed_at = wait_for_step(tmp_path / "run" / "last.pt", 3, process)
    from fakefinder.core.runlock import RunFolderError

    try:  # this test's own process is a second one on the live run's folder
        with pytest.raises(
            RunFolderError, match=f"is in use: fakefinder train \\(deepfake_detector\\) \\(pid {process.pid} "
        ):
            train(load_config(cfg), resume=True)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert 0 < state["step_in_epoch"] < steps_per_epoch or state["epoch"] == 1, "killed mid-epoch"
    assert killed_at < reference.steps

    assert (tmp_path / "run" / ".train.lock").is_file()  # the killed owner could not remove it
    resumed = cli("train", "-c", str(cfg), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "cleared a stale lock" in resumed.stderr and not (tmp_path / "run" / ".train.lock").exists()
    final = load_checkpoint(tmp_path / "run" / "last.pt")
    expected = load_checkpoint(tmp_path / "reference" / "last.pt")
    assert final["global_step"] == expected["global_step"]
    for key, value in expected["model"].items():
        assert torch.equal(final["model"][key], value), key
    for key, value in expected["ema"]["module"].items():
        assert torch.equal(final["ema"]["module"][key], value), key
    assert final["history"][-1]["val_auc"] == expected["history"][-1]["val_auc"]
    assert final["threshold"] == expected["threshold"]


def test_ctrl_c_saves_and_exits_cleanly_then_backup_restores(manifest, tmp_path):
    backup = tmp_path / "backup"
    cfg = run_config_file(manifest, tmp_path, epochs=50, batch_size=2, backup_dir=str(backup))
    process = subprocess.Popen(
        [sys.executable, "-m", "fakefinder", "train", "-c", str(cfg)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_step(tmp_path / "run" / "last.pt", 1, process)  # first epoch done: backup exists
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    interrupted = load_checkpoint(tmp_path / "run" / "last.pt")
    assert (backup / "last.pt").is_file()
    # the working folder is lost; the run comes back from the backup
    (tmp_path / "run" / "last.pt").unlink()
    shutil.rmtree(tmp_path / "run" / "model")
    config = load_config(cfg, ["train.epochs=" + str(interrupted["epoch"] + 1)])
    result = train(config, resume=True)
    assert result.history[: len(interrupted["history"])] == interrupted["history"]
    assert result.steps > interrupted["global_step"]


def test_ddp_on_two_cpu_processes_stops_on_sigterm_together_and_resumes(manifest, tmp_path):
    """torchrun passes the SIGTERM on to both processes (the platform's stop): they agree on the step,
    save it together and leave; the resumed run finishes as asked."""
    cfg = run_config_file(manifest, tmp_path, epochs=40, batch_size=2)
    launcher = torchrun_train(cfg, 29531, wait=False)
    wait_for_step(tmp_path / "run" / "last.pt", 6, launcher)  # the first epoch is saved
    launcher.send_signal(signal.SIGTERM)
    launcher.wait(timeout=120)
    stderr = (tmp_path / "torchrun.log").read_text()
    stopped = load_checkpoint(tmp_path / "run" / "last.pt")
    assert "interrupted: saved" in stderr, stderr[-3000:]
    assert stopped["world_size"] == 2 and len(stopped["rng"]) == 2 and stopped["global_step"] >= 6
    # each process takes half of every epoch's 24 draws: 12 rows / batch 2 = 6 steps per epoch
    epochs = stopped["epoch"] + 2
    done = torchrun_train(cfg, 29532, "--resume", "train.epochs=" + str(epochs))  # a fresh store
    assert done.returncode == 0, done.stderr[-3000:]
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert state["global_step"] == epochs * 6 and len(state["history"]) == epochs
    assert state["history"][: len(stopped["history"])] == stopped["history"]
    assert state["history"][-1]["val_auc"] is not None


def test_clipping_bites_on_this_model(manifest, tmp_path):
    """The norm the trainer logs is the one before clipping, and this tiny network's gradient norms are
    far above 0.5: a 0.5 clip (here, and as DeepSpeed's `gradient_clipping`) really clips."""
    seen = []
    config = train_config(
        manifest, tmp_path / "run", epochs=1, max_steps=2, grad_clip=0.5, logging_steps=1, optimizer="sgd"
    )
    train(config, events=seen.append)
    norms = [e.data["grad_norm"] for e in seen if e.type == "metrics" and "grad_norm" in e.data]
    assert norms and min(norms) > 1.0, norms


def test_engine_options_run_together(manifest, tmp_path):
    """SGD + step schedule + accumulation + class weights + checkpointing + channels_last + bf16."""
    config = train_config(
        manifest,
        tmp_path / "run",
        epochs=1,
        optimizer="sgd",
        scheduler="step",
        accumulate=2,
        class_weights=True,
        grad_checkpointing=True,
        channels_last=True,
        precision="bf16",
        grad_clip=0.5,
        sampler="shuffle",
    )
    result = train(config)
    assert result.stopped == "completed" and result.steps == (24 // 4) // 2
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.dtype.is_floating_point)
    with pytest.raises(ConfigError, match="train.precision=fp16 needs a CUDA GPU"):
        train(train_config(manifest, tmp_path / "fp16", precision="fp16", device="cpu"))


def test_train_prepares_the_datasets_when_no_manifest_exists(trees, tmp_path):
    """A config with datasets and no manifest yet is prepared, then trained: by the CLI and by the
    Python API alike (and so by a platform job)."""
    from conftest import make_config

    config = make_config(
        tmp_path / "prepared",
        [{"name": "f", "layout": "folder", "root": str(trees["folder"])}],
        data={"split": {"train": 0.5, "val": 0.5, "test": 0.0}},
    )
    config.model.name, config.model.image_size = "test_efficientnet", 32
    config.train.output_dir, config.train.epochs, config.train.batch_size = tmp_path / "run", 1, 2
    config.train.num_workers = 0
    config.train.trackers = []
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    done = cli("train", "-c", str(path))
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "prepared" / "manifest.csv").is_file()
    assert (tmp_path / "run" / "model" / "model.json").is_file()
    config.prepare.output_dir, config.train.output_dir = tmp_path / "prepared-api", tmp_path / "run-api"
    events = []
    assert train(config, events=events.append).artifact == tmp_path / "run-api" / "model"
    assert (tmp_path / "prepared-api" / "manifest.csv").is_file()
    assert any("preparing the datasets first" in e.message for e in events)


def test_deepspeed_on_two_cpu_processes_stops_resumes_and_matches_ddp(manifest, tmp_path):
    """The same config through DDP and through DeepSpeed ZeRO-2 (2 gloo processes; gradients and
    optimizer state split), the ZeRO-2 run stopped after an epoch and resumed, trains the same weights
    and EMA. (SGD: Adam's normalised steps would blow float-rounding differences in near-zero gradients
    up to +-lr.) What DeepSpeed is told of
    accumulation and clipping is checked without a launch (test_deepspeed_config_errors_name_the_key),
    that clipping bites on this network in test_clipping_bites_on_this_model."""
    import deepspeed  # noqa: F401  (installed by the set-up)

    # a constant lr, so that stopping at max_steps does not reshape the schedule of the stopped run
    settings = dict(
        epochs=2,
        batch_size=2,
        grad_clip=None,
        ema=0.9,
        optimizer="sgd",
        lr=0.05,
        scheduler="constant",
        warmup_epochs=0,
    )

    def run(name: str, port: int, *args: str, **extra) -> dict:
        folder = tmp_path / name
        folder.mkdir(exist_ok=True)
        done = torchrun_train(run_config_file(manifest, folder, **{**settings, **extra}), port, *args)
        assert done.returncode == 0, done.stderr[-3000:]
        return load_checkpoint(folder / "run" / "last.pt")

    def largest_difference(a: dict, b: dict) -> float:
        return max(
            float((a["model"][n] - b["model"][n]).abs().max())
            for n in a["model"]
            if not n.endswith(("running_mean", "running_var", "num_batches_tracked"))
        )

    ddp = run("ddp", 29536)
    stopped = run("zero2", 29540, deepspeed="zero2", max_steps=6)  # stops after epoch 1
    assert stopped["global_step"] == 6 and stopped["epoch"] == 1
    final = run("zero2", 29541, "--resume", "train.max_steps=null", deepspeed="zero2", max_steps=6)
    assert final["optimizer"] is None and final["deepspeed"] == f"last-step{final['global_step']}"
    assert final["global_step"] == ddp["global_step"] == 2 * 6  # 12 rows per process / batch 2
    assert largest_difference(stopped, final) > 1e-4  # the resumed steps moved the weights
    # the resumed ZeRO-2 run reaches the weights (and EMA) the uninterrupted DDP run trained: a resume
    # that lost the optimizer's state, the data order or the EMA would land far from them
    assert largest_difference(final, ddp) < 1e-5
    for key, value in ddp["ema"]["module"].items():
        if value.dtype.is_floating_point:
            torch.testing.assert_close(final["ema"]["module"][key], value, rtol=0, atol=1e-5)
    # only the optimizer states the checkpoints name are kept
    tags = {p.name for p in (tmp_path / "zero2" / "run" / "deepspeed").iterdir() if p.is_dir()}
    assert tags == set(final["deepspeed_tags"].values()) and final["deepspeed"] in tags

    # DeepSpeed unpickles its own files freely: each is read safely first, so a crafted one is refused
    from fakefinder.core.checkpoint import CheckpointError
    from fakefinder.engine import deepspeed_zero

    tag = tmp_path / "zero2" / "run" / "deepspeed" / final["deepspeed"]
    deepspeed_zero.vet(tag)  # what DeepSpeed really writes passes
    marker = tmp_path / "ran"
    crafted = tmp_path / "crafted"
    shutil.copytree(tag, crafted)

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    torch.save({"optimizer_state_dict": Payload()}, crafted / "zero_pp_rank_0_mp_rank_00_optim_states.pt")
    with pytest.raises(CheckpointError, match="refused to load .*optim_states.pt"):
        deepspeed_zero.vet(crafted)
    assert not marker.exists()


def test_deepspeed_config_errors_name_the_key(tmp_path):
    from fakefinder.engine.deepspeed_zero import deepspeed_config

    def train_section(**values):
        return config_from_dict(
            {"train": {"batch_size": 8, "accumulate": 2, "grad_clip": 1.0, **values}}
        ).train

    made = deepspeed_config(train_section(deepspeed="zero1"))
    assert made["zero_optimization"]["stage"] == 1
    assert (
        made["train_micro_batch_size_per_gpu"],
        made["gradient_accumulation_steps"],
        made["gradient_clipping"],
    ) == (8, 2, 1.0)
    cases = [
        ({"zero_optimization": {"stage": 3}}, "stage=3"),
        ({"optimizer": {"type": "Adam"}}, "remove `optimizer`"),
        ({"bf16": {"enabled": True}}, "remove `bf16`"),
        ({"train_micro_batch_size_per_gpu": 16}, "train_micro_batch_size_per_gpu=16"),
        ({"zero_optimization": {"stage": 2}}, "ZeRO-2 with train.accumulate=2"),
    ]
    for body, fragment in cases:
        path = tmp_path / "ds.json"
        path.write_text(json.dumps(body))
        with pytest.raises(ConfigError, match=fragment) as error:
            deepspeed_config(train_section(deepspeed=str(path)))
        assert str(path) in str(error.value)
    path.write_text('{"zero_optimization": {"stage": 1},\n "gradient_clipping": "auto",\n}')
    with pytest.raises(ConfigError, match="line 3"):
        deepspeed_config(train_section(deepspeed=str(path)))
    path.write_text(
        json.dumps(
            {"bf16": {"enabled": False}, "gradient_clipping": "auto", "zero_optimization": {"stage": 1}}
        )
    )
    assert deepspeed_config(train_section(deepspeed=str(path)))["gradient_clipping"] == 1.0
    for value, fragment in (("zero3", "zero3"), ("missing.json", "missing.json")):
        with pytest.raises(ConfigError, match=fragment):
            deepspeed_config(train_section(deepspeed=value))
    with pytest.raises(ConfigError, match="fp16"):
        deepspeed_config(train_section(deepspeed="zero1", precision="fp16"))


def test_train_reports_through_events_and_leaves_the_callers_process_as_it_was(manifest, tmp_path):
    """Run from a worker thread (as a server would): no signal handler, no print, and the caller's
    RNG, threads, denormal mode, environment and signal handlers are as they were."""
    import io
    import threading

    import cv2
    from rich.console import Console

    from fakefinder.core.process import _flushing_denormals
    from fakefinder.render import RichRenderer

    train(
        train_config(manifest, tmp_path / "warm-up", epochs=1), events=lambda e: None
    )  # libraries' own import-time
    events, outcome = [], {}  # settings happen here
    before = (
        torch.get_rng_state(),
        np.random.get_state()[1].copy(),
        torch.get_num_threads(),
        cv2.getNumThreads(),
        _flushing_denormals(),
        dict(os.environ),
        signal.getsignal(signal.SIGINT),
    )

    def run():
        try:
            outcome["result"] = train(
                train_config(manifest, tmp_path / "run", epochs=2), events=events.append
            )
        except BaseException as exc:  # noqa: BLE001 - reported below
            outcome["error"] = exc

    worker = threading.Thread(target=run)
    worker.start()
    worker.join(timeout=300)
    assert "error" not in outcome, outcome.get("error")
    after = (
        torch.get_rng_state(),
        np.random.get_state()[1].copy(),
        torch.get_num_threads(),
        cv2.getNumThreads(),
        _flushing_denormals(),
        dict(os.environ),
        signal.getsignal(signal.SIGINT),
    )
    assert (
        torch.equal(before[0], after[0]) and np.array_equal(before[1], after[1]) and before[2:] == after[2:]
    )
    kinds = {(e.type, e.stage.split()[0]) for e in events}
    assert {
        ("stage", "epoch"),
        ("progress", "epoch"),
        ("end", "epoch"),
        ("metrics", "train"),
        ("metrics", "val"),
        ("result", "train"),
    } <= kinds
    steps = [e for e in events if e.type == "progress"]
    assert steps[-1].step == steps[-1].total and all(e.eta_s is not None and e.eta_s >= 0 for e in steps)
    rows = [
        e for e in events if e.type == "metrics" and e.stage == "val"
    ]  # one per epoch, as history holds them
    history = outcome["result"].history
    assert [(e.step, e.data["epoch"]) for e in rows] == [(r["global_step"], r["epoch"]) for r in history]
    assert [{k: v for k, v in e.data.items() if k not in ("step", "epochs")} for e in rows] == [
        {k: v for k, v in r.items() if k != "global_step"} for r in history
    ]
    assert json.dumps([e.to_dict() for e in events])  # plain data
    screen = io.StringIO()
    with RichRenderer(Console(file=screen, width=200)) as renderer:
        for event in events:
            renderer(event)
    text = screen.getvalue()
    assert "epoch 1 | train loss" in text and "macro-F1" in text and "training history" in text
