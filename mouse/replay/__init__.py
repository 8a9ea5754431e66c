"""Replay: step records in a TorchRL buffer, sampled as ``[B, S]`` windows of one stream.

    replay = make_replay_buffer(ReplayConfig(capacity=...), spec)
    replay.ingest(chunk)                       # validated, nothing written on error
    with PrefetchBatchifier(replay, batch_size=B, seq_len=S, device=device) as batches:
        batch = next(batches)                  # TensorDict [B, S] on device
    replay.save(directory); replay.restore(directory)

TorchRL internals (underscore names) are touched in ``torchrl_compat`` only, which
checks on import that torchrl and tensordict are the releases it was written for.

``ReplayConfig`` imports without torch; the rest is loaded on first use (the run
config, and ``mouse --help``, need only the config).
"""

from mouse.lazy import lazy_exports
from mouse.replay.config import ReplayConfig

_LAZY = {
    "PrefetchBatchifier": "mouse.replay.batchifier",
    "StreamReplay": "mouse.replay.buffer",
    "make_replay_buffer": "mouse.replay.buffer",
    "NoWindowError": "mouse.replay.sampler",
    "StreamWindowSampler": "mouse.replay.sampler",
}

__all__ = ["NoWindowError", "PrefetchBatchifier", "ReplayConfig", "StreamReplay", "StreamWindowSampler",
           "make_replay_buffer"]


# first the adapter: on a TorchRL release it was not written for, the first use of
# mouse.replay fails with its one-line error rather than with whatever internal moved
__getattr__ = lazy_exports(__name__, _LAZY, first="mouse.replay.torchrl_compat")
