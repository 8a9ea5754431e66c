"""mouse: a distributed actor-learner system for deep reinforcement learning."""

__version__ = "0.1.0"
