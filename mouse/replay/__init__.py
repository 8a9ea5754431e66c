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

import importlib

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


def __getattr__(name: str):
    if name in _LAZY:
        # first: on a TorchRL release the adapter was not written for, this fails with the
        # adapter's one-line error rather than with whatever internal moved
        importlib.import_module("mouse.replay.torchrl_compat")
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
