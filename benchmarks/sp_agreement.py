"""How well the `sp` head of a trained run agrees with the exact q_star.

    python benchmarks/sp_agreement.py RUN_DIR [--episodes 200]

Loads RUN_DIR/checkpoint.pt, rolls out ``--episodes`` episodes acting greedily on
the sp head (argmax of its logits), and at every visited step compares argmax sp
with the optimal actions of q_star (all actions within 1e-6 of the max count as
optimal, so ties are not held against the head). Prints the share of visited
steps and of distinct visited states where argmax sp is optimal, and the same
for a uniformly random policy as the baseline of the ratio.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from learner.checkpoint import load_checkpoint
from mouse.components import build_model
from mouse.config import RunConfig, from_dict
from mouse.envs import describe_env, make_vector_env
from mouse.records import StreamRecorder


@torch.inference_mode()
def agreement(model, cfg: RunConfig, info, episodes: int, seed: int = 7) -> dict[str, float]:
    env = make_vector_env(cfg.env, num_envs=episodes)
    rec = StreamRecorder(info.spec, torch.arange(episodes), info.num_env_actions,
                         q_star_table=info.q_star_table)
    td = rec.reset(env.reset(seed=seed)[0])
    finished = torch.zeros(episodes, dtype=torch.bool)
    hits, strict_hits, steps, per_state = 0, 0, 0, {}
    returns = torch.zeros(episodes)
    rand_hits = 0
    g = torch.Generator().manual_seed(seed)
    while not bool(finished.all()):
        out = model(td.unsqueeze(1), last_only=True)  # [N]
        q = td["q_star"]  # [N, A]
        optimal = q >= q.max(-1, keepdim=True).values - 1e-6  # [N, A]
        logits = out["sp"].masked_fill(~td["action_mask"], -torch.inf) if "action_mask" in td.keys() \
            else out["sp"]
        action = logits.argmax(-1)
        ok = optimal.gather(-1, action[:, None]).squeeze(-1)
        rand = torch.randint(0, info.num_env_actions, (episodes,), generator=g)
        rand_ok = optimal.gather(-1, rand[:, None]).squeeze(-1)
        live = ~finished
        hits += int((ok & live).sum())
        strict_hits += int(((action == q.argmax(-1)) & live).sum())
        rand_hits += int((rand_ok & live).sum())
        steps += int(live.sum())
        for s, o in zip(td["obs_discrete"][live].tolist(), ok[live].tolist()):
            per_state.setdefault(s, []).append(o)
        obs, reward, term, trunc, _ = env.step(action.numpy())
        td = rec.step(action, obs, reward, term, trunc)
        returns += td["reward"] * ~finished
        finished |= td["done"] != 0
    env.close()
    states = {s: sum(v) / len(v) >= 0.5 for s, v in per_state.items()}
    return {"steps": steps, "step_share": hits / steps, "strict_step_share": strict_hits / steps, "random_step_share": rand_hits / steps,
            "states": len(states), "return": float(returns.mean()), "state_share": sum(states.values()) / len(states)}


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
          f"{state['env_steps']:,} env steps / {state['updates']:,} updates, {a.episodes} greedy-sp episodes")
    print(f"visited steps where argmax sp is optimal   {r['step_share']:7.1%}  of {r['steps']:,} "
          f"(uniform random policy: {r['random_step_share']:.1%}, ratio "
          f"{r['step_share'] / max(r['random_step_share'], 1e-9):.2f}x)")
    print(f"visited steps where argmax sp == argmax q_star (ties to the first) {r['strict_step_share']:7.1%}")
    print(f"mean return of the greedy-sp episodes  {r['return']:.3f}")
    print(f"distinct visited states (majority of visits) {r['state_share']:7.1%}  of {r['states']} states")


if __name__ == "__main__":
    main()
