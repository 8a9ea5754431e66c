"""Replay: step records in a TorchRL buffer, sampled as ``[B, S]`` windows of one stream.

    replay = make_replay_buffer(ReplayConfig(capacity=...), spec)
    replay.ingest(chunk)                       # validated, nothing written on error
    with PrefetchBatchifier(replay, batch_size=B, seq_len=S, device=device) as batches:
        batch = next(batches)                  # TensorDict [B, S] on device
    replay.save(directory); replay.restore(directory)

TorchRL internals (underscore names) are touched in ``torchrl_compat`` only, which
checks on import that torchrl and tensordict are the releases it was written for.
"""

# first: on a TorchRL release the adapter was not written for, importing mouse.replay fails
# with the adapter's one-line error rather than with whatever internal moved
from mouse.replay import torchrl_compat  # noqa: F401, I001
from mouse.replay.batchifier import PrefetchBatchifier
from mouse.replay.buffer import StreamReplay, make_replay_buffer
from mouse.replay.config import ReplayConfig
from mouse.replay.sampler import NoWindowError, StreamWindowSampler

__all__ = ["NoWindowError", "PrefetchBatchifier", "ReplayConfig", "StreamReplay", "StreamWindowSampler",
           "make_replay_buffer"]
