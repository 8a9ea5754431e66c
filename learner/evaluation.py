"""Evaluation of the learner's weights with every head that can act, in a thread beside training.

``play`` runs one episode in each of ``episodes`` parallel sub-envs, acting with
one head at epsilon 0 (dqn and vec_dqn greedy, sp sampling from its softmax), and
measures returns, lengths, the success rate where the env's reward is a 0/1 goal
(FrozenLake) and, where the records carry the exact q_star, how often the head's
argmax is an optimal action at the visited states. ``evaluate`` does so for each
trained head that can act (metrics ``eval/<head>/...``) and copies the acting
head's (``actor.policy``) as ``eval/...``.

``BackgroundEval`` snapshots the weights between two updates and evaluates the
copy in its own thread, so training does not stall meanwhile; the learner polls
it from its own loop (W&B is not thread-safe, so results are logged there).
"""

from __future__ import annotations

import threading
from typing import Callable

import torch

from mouse import heads as registry
from mouse.acting import ActingPolicy
from mouse.config import EnvConfig
from mouse.envs import EnvInfo, make_env, make_vector_env
from mouse.records import StreamRecorder

# argmax within this of the best q_star counts as optimal: ties are not held against a head
OPTIMAL_TOL = 1e-6


def acting_heads(model_heads, acting: str) -> tuple[str, ...]:
    """The heads of a model that can act, the acting head first."""
    return (acting,) + tuple(h for h in registry.policy_names() if h in model_heads and h != acting)


def binary_goal_reward(env_cfg: EnvConfig) -> bool:
    """Whether every reward of the env's transition table is 0 or 1 (a goal, as in FrozenLake):
    then an episode with return > 0 reached the goal, and the success rate is its share."""
    from mouse.qstar import has_transition_table

    env = make_env(env_cfg)
    try:
        if not has_transition_table(env):
            return False
        def items(x):  # P and its rows are dicts or lists
            return x.values() if isinstance(x, dict) else x

        rewards = {float(t[2]) for row in items(env.unwrapped.P) for ts in items(row) for t in ts}
        return rewards <= {0.0, 1.0} and 1.0 in rewards
    finally:
        env.close()


def head_scores(out, head: str, action_mask: torch.Tensor | None) -> torch.Tensor:
    """[N, A] scores whose argmax is the head's greedy action (as ``select_action`` scores them)."""
    spec, x = registry.get(head), out[head].float()
    if spec.scores is not None:
        x = spec.scores(x, action_mask)
    if action_mask is not None:
        x = x.masked_fill(~action_mask, float("-inf"))
    return x


def optimal_agreement(scores: torch.Tensor, q_star: torch.Tensor) -> torch.Tensor:
    """[N] bool: is argmax ``scores`` [N, A] an optimal action of ``q_star`` [N, A] (-inf = invalid)?"""
    optimal = q_star >= q_star.max(-1, keepdim=True).values - OPTIMAL_TOL  # [N, A]
    return optimal.gather(-1, scores.argmax(-1, keepdim=True)).squeeze(-1)  # [N]


@torch.inference_mode()
def play(model, head: str, env_cfg: EnvConfig, info: EnvInfo, context_len: int, episodes: int = 20,
         max_steps: int = 10_000, seed: int = 12345, binary_goal: bool = False, env=None,
         on_step: Callable | None = None) -> dict[str, float]:
    """Play one episode per sub-env with ``head`` at epsilon 0; metrics without the ``eval/`` prefix.

    ``env``: a vector env of ``episodes`` sub-envs to use (closed here), e.g. one that records
    video. ``on_step(records, out, action, live)`` sees every step before it is taken.
    """
    env = env if env is not None else make_vector_env(env_cfg, num_envs=episodes)
    try:
        recorder = StreamRecorder(info.spec, torch.arange(episodes), info.num_env_actions,
                                  q_star_table=info.q_star_table)
        acting = ActingPolicy(model, head, context_len, epsilon=0.0, seed=seed)
        rec = recorder.reset(env.reset(seed=seed)[0])
        returns = torch.zeros(episodes)
        lengths = torch.zeros(episodes, dtype=torch.int64)
        finished = torch.zeros(episodes, dtype=torch.bool)
        agree, visited = 0, 0
        for _ in range(max_steps):
            action = acting.act(rec)
            live = ~finished
            if "q_star" in rec.keys():
                ok = optimal_agreement(head_scores(acting.out, head, rec.get("action_mask", None)),
                                       rec["q_star"])
                agree += int((ok & live).sum())
                visited += int(live.sum())
            if on_step is not None:
                on_step(rec, acting.out, action, live)
            obs, reward, term, trunc, _ = env.step(action.numpy())
            rec = recorder.step(action, obs, reward, term, trunc)
            returns += rec["reward"] * live
            lengths += live.long()
            finished |= rec["done"] != 0
            if bool(finished.all()):
                break
        done = finished if bool(finished.any()) else torch.ones_like(finished)
        m = {
            "return": float(returns[done].mean()),
            "return_min": float(returns[done].min()),
            "return_max": float(returns[done].max()),
            "length": float(lengths[done].float().mean()),
            "episodes": float(done.sum()),
        }
        if binary_goal:
            m["success_rate"] = float((returns[done] > 0).float().mean())
        if visited:
            m["q_star_agreement"] = agree / visited
            m["q_star_steps"] = float(visited)
        return m
    finally:
        env.close()


def evaluate(model, heads: tuple[str, ...], env_cfg: EnvConfig, info: EnvInfo, context_len: int,
             episodes: int = 20, max_steps: int = 10_000, seed: int = 12345,
             binary_goal: bool = False) -> dict[str, float]:
    """``eval/<head>/<metric>`` for each head (the first is the acting one), and its metrics
    again as ``eval/<metric>``."""
    out: dict[str, float] = {}
    for i, head in enumerate(heads):
        m = play(model, head, env_cfg, info, context_len, episodes, max_steps, seed, binary_goal)
        out.update({f"eval/{head}/{k}": v for k, v in m.items() if k != "episodes"})
        if i == 0:
            out.update({f"eval/{k}": v for k, v in m.items()})
    return out


class BackgroundEval:
    """At most one evaluation at a time, of a snapshot of the weights, in a thread of its own.

    ``run_eval(model) -> dict`` is the evaluation (``evaluate`` with the run's settings);
    ``eval_model`` is a CPU copy of the learner's model the snapshot is loaded into; it
    keeps the evaluated weights until the next ``start`` (the learner saves best.pt from it).
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
