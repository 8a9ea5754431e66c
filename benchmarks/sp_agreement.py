"""How well the `sp` head of a trained run agrees with the exact q_star.

    python benchmarks/sp_agreement.py RUN_DIR [--episodes 200]

Loads RUN_DIR/checkpoint.pt, plays ``--episodes`` episodes acting with the sp
head as the actors do (a sample of its softmax; learner.evaluation.play), and at
every visited step compares argmax sp with the optimal actions of q_star (all
actions within 1e-6 of the max count as optimal, so ties are not held against
the head). Prints the share of visited steps and of distinct visited states
where argmax sp is optimal, and the same for a uniformly random policy as the
baseline of the ratio. (`mouse eval RUN_DIR --head sp` reports the step share too.)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

from learner.checkpoint import load_checkpoint
from learner.evaluation import head_scores, optimal_agreement, play
from mouse.components import build_model
from mouse.config import RunConfig, from_dict
from mouse.envs import describe_env


def agreement(model, cfg: RunConfig, info, episodes: int, seed: int = 7) -> dict[str, float]:
    g = torch.Generator().manual_seed(seed)
    tally = {"strict": 0, "random": 0, "steps": 0}
    per_state: dict[int, list[bool]] = {}

    def on_step(rec, out, action, live):
        q = rec["q_star"]  # [N, A]
        scores = head_scores(out, "sp", rec.get("action_mask", None))  # [N, A]
        ok = optimal_agreement(scores, q)
        rand = torch.randint(0, info.num_env_actions, (len(q),), generator=g)
        rand_ok = optimal_agreement(F.one_hot(rand, q.shape[-1]).float(), q)
        tally["strict"] += int(((scores.argmax(-1) == q.argmax(-1)) & live).sum())
        tally["random"] += int((rand_ok & live).sum())
        tally["steps"] += int(live.sum())
        for s, o in zip(rec["obs_discrete"][live].tolist(), ok[live].tolist()):
            per_state.setdefault(s, []).append(o)

    m = play(model, "sp", cfg.env, info, cfg.acting_context, episodes, seed=seed, on_step=on_step)
    steps = tally["steps"]
    states = {s: sum(v) / len(v) >= 0.5 for s, v in per_state.items()}
    return {"steps": steps, "step_share": m["q_star_agreement"], "strict_step_share": tally["strict"] / steps,
            "random_step_share": tally["random"] / steps, "states": len(states), "return": m["return"],
            "state_share": sum(states.values()) / len(states)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path)
    p.add_argument("--episodes", type=int, default=200)
    a = p.parse_args()
    state = load_checkpoint(a.run_dir / "checkpoint.pt")
    cfg = from_dict(RunConfig, state["config"])
    info = describe_env(cfg.env)
    if info.q_star_table is None:
        raise SystemExit(f"{cfg.env.env_id} has no exact q_star: nothing to compare the sp head with")
    model = build_model(cfg, info).eval()
    model.load_state_dict(state["model"])
    r = agreement(model, cfg, info, a.episodes)
    print(f"sp head vs exact q_star, {cfg.env.env_id} {cfg.env.env_kwargs}, checkpoint after "
          f"{state['env_steps']:,} env steps / {state['updates']:,} updates, {a.episodes} episodes acting with sp")
    print(f"visited steps where argmax sp is optimal   {r['step_share']:7.1%}  of {r['steps']:,} "
          f"(uniform random policy: {r['random_step_share']:.1%}, ratio "
          f"{r['step_share'] / max(r['random_step_share'], 1e-9):.2f}x)")
    print(f"visited steps where argmax sp == argmax q_star (ties to the first) {r['strict_step_share']:7.1%}")
    print(f"mean return of the sp episodes  {r['return']:.3f}")
    print(f"distinct visited states (majority of visits) {r['state_share']:7.1%}  of {r['states']} states")


if __name__ == "__main__":
    main()
