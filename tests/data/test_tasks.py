"""Few-shot task samplers on the real Omniglot: determinism, shapes, labels, rotations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metasuite.config import ExperimentConfig, replace
from metasuite.data.batch import TaskBatch
from metasuite.data.folders import SplitData
from metasuite.data.tasks import FewShotTasks, TaskSampler, train_indices
from metasuite.errors import DatasetError

SPLITS = ("train", "val", "test")


def _same(a: TaskBatch, b: TaskBatch) -> bool:
    return (
        a.task_ids == b.task_ids
        and torch.equal(a.support_x, b.support_x)
        and torch.equal(a.query_x, b.query_x)
        and torch.equal(a.support_y, b.support_y)
        and torch.equal(a.query_y, b.query_y)
    )


def _expected_pixels(sampler: TaskSampler, index: int) -> torch.Tensor:
    """Task ``index`` rebuilt by hand from its plan: [N, K+Q, C, H, W] float32."""
    plan = sampler.plan(index)
    out = []
    for cls_rows, k in zip(plan.images, plan.rotations, strict=True):
        images = sampler.data.images[torch.from_numpy(cls_rows)].float() / 255
        out.append(torch.rot90(images, int(k), dims=(-2, -1)))
    return torch.stack(out)


@pytest.fixture(scope="module")
def rebuilt_tasks(omniglot_config: ExperimentConfig) -> FewShotTasks:
    """A second, separately built FewShotTasks (from the image cache)."""
    return FewShotTasks.from_config(omniglot_config, quiet=True)


@pytest.mark.parametrize("split", SPLITS)
def test_task_i_is_the_same_from_two_separately_built_samplers(
    omniglot_tasks: FewShotTasks, rebuilt_tasks: FewShotTasks, split: str
) -> None:
    a, b = omniglot_tasks.sampler(split), rebuilt_tasks.sampler(split)
    assert a is not b
    indices = [0, 1, 7, 123_456, 10**9]
    assert _same(a.batch(indices), b.batch(indices))


def test_a_task_does_not_depend_on_its_batch(omniglot_tasks: FewShotTasks) -> None:
    sampler = omniglot_tasks.train
    together = sampler.batch([5, 6, 7])
    for row, index in enumerate([5, 6, 7]):
        alone = sampler.task(index)
        assert _same(together.select([row]), alone)
    reordered = sampler.batch([7, 5])
    assert _same(reordered.select([1]), sampler.task(5))


def test_different_tasks_differ(omniglot_tasks: FewShotTasks) -> None:
    plans = [omniglot_tasks.train.plan(i) for i in range(50)]
    assert len({tuple(p.classes) for p in plans}) == 50
    val0, test0 = omniglot_tasks.val.plan(0), omniglot_tasks.test.plan(0)
    assert not np.array_equal(val0.images, test0.images)


def test_train_seed_changes_train_tasks_only(omniglot_config: ExperimentConfig) -> None:
    base = FewShotTasks.from_config(omniglot_config, quiet=True)
    other = FewShotTasks.from_config(replace(omniglot_config, train_seed=1), quiet=True)
    assert not _same(base.train.batch([0, 1]), other.train.batch([0, 1]))
    assert _same(base.val.batch([0, 1]), other.val.batch([0, 1]))
    assert _same(base.test.batch([0, 1]), other.test.batch([0, 1]))
    test_seed = FewShotTasks.from_config(replace(omniglot_config, test_seed=5), quiet=True)
    assert not _same(base.test.batch([0, 1]), test_seed.test.batch([0, 1]))
    assert _same(base.val.batch([0, 1]), test_seed.val.batch([0, 1]))


@pytest.mark.parametrize(("ways", "shots", "queries"), [(5, 1, 1), (20, 5, 15), (3, 2, 4)])
def test_shapes_dtypes_and_label_balance(
    omniglot_tasks: FewShotTasks, ways: int, shots: int, queries: int
) -> None:
    sampler = TaskSampler(
        omniglot_tasks.train.data, split="train", seed=0, ways=ways, shots=shots,
        queries=queries, rotate=True,
    )  # fmt: skip
    batch = sampler.batch(range(4))
    assert batch.support_x.shape == (4, ways * shots, 1, 28, 28)
    assert batch.query_x.shape == (4, ways * queries, 1, 28, 28)
    assert batch.support_x.dtype == batch.query_x.dtype == torch.float32
    assert batch.support_y.dtype == batch.query_y.dtype == torch.int64
    assert batch.support_y.shape == (4, ways * shots) and batch.query_y.shape == (4, ways * queries)
    assert float(batch.support_x.min()) >= 0.0 and float(batch.support_x.max()) <= 1.0
    assert len(batch) == 4 and batch.task_ids == (0, 1, 2, 3)
    for t in range(4):
        assert torch.equal(
            torch.bincount(batch.support_y[t], minlength=ways), torch.full((ways,), shots)
        )
        assert torch.equal(
            torch.bincount(batch.query_y[t], minlength=ways), torch.full((ways,), queries)
        )


def test_support_and_query_images_are_distinct_and_from_the_labelled_class(
    omniglot_tasks: FewShotTasks,
) -> None:
    sampler = TaskSampler(
        omniglot_tasks.train.data, split="train", seed=3, ways=20, shots=5, queries=15,
        rotate=True,
    )  # fmt: skip
    offsets = sampler.data.class_offsets.numpy()
    for index in range(20):
        plan = sampler.plan(index)
        assert len(set(plan.classes.tolist())) == 20
        assert len(set(plan.images.reshape(-1).tolist())) == 20 * 20  # all 20 drawings, once
        for label, cls in enumerate(plan.classes):
            rows = plan.images[label]
            assert ((rows >= offsets[cls]) & (rows < offsets[cls + 1])).all()


def test_labels_are_a_random_permutation_of_the_classes(omniglot_tasks: FewShotTasks) -> None:
    # The class that gets label 0 differs between tasks, and every label position is used
    # by classes from all over the split (no fixed class -> label mapping).
    first = [int(omniglot_tasks.train.plan(i).classes[0]) for i in range(200)]
    assert len(set(first)) > 100
    ranks = [
        np.argsort(np.argsort(omniglot_tasks.train.plan(i).classes)).tolist() for i in range(200)
    ]
    assert len({tuple(r) for r in ranks}) > 50  # label order is not the class-id order


def test_batch_pixels_are_the_planned_images_rotated(omniglot_tasks: FewShotTasks) -> None:
    sampler = omniglot_tasks.train
    turns = np.concatenate([sampler.plan(i).rotations for i in range(40)])
    assert set(turns.tolist()) == {0, 1, 2, 3}  # all four rotations occur
    batch = sampler.batch(range(40))
    ways, shots = sampler.ways, sampler.shots
    for t in range(40):
        expected = _expected_pixels(sampler, t)
        assert torch.equal(batch.support_x[t], expected[:, :shots].reshape(ways * shots, 1, 28, 28))
        assert torch.equal(batch.query_x[t], expected[:, shots:].reshape(-1, 1, 28, 28))
    t = next(i for i in range(40) if sampler.plan(i).rotations.any())
    plan = sampler.plan(t)
    unrotated = sampler.data.images[torch.from_numpy(plan.images[:, 0])].float() / 255
    rotated = torch.from_numpy(plan.rotations != 0)
    assert not torch.equal(batch.support_x[t][rotated], unrotated[rotated])


@pytest.mark.parametrize("split", ["val", "test"])
def test_evaluation_tasks_are_never_rotated(omniglot_tasks: FewShotTasks, split: str) -> None:
    sampler = omniglot_tasks.sampler(split)
    assert not sampler.rotate
    batch = sampler.batch(range(20))
    for t in range(20):
        plan = sampler.plan(t)
        assert not plan.rotations.any()
        rows = torch.from_numpy(plan.images[:, : sampler.shots].reshape(-1))
        assert torch.equal(batch.support_x[t], sampler.data.images[rows].float() / 255)


def test_rotation_does_not_change_which_images_are_drawn(omniglot_tasks: FewShotTasks) -> None:
    data = omniglot_tasks.train.data
    kwargs = dict(split="train", seed=0, ways=5, shots=1, queries=1)
    rotating = TaskSampler(data, rotate=True, **kwargs)
    plain = TaskSampler(data, rotate=False, **kwargs)
    for i in range(10):
        assert np.array_equal(rotating.plan(i).images, plain.plan(i).images)
        assert not plain.plan(i).rotations.any()


def test_non_omniglot_data_sets_are_not_rotated(omniglot_config: ExperimentConfig) -> None:
    config = replace(omniglot_config, dataset_name="characters", dataset_path="omniglot_dataset")
    assert not config.is_omniglot
    tasks = FewShotTasks.from_config(config, quiet=True)
    assert not tasks.train.rotate


def test_train_indices_follow_the_design_formula() -> None:
    assert list(train_indices(0, 8)) == list(range(8))
    assert list(train_indices(3, 8)) == list(range(24, 32))


def test_split_hash_is_stable_and_tracks_the_split(
    omniglot_config: ExperimentConfig, omniglot_tasks: FewShotTasks, rebuilt_tasks: FewShotTasks
) -> None:
    assert len(omniglot_tasks.split_hash) == 64
    assert omniglot_tasks.split_hash == rebuilt_tasks.split_hash
    other = FewShotTasks.from_config(replace(omniglot_config, val_seed=1), quiet=True)
    assert other.split_hash != omniglot_tasks.split_hash


def _tiny_split(sizes: list[int]) -> SplitData:
    offsets = torch.tensor([0, *np.cumsum(sizes).tolist()], dtype=torch.int64)
    images = torch.arange(int(offsets[-1]), dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 1, 2, 2)
    return SplitData(images.contiguous(), offsets, tuple(f"c{i}" for i in range(len(sizes))))


def test_classes_of_different_sizes_are_sampled_within_their_size() -> None:
    data = _tiny_split([3, 7, 4, 12])
    sampler = TaskSampler(data, split="train", seed=0, ways=4, shots=1, queries=2, rotate=False)
    offsets = data.class_offsets.numpy()
    seen = set()
    for i in range(300):
        plan = sampler.plan(i)
        for cls, rows in zip(plan.classes, plan.images, strict=True):
            assert ((rows >= offsets[cls]) & (rows < offsets[cls + 1])).all()
            assert len(set(rows.tolist())) == 3
            seen.update(rows.tolist())
    assert seen == set(range(int(offsets[-1])))  # every image can be drawn


def test_too_many_ways_or_shots_are_dataset_errors(omniglot_tasks: FewShotTasks) -> None:
    with pytest.raises(
        DatasetError, match="val split has 50 classes, fewer than num_classes_per_set=60"
    ):
        TaskSampler(
            omniglot_tasks.val.data, split="val", seed=0, ways=60, shots=1, queries=1, rotate=False
        )
    with pytest.raises(DatasetError, match=r"has 20 images, fewer than .* = 21"):
        TaskSampler(
            omniglot_tasks.val.data, split="val", seed=0, ways=5, shots=1, queries=20, rotate=False
        )


def test_batches_carry_each_row_s_label_among_all_the_split_s_labels(
    omniglot_tasks: FewShotTasks,
) -> None:
    """Rotated training tasks: class * 4 + quarter turns (a turned class is a class of
    its own, as the tasks treat it); unrotated splits: the class in the split."""
    train, val = omniglot_tasks.train, omniglot_tasks.val
    assert train.num_labels == 4 * train.num_classes
    assert val.num_labels == val.num_classes
    for sampler, turns in ((train, 4), (val, 1)):
        batch = sampler.batch([3, 11])
        assert batch.support_classes is not None and batch.query_classes is not None
        for row, index in enumerate([3, 11]):
            plan = sampler.plan(index)
            per_class = [
                int(c) * turns + int(k) for c, k in zip(plan.classes, plan.rotations, strict=True)
            ]
            expected_support = [per_class[int(y)] for y in batch.support_y[row]]
            expected_query = [per_class[int(y)] for y in batch.query_y[row]]
            assert batch.support_classes[row].tolist() == expected_support
            assert batch.query_classes[row].tolist() == expected_query
        picked = batch.select([1])
        assert picked.support_classes is not None
        assert torch.equal(picked.support_classes[0], batch.support_classes[1])
    assert train.batch(range(40)).support_classes.max() < train.num_labels
