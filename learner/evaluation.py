"""Greedy evaluation of the learner's weights, in a thread beside training.

``evaluate`` plays one episode in each of ``episodes`` parallel sub-envs with
epsilon 0 (the sp policy still samples). ``BackgroundEval`` snapshots the
weights between two updates and evaluates the copy in its own thread, so
training does not stall meanwhile; the learner polls it from its own loop
(W&B is not thread-safe, so results are logged there).
"""

from __future__ import annotations

import threading

import torch

from mouse.acting import ActingPolicy
from mouse.config import EnvConfig
from mouse.envs import EnvInfo, make_vector_env
from mouse.records import StreamRecorder


@torch.inference_mode()
def evaluate(model, env_cfg: EnvConfig, info: EnvInfo, policy: str, context_len: int,
             episodes: int = 20, max_steps: int = 10_000, seed: int = 12345) -> dict[str, float]:
    """Mean return/length of ``episodes`` episodes with epsilon 0 (sp still samples)."""
    env = make_vector_env(env_cfg, num_envs=episodes)
    try:
        recorder = StreamRecorder(info.spec, torch.arange(episodes), info.num_env_actions,
                                  q_star_table=info.q_star_table)
        acting = ActingPolicy(model, policy, context_len, epsilon=0.0, seed=seed)
        obs, _ = env.reset(seed=seed)
        rec = recorder.reset(obs)
        returns = torch.zeros(episodes)
        lengths = torch.zeros(episodes, dtype=torch.int64)
        finished = torch.zeros(episodes, dtype=torch.bool)
        for _ in range(max_steps):
            action = acting.act(rec)
            obs, reward, term, trunc, _ = env.step(action.numpy())
            rec = recorder.step(action, obs, reward, term, trunc)
            live = ~finished
            returns += rec["reward"] * live
            lengths += live.long()
            finished |= rec["done"] != 0
            if bool(finished.all()):
                break
        done = finished if bool(finished.any()) else torch.ones_like(finished)
        return {
            "eval/return": float(returns[done].mean()),
            "eval/return_min": float(returns[done].min()),
            "eval/length": float(lengths[done].float().mean()),
            "eval/episodes": float(done.sum()),
        }
    finally:
        env.close()


class BackgroundEval:
    """At most one evaluation at a time, of a snapshot of the weights, in a thread of its own.

    ``run_eval(model) -> dict`` is the evaluation (``evaluate`` with the run's settings);
    ``eval_model`` is a CPU copy of the learner's model the snapshot is loaded into.
    """

    def __init__(self, eval_model, run_eval):
        self.eval_model, self.run_eval = eval_model, run_eval
        self._thread: threading.Thread | None = None
        self._done: tuple | None = None  # (tag, result or error)

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self, state_dict: dict, tag) -> bool:
        """Evaluate ``state_dict`` (copied now); ``tag`` comes back with the result. False if busy."""
        if self._thread is not None:
            return False
        self.eval_model.load_state_dict(state_dict)

        def run():
            try:
                self._done = (tag, self.run_eval(self.eval_model))
            except BaseException as err:  # re-raised by poll() in the learner's loop
                self._done = (tag, err)

        self._thread = threading.Thread(target=run, name="mouse-eval", daemon=True)
        self._thread.start()
        return True

    def poll(self, wait: bool = False):
        """(tag, metrics) of a finished evaluation, else None; an evaluation's error is raised here."""
        if self._thread is None:
            return None
        if wait:
            self._thread.join()
        if self._done is None:
            return None
        tag, result = self._done
        self._thread = self._done = None
        if isinstance(result, BaseException):
            raise RuntimeError("evaluation failed") from result
        return tag, result
