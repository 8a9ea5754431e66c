"""Ingest validation, dtypes and shapes, storage kinds, save/restore."""

from __future__ import annotations

import pytest
import torch

from mouse.records import RecordError, RecordSpec
from mouse.replay import NoWindowError, ReplayConfig, make_replay_buffer

from .fakes import CARTPOLE, FakeActor, make_records, stored_windows, window_ids, window_problems


def snapshot(replay):
    rows = replay.storage[:].clone() if len(replay) else None
    return len(replay), rows, replay.sampler.state_dict()


def assert_same(a, b):
    assert a[0] == b[0]
    assert (a[1] is None and b[1] is None) or bool((a[1] == b[1]).all())
    for k in ("written", "seq_len"):
        assert a[2][k] == b[2][k]
    assert torch.equal(a[2]["valid"], b[2]["valid"]) and torch.equal(a[2]["next"], b[2]["next"])
    assert a[2]["streams"] == b[2]["streams"]


def _extra_field(td):
    td["extra"] = torch.zeros(len(td))
    return td


def _wrong_dtype(td):
    td["reward"] = td["reward"].double()
    return td


def _nan_obs(td):
    td["obs_continuous"][3, 0] = float("nan")
    return td


def _not_consecutive(td):
    td["time"][4] += 1  # stream 0 (rows 0, 2, 4, ...): its third step jumps
    return td


BAD_CHUNKS = [
    ("unknown field", _extra_field, "extra: unknown field"),
    ("missing field", lambda td: td.exclude("xformed_reward"), "xformed_reward: missing"),
    ("wrong dtype", _wrong_dtype, "reward: dtype torch.float64"),
    ("NaN observation", _nan_obs, "obs_continuous: contains NaN"),
    ("steps not consecutive", _not_consecutive, "steps are not consecutive"),
    ("two batch dims", lambda td: td.reshape(2, -1), "one batch dim"),
]


@pytest.mark.parametrize("name,corrupt,message", BAD_CHUNKS, ids=[c[0] for c in BAD_CHUNKS])
def test_bad_chunks_are_rejected_and_nothing_is_written(name, corrupt, message):
    replay = make_replay_buffer(ReplayConfig(capacity=50), CARTPOLE, seq_len=3)
    actor = FakeActor([0, 1], episode_len=3)
    replay.ingest(actor.records(10))
    before = snapshot(replay)
    with pytest.raises(RecordError, match=message):
        replay.ingest(corrupt(actor.records(5)))
    assert_same(before, snapshot(replay))


def test_a_chunk_larger_than_the_buffer_is_rejected():
    replay = make_replay_buffer(ReplayConfig(capacity=8), CARTPOLE, seq_len=2)
    with pytest.raises(ValueError, match="larger than the replay capacity 8"):
        replay.ingest(FakeActor([0]).records(9))
    assert len(replay) == 0


def _arrays(td) -> dict:
    return {k: v.numpy() for k, v in td.items()}


@pytest.mark.parametrize("corrupt", [
    lambda a: {**a, "reward": a["reward"].astype("float64")},  # another dtype
    lambda a: {**a, CARTPOLE.obs_key: a[CARTPOLE.obs_key][:, :3]},  # another per-record shape
    lambda a: {k: v for k, v in a.items() if k != "reward"},  # a field missing
    lambda a: {**a, "extra": a["reward"]},  # a field more
], ids=["dtype", "shape", "missing", "extra"])
def test_ingest_arrays_refuses_other_layouts_before_writing(corrupt):
    """In a burst of good chunks, one of another layout is refused and nothing is written
    (the storage's oldest rows would otherwise be overwritten field by field)."""
    replay = make_replay_buffer(ReplayConfig(capacity=16), CARTPOLE, seq_len=2)
    actor = FakeActor([0])
    replay.ingest(actor.records(12))
    before = snapshot(replay)
    chunks = [_arrays(actor.records(2)) for _ in range(3)]
    chunks[2] = corrupt(chunks[2])
    with pytest.raises(ValueError, match="other fields, dtypes or shapes"):
        replay.ingest_arrays(chunks)
    assert_same(snapshot(replay), before)


def test_without_a_spec_the_first_chunk_fixes_the_fields():
    replay = make_replay_buffer(ReplayConfig(capacity=50), seq_len=2)
    actor = FakeActor([0])
    replay.ingest(actor.records(4))
    with pytest.raises(RecordError, match="differ from the stored fields"):
        replay.ingest(_extra_field(actor.records(4)))
    with pytest.raises(RecordError, match="stream_id: missing"):
        replay.ingest(actor.records(4).exclude("stream_id"))
    assert len(replay) == 4


@pytest.mark.parametrize("spec", [
    CARTPOLE,
    RecordSpec("image", (6, 5, 3), 4, q_star=True, action_mask=True),
    RecordSpec("discrete", (), 4, q_star=True),
], ids=["continuous", "image+q_star+mask", "discrete"])
def test_dtypes_and_shapes_are_preserved(spec):
    replay = make_replay_buffer(ReplayConfig(capacity=100), spec, seq_len=4)
    actor = FakeActor([3, 1], episode_len=3)
    chunk = actor.records(10)
    td = spec.empty(len(chunk))
    for k in ("action", "reward", "xformed_reward", "done", "time", "stream_id", "policy_version"):
        td[k] = chunk[k]
    g = torch.Generator().manual_seed(0)
    obs = td[spec.obs_key]
    td[spec.obs_key] = torch.randint(0, 7, obs.shape, generator=g).to(obs.dtype)
    if spec.q_star:
        td["q_star"] = torch.randn(len(td), spec.num_actions, generator=g)
        td["q_star"][:, -1] = float("-inf")
    if spec.action_mask:
        td["action_mask"] = torch.rand(len(td), spec.num_actions, generator=g) > 0.5
    replay.ingest(td)
    batch = replay.sample(5, 4)
    assert set(batch.keys()) == set(spec.fields())
    assert batch.batch_size == torch.Size([5, 4])
    for k, f in spec.fields().items():
        assert batch[k].dtype == f.dtype and batch[k].shape == (5, 4, *f.shape), k
    # each sampled record is bitwise one of the ingested records
    key = td["stream_id"] * 1000 + td["policy_version"]
    row = {int(k): i for i, k in enumerate(key)}
    flat = batch.reshape(-1)
    for j in range(len(flat)):
        src = td[row[int(flat["stream_id"][j] * 1000 + flat["policy_version"][j])]]
        assert all(torch.equal(flat[j][k], src[k]) for k in spec.fields())


def memmap_or_tensor(tmp_path, storage, capacity=40, seed=5):
    """A buffer factory: each buffer it builds has its own memmap directory."""
    def build(name):
        scratch = str(tmp_path / name) if storage == "memmap" else None
        return make_replay_buffer(ReplayConfig(capacity=capacity, seed=seed, storage=storage,
                                               scratch_dir=scratch), CARTPOLE, seq_len=3)
    return build


@pytest.mark.parametrize("storage", ["tensor", "memmap"])
def test_save_restore_round_trip(tmp_path, storage):
    build = memmap_or_tensor(tmp_path, storage)
    replay, actor = build("a"), FakeActor([0, 1, 2], episode_len=4)
    for n in (5, 4, 6):  # 45 steps into 40 slots: wrapped
        replay.ingest(actor.records(n))
    replay.save(tmp_path / "saved")
    replay.save(tmp_path / "saved")  # saving again replaces the directory whole
    restored = build("b")
    restored.restore(tmp_path / "saved")
    assert_same(snapshot(replay), snapshot(restored))
    # the restored buffer keeps each stream's segment: the next chunk joins it
    chunk = actor.records(2)
    replay.ingest(chunk.clone())
    restored.ingest(chunk)
    assert_same(snapshot(replay), snapshot(restored))
    assert (0, 14) in stored_windows(restored)  # steps 14, 15 | 16: the window spans the save


@pytest.mark.parametrize("storage", ["tensor", "memmap"])
def test_restore_resumes_the_sampling_rng(tmp_path, storage):
    """After a restore, a buffer draws the windows the saved one would have drawn next.

    Draws before the save move the generator off its seed, so a restore that left the
    generator alone (or reseeded it from the config) would repeat those draws instead."""
    build = memmap_or_tensor(tmp_path, storage, capacity=200)
    replay = build("a")
    replay.ingest(FakeActor(range(3), episode_len=5).records(30))
    before_save = [replay.sample(8, 3) for _ in range(3)]
    replay.save(tmp_path / "saved")
    expected = [replay.sample(8, 3) for _ in range(4)]
    restored = build("b")
    restored.restore(tmp_path / "saved")
    drawn = [restored.sample(8, 3) for _ in range(4)]
    assert [window_ids(b) for b in drawn] == [window_ids(b) for b in expected]
    assert all(torch.equal(d[k], e[k]) for d, e in zip(drawn, expected) for k in CARTPOLE.fields())
    # what a generator left at its seed would draw: the check above can tell them apart
    assert [window_ids(b) for b in drawn[:3]] != [window_ids(b) for b in before_save]


def test_restore_refuses_a_different_buffer(tmp_path):
    replay = make_replay_buffer(ReplayConfig(capacity=40), CARTPOLE)
    replay.ingest(FakeActor([0]).records(5))
    replay.save(tmp_path / "saved")
    with pytest.raises(ValueError, match="capacity 40"):
        make_replay_buffer(ReplayConfig(capacity=41), CARTPOLE).restore(tmp_path / "saved")
    with pytest.raises(ValueError, match="holds records of"):
        make_replay_buffer(ReplayConfig(capacity=40), RecordSpec("discrete", (), 2)).restore(tmp_path / "saved")


def test_torchrl_buffer_calls_reach_the_sampler():
    """ReplayBuffer.set_rng replaces the generator windows are drawn with (and saved); empty()
    forgets every window. TorchRL calls both hooks by private names on the sampler."""
    def filled(seed):
        replay = make_replay_buffer(ReplayConfig(capacity=100, seed=seed), CARTPOLE, seq_len=3)
        replay.ingest(FakeActor(range(3), episode_len=5).records(20))
        return replay

    reseeded, seeded_so, other = filled(0), filled(9), filled(0)
    reseeded.buffer.set_rng(torch.Generator().manual_seed(9))
    drawn = window_ids(reseeded.sample(16))
    assert drawn == window_ids(seeded_so.sample(16)) != window_ids(other.sample(16))
    assert torch.equal(reseeded.generator.get_state(), seeded_so.generator.get_state())
    reseeded.buffer.empty()
    assert len(reseeded) == 0 and reseeded.num_windows == 0
    with pytest.raises(NoWindowError):
        reseeded.sample(4)


def test_memory_per_step_stays_within_a_tenth_of_the_records():
    replay = make_replay_buffer(ReplayConfig(capacity=10_000), CARTPOLE)
    replay.ingest(FakeActor(range(4)).records(10))
    nbytes = replay.nbytes()
    assert nbytes["storage"] == 64 * 10_000
    assert nbytes["index"] == 5 * 10_000
    assert (nbytes["storage"] + nbytes["index"]) / (64 * 10_000) <= 1.1


def test_unsorted_and_single_row_writes_through_torchrl_extend():
    """The sampler follows writes that bypass ingest (rb.extend of interleaved rows)."""
    replay = make_replay_buffer(ReplayConfig(capacity=30), CARTPOLE, seq_len=3)
    actor = FakeActor([0, 1], episode_len=4)
    replay.buffer.extend(actor.records(3))  # time-major: streams interleaved row by row
    for row in actor.records(2):
        replay.buffer.extend(row.unsqueeze(0))
    assert stored_windows(replay) == {(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)}
    assert not window_problems(replay.sample(8))
    flat = replay.buffer.sample(8 * 3)  # TorchRL's own path: flat [B * S] rows, window-major
    assert flat.batch_size == torch.Size([24]) and not window_problems(flat.reshape(8, 3))


def test_make_records_fakes_obey_the_contract():
    from mouse.records import validate_records
    validate_records(FakeActor([0, 5], episode_len=2).records(7), CARTPOLE)
    validate_records(make_records(CARTPOLE, *(torch.tensor([0]),) * 4), CARTPOLE)


@pytest.mark.parametrize("kwargs,message", [
    ({"capacity": 0}, "capacity must be >= 1"),
    ({"storage": "disk"}, "storage must be"),
    ({"scratch_dir": "/tmp/x"}, "only applies to storage='memmap'"),
])
def test_bad_config_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ReplayConfig(**kwargs)
