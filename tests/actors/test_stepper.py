"""The actor's stepping, acting and chunking (actors.stepper) with real gymnasium envs, no sockets."""

from __future__ import annotations

import torch

from actors.stepper import Stepper, actor_epsilons
from mouse.acting import ActingPolicy, acting_state, ape_x_epsilons, load_acting_state
from mouse.components import build_model
from mouse.config import ActorConfig, EnvConfig, RunConfig
from mouse.envs import describe_env
from mouse.models import ModelConfig, MouseModel
from mouse.records import RecordSpec, validate_records
from mouse.replay.torchrl_compat import unchecked_tensordict
from mouse.train import TrainConfig


def run_config(**kw) -> RunConfig:
    base = dict(env=EnvConfig(num_envs=3), num_actors=2,
                actor=ActorConfig(epsilon=0.4, epsilon_alpha=7.0, chunk_steps=5),
                model=ModelConfig(hidden_dim=16, num_layers=1, num_attention_heads=2))
    return RunConfig(**{**base, **kw})


def make_stepper(cfg: RunConfig, actor_id: int = 0):
    info = describe_env(cfg.env)
    model = build_model(cfg, info).eval()
    return Stepper(cfg, actor_id, info, model), model


def test_ape_x_epsilons_spread_over_every_stream_of_the_run():
    cfg = run_config()
    run = torch.cat([actor_epsilons(cfg, a) for a in range(cfg.num_actors)])  # [6]
    assert torch.allclose(run, ape_x_epsilons(0.4, 7.0, 0, 6, 6))
    expected = torch.tensor([0.4 ** (1 + 7 * i / 5) for i in range(6)])
    assert torch.allclose(run, expected)
    # an actor added later (id 2 of 2 slots) reuses slot 0's epsilons
    assert torch.equal(actor_epsilons(cfg, 2), actor_epsilons(cfg, 0))


def test_stepper_acts_with_its_own_epsilons():
    """A model that always prefers action 0: only exploration picks action 1, per stream."""
    cfg = run_config(env=EnvConfig(num_envs=2), num_actors=1,
                     actor=ActorConfig(epsilon=0.5, epsilon_alpha=7.0, chunk_steps=1000))
    stepper, model = make_stepper(cfg)
    assert torch.allclose(stepper.policy.epsilon, actor_epsilons(cfg, 0))  # [0.5, 0.5 ** 8]
    out = model.online_heads["dqn"].net[-1]
    with torch.no_grad():
        out.weight.zero_()
        out.bias.copy_(torch.tensor([1.0, 0.0]))
    for _ in range(400):
        stepper.step()
    chunk, _ = stepper.take()
    actions = chunk["action"].reshape(2, -1)[:, 1:]  # [N, K-1]: record t+1 holds the action taken at t
    fresh = chunk["time"].reshape(2, -1)[:, 1:] != 0  # reset records carry action 0, not a choice
    share_random = [(a[f] == 1).float().mean().item() for a, f in zip(actions, fresh)]
    # epsilon 0.5 explores half the time and then picks action 1 half of that: ~0.25
    assert 0.17 < share_random[0] < 0.33, share_random
    assert share_random[1] < 0.02, share_random


def test_transformer_acts_from_the_last_seq_len_minus_one_records():
    cfg = run_config(model=ModelConfig(backbone="transformer", hidden_dim=16, num_layers=1,
                                       num_attention_heads=2),
                     train=TrainConfig(seq_len=5, batch_size=4), actor=ActorConfig(chunk_steps=100))
    assert cfg.acting_context == 4
    stepper, model = make_stepper(cfg)
    seen = []
    for _ in range(7):
        stepper.step()
        seen.append(dict(stepper.policy.context))
    assert [c["time"].shape[1] for c in seen] == [1, 2, 3, 4, 4, 4, 4]  # [N, context]
    records = torch.stack(stepper.pending, dim=1)  # [N, 8]: the reset record + 7 steps
    last = seen[-1]  # the 7th action (step 6) is chosen from records 3..6
    keys = ("time", "action", "reward", "done", "obs_continuous")
    for key in keys:
        assert torch.equal(last[key], records[:, 3:7][key]), key
    with torch.inference_mode():  # and from what the model computes on that window
        expected = model(records[:, 3:7].select(*keys), last_only=True)
    torch.testing.assert_close(stepper.policy.out["dqn"], expected["dqn"])


def greedy(model, newest: dict) -> torch.Tensor:
    """The eager model's greedy dqn action [N] from each stream's newest record alone."""
    n = next(iter(newest.values())).shape[0]
    step = {k: v.unsqueeze(1).clone() for k, v in newest.items()}  # [N, 1]
    with torch.no_grad():
        return model(unchecked_tensordict(step, (n, 1)), last_only=True)["dqn"].argmax(-1)


def chosen_actions(stepper) -> tuple[torch.Tensor, torch.Tensor]:
    """The actions of the newest step [N] and which were chosen (a reset record's 0 is not)."""
    rec = stepper.pending[-1]
    return rec["action"], rec["time"] != 0


def test_mlp_acts_from_the_newest_record_only_as_the_eager_model_would():
    cfg = run_config(actor=ActorConfig(epsilon=0.0, chunk_steps=100))
    stepper, model = make_stepper(cfg)
    eager_calls = []
    model.register_forward_pre_hook(lambda _m, args: eager_calls.append(1))
    stepper.reset()
    for _ in range(40):
        expected = greedy(model, stepper.recorder.newest)
        stepper.step()
        action, chosen = chosen_actions(stepper)
        assert torch.equal(action[chosen], expected[chosen])
    assert len(eager_calls) == 40  # greedy()'s own: the actor's forward ran as a trace


def test_weights_loaded_in_place_act_at_once():
    """The traced forward reads the model's own parameters: a load between steps acts next step."""
    cfg = run_config(actor=ActorConfig(epsilon=0.0, chunk_steps=100))
    stepper, model = make_stepper(cfg)
    for _ in range(3):
        stepper.step()  # traced with the initial weights
    out = f"online_heads.dqn.net.{len(model.online_heads['dqn'].net) - 1}"  # the output layer
    for preferred in (1, 0):
        state = {k: v.clone() for k, v in acting_state(model).items()}
        state[f"{out}.weight"].zero_()
        state[f"{out}.bias"].copy_(torch.tensor([1.0 - preferred, float(preferred)]))
        load_acting_state(model, state)
        stepper.step()
        stepper.step()  # the newest step's action was chosen after the load
        action, chosen = chosen_actions(stepper)
        assert chosen.any() and (action[chosen] == preferred).all()


def test_chunk_is_stream_major_consecutive_and_valid():
    cfg = run_config()
    stepper, _ = make_stepper(cfg, actor_id=1)
    stepper.version = 7
    steps = 0
    while not stepper.ready():
        stepper.step()
        steps += 1
    assert steps == cfg.actor.chunk_steps - 1  # the reset record is the chunk's first step
    chunk, _ = stepper.take()
    n, k = cfg.env.num_envs, cfg.actor.chunk_steps
    assert chunk.batch_size == torch.Size([n * k])
    ids = chunk["stream_id"].reshape(n, k)  # [N, K]
    assert torch.equal(ids, torch.tensor([3, 4, 5]).unsqueeze(1).expand(n, k))  # actor 1's streams
    assert (chunk["policy_version"] == 7).all()
    validate_records(chunk, describe_env(cfg.env).spec)  # consecutive within each stream
    # the next chunk continues every stream where this one ended
    for _ in range(k):
        stepper.step()
    nxt, _ = stepper.take()
    t0, t1 = chunk["time"].reshape(n, k)[:, -1], nxt["time"].reshape(n, k)[:, 0]
    restarted = nxt["done"].reshape(n, k)[:, 0] != 0
    assert ((t1 == t0 + 1) | (t1 == 0) | restarted).all()


def test_finished_episodes_are_reported_once_with_their_return():
    cfg = run_config(env=EnvConfig(num_envs=2), actor=ActorConfig(epsilon=1.0, chunk_steps=1000))
    stepper, _ = make_stepper(cfg)
    for _ in range(300):
        stepper.step()
    chunk, episodes = stepper.take()
    assert episodes, "random CartPole episodes end within 300 steps"
    dones = int((chunk["done"] != 0).sum())
    assert len(episodes) == dones
    for e in episodes:  # CartPole pays 1 per step: return == length
        assert e["return"] == e["length"] > 0
    assert stepper.take()[1] == []  # handed over once


def test_exploration_draws_only_allowed_actions_uniformly():
    """A model head wider than the env (actions 0, 1 of 3 allowed): ε = 1 picks among the two."""
    cfg = ModelConfig(hidden_dim=16, num_layers=1, num_attention_heads=2)
    model = MouseModel(cfg, RecordSpec("continuous", (4,), 3, action_mask=True), ("dqn",)).eval()
    policy = ActingPolicy(model, "dqn", 1, epsilon=torch.ones(500), seed=3, traced=True)
    newest = {"obs_continuous": torch.randn(500, 4), "action": torch.zeros(500, dtype=torch.int64),
              "reward": torch.zeros(500), "done": torch.zeros(500, dtype=torch.int64),
              "time": torch.zeros(500, dtype=torch.int64)}
    mask = torch.tensor([True, True, False]).expand(500, -1)
    counts = torch.bincount(policy.act_step(newest, mask), minlength=3).tolist()
    assert counts[2] == 0 and 200 < counts[0] < 300, counts
    greedy_policy = ActingPolicy(model, "dqn", 1, epsilon=0.0, traced=True)
    with torch.no_grad():  # without exploration the model's argmax, which here prefers action 2
        model.online_heads["dqn"].net[-1].bias.copy_(torch.tensor([0.0, 0.0, 100.0]))
    assert (greedy_policy.act_step(newest) == 2).all()
    assert (greedy_policy.act_step(newest, mask) != 2).all()
