"""Tasks of mouse's own, registered with gymnasium on import (``mouse.envs`` imports this module,
so every process that makes envs through mouse knows the ids).

``mouse/CueRecall-v0``: a memory task. A cue (one of ``num_cues``) is shown at the
first step only; after ``delay`` blank steps a "go" signal asks for it, and the
answer action names the cue. A model that sees its window of past records (the
causal transformer) can solve it; one that sees a single record (the mlp) cannot.

    t        0        1 .. delay-1    delay
    obs      cue c    blank (0)       go (K+1)
    action   wait (0) during the delay (t < delay); at "go", action c answers cue c and ends the episode
    reward   -wait_penalty for each non-wait action during the delay; +1 for the right answer

Why the best memoryless policy gets 1/K: a policy that sees one record at a time
(observation, previous action and reward, time) can only learn the cue at the
answer from the previous action (the blank and go observations and the time are
the same whatever the cue). Let q_a(c) = P(a_{delay-1} = a | cue c). Whatever it
answers, P(right) <= (1/K) sum_a max_c q_a(c) <= 1/K + P(a_{delay-1} != wait),
while each non-wait action costs ``wait_penalty`` >= 1: its expected return is at
most 1/K + (1 - wait_penalty) P(a_{delay-1} != wait) <= 1/K, which waiting and
guessing reaches. Remembering the cue gets 1.
"""

from __future__ import annotations

import gymnasium as gym
from gymnasium import spaces

CUE_RECALL_ID = "mouse/CueRecall-v0"


class CueRecall(gym.Env):
    """Recall a cue seen ``delay`` steps before (observations: 0 blank, 1..K cue, K+1 go)."""

    metadata = {"render_modes": []}

    def __init__(self, num_cues: int = 4, delay: int = 4, wait_penalty: float = 1.0):
        if num_cues < 2 or delay < 1:
            raise ValueError(f"CueRecall needs num_cues >= 2 and delay >= 1, got {num_cues}, {delay}")
        if wait_penalty < 1:  # below 1, carrying the cue in the actions can beat guessing (docstring)
            raise ValueError(f"CueRecall needs wait_penalty >= 1, got {wait_penalty}")
        self.num_cues, self.delay, self.wait_penalty = num_cues, delay, float(wait_penalty)
        self.observation_space = spaces.Discrete(num_cues + 2)
        self.action_space = spaces.Discrete(num_cues + 1)  # 0 wait, c answers cue c
        self.go = num_cues + 1
        self.cue, self.t = 0, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.cue = int(self.np_random.integers(1, self.num_cues + 1))
        self.t = 0
        return self.cue, {}

    def step(self, action):
        action = int(action)
        if self.t < self.delay:  # waiting (the cue was shown at t = 0, blanks follow)
            self.t += 1
            obs = self.go if self.t == self.delay else 0
            return obs, -self.wait_penalty if action != 0 else 0.0, False, False, {}
        # the answer, given on seeing "go"
        return 0, float(action == self.cue), True, False, {"cue": self.cue}


def _register() -> None:
    if CUE_RECALL_ID not in gym.registry:
        gym.register(CUE_RECALL_ID, entry_point="mouse.tasks:CueRecall")


_register()
