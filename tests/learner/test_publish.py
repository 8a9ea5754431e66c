"""Weight broadcasts: acting tensors only, snapshotted at publish time, loadable strictly by actors."""

from __future__ import annotations

import time

import pytest
import torch
import zmq

from learner.publish import WeightsPublisher
from mouse import wire
from mouse.acting import acting_state, load_acting_state
from mouse.components import build_model
from mouse.config import RunConfig
from mouse.envs import describe_env
from mouse.losses.vec_dqn import VecDqnLossConfig
from mouse.models import ModelConfig
from mouse.train import TrainConfig

CFG = RunConfig(model=ModelConfig(hidden_dim=16, num_layers=1),
                train=TrainConfig(vec_dqn=VecDqnLossConfig(weight=1.0)))  # two heads with targets


def models():
    info = describe_env(CFG.env)
    torch.manual_seed(0)
    learner_model = build_model(CFG, info)
    torch.manual_seed(1)
    return learner_model, build_model(CFG, info).eval()


@pytest.fixture
def pub_sub():
    ctx = zmq.Context.instance()
    pub, sub = ctx.socket(zmq.PUB), ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    sub.connect(f"tcp://127.0.0.1:{port}")
    time.sleep(0.2)  # PUB drops what is sent before the subscription arrives
    yield pub, sub
    sub.close(0)


def test_actors_load_exactly_the_published_tensors():
    learner_model, actor_model = models()
    pub = zmq.Context.instance().socket(zmq.PUB)
    publisher = WeightsPublisher(learner_model, pub, 3)
    publisher.close()
    pub.close(0)
    version, _, state = wire.decode_weights(publisher.frames)  # the first frames: built at once
    assert version == 3
    assert not [k for k in state if "target" in k]  # targets stay with the learner
    assert set(state) == set(acting_state(actor_model)) and len(state) < len(actor_model.state_dict())
    targets_before = {k: v.clone() for k, v in actor_model.state_dict().items() if k not in state}
    load_acting_state(actor_model, state)
    for k, v in actor_model.state_dict().items():
        assert torch.equal(v, state[k] if k in state else targets_before[k]), k
    assert torch.equal(actor_model.embed.time.weight, learner_model.embed.time.weight)


def test_weights_that_do_not_fit_are_refused_before_anything_is_copied():
    learner_model, actor_model = models()
    before = {k: v.clone() for k, v in actor_model.state_dict().items()}
    full = {k: v.clone() for k, v in learner_model.state_dict().items()}  # target heads included
    with pytest.raises(ValueError, match="unexpected.*target_heads.dqn"):
        load_acting_state(actor_model, full)
    wrong = acting_state(learner_model)
    wrong["embed.time.weight"] = wrong["embed.time.weight"][:-1]
    with pytest.raises(ValueError, match=r"embed.time.weight: \(1000, 16\)"):
        load_acting_state(actor_model, wrong)
    assert all(torch.equal(v, before[k]) for k, v in actor_model.state_dict().items())


def test_broadcast_holds_the_weights_of_publish_time_and_the_newest_wins(pub_sub):
    pub, sub = pub_sub
    learner_model, _ = models()
    publisher = WeightsPublisher(learner_model, pub, 0)
    expected = {}
    for version in (1, 2, 3):
        with torch.no_grad():  # a training step between publishes, in place like the optimizer's
            for p in learner_model.parameters():
                p.add_(1.0)
        expected[version] = {k: v.clone() for k, v in acting_state(learner_model).items()}
        publisher.publish(version)
    with torch.no_grad():  # after the last publish: must not reach the frames in flight
        for p in learner_model.parameters():
            p.mul_(0.0)
    publisher.close()
    got = []
    while sub.poll(2000):
        version, _, state = wire.decode_weights(sub.recv_multipart(copy=False))
        got.append((version, state))
        if got[-1][0] == 3:
            break
    assert got and got[-1][0] == 3 and [v for v, _ in got] == sorted(v for v, _ in got)
    for version, state in got:
        assert state.keys() == expected[version].keys()
        assert all(torch.equal(state[k], expected[version][k]) for k in state), version
    assert wire.decode_weights(publisher.frames)[0] == 3  # what a new actor's welcome carries
