"""Reward shaping terms of the hopper (phases t, q_knee, r1_soft, r2_gait, rstack*): benchmark-unfair.

The training pool measures three unweighted terms from the physics after every control step and sums them over
the action repeats, like the task reward (`HopperTerms`, the pool's measure: envs/training.py pool_measure); the
Shaping wrapper weights them with `shaping.*` and the
current env step (`shaped_reward`). Only training rewards, i.e. what enters the replay buffer, are shaped:
evaluation pools never compute the terms, so eval.csv returns are the task's own.

Per control step, with the hopper's bodies (dm_control suite/hopper.xml):
  knee  = clip((KNEE_HEIGHT - z_knee) / KNEE_HEIGHT, 0, 1)
          z_knee: world height of the knee joint (origin of body `calf`); 0 while the knee is at least
          KNEE_HEIGHT = 0.2 m above the floor, 1 with the knee on the floor (the knee-walk gait).
  stand = clip(height / STAND_HEIGHT, 0, 1)
          height = xipos[torso].z - xipos[foot].z, the task's own standing height, STAND_HEIGHT = 0.6 m its
          threshold: a soft version of the task's hard 0/1 `standing`.
  fall  = clip((COS_FALL - up) / COS_FALL, 0, 1)
          up = z component of the torso's long axis (cosine of its tilt from vertical), COS_FALL = cos 45 deg:
          0 while the torso leans less than 45 deg, growing to 1 when it lies flat (and beyond, clipped).
Shaped reward of an agent step (terms summed over its action repeats):
  r_shaped = r_task - shaping.knee_penalty * knee + b(env_step) * stand - shaping.gait_fall_penalty * fall
  b(env_step) = shaping.soft_stand_bonus * max(0, 1 - env_step / shaping.soft_stand_decay_until)
                (the constant soft_stand_bonus when soft_stand_decay_until is null).
"""
from __future__ import annotations

import math

import numpy as np

TERMS = ("knee", "stand", "fall")
KNEE_HEIGHT = 0.2
STAND_HEIGHT = 0.6
COS_FALL = math.cos(math.radians(45.0))


def enabled(sh) -> bool:
    """Whether a ShapingConfig shapes anything."""
    return sh.knee_penalty != 0 or sh.soft_stand_bonus != 0 or sh.gait_fall_penalty != 0


class HopperTerms:
    """Reads the three terms of one hopper physics (body ids looked up once)."""

    def __init__(self, physics):
        name2id = physics.model.name2id
        self.torso, self.calf, self.foot = (name2id(b, "body") for b in ("torso", "calf", "foot"))

    def __call__(self, physics) -> np.ndarray:
        data = physics.data
        z_knee = data.xpos[self.calf, 2]
        height = data.xipos[self.torso, 2] - data.xipos[self.foot, 2]
        up = data.xmat[self.torso, 8]  # R[2, 2]: world z of the torso's local z axis
        return np.array([
            min(max((KNEE_HEIGHT - z_knee) / KNEE_HEIGHT, 0.0), 1.0),
            min(max(height / STAND_HEIGHT, 0.0), 1.0),
            min(max((COS_FALL - up) / COS_FALL, 0.0), 1.0),
        ])


def coefficients(sh, env_step: int) -> np.ndarray:
    """(3,) weights of (knee, stand, fall) at `env_step` (see the module docstring)."""
    bonus = sh.soft_stand_bonus
    if sh.soft_stand_decay_until:
        bonus *= max(0.0, 1.0 - env_step / sh.soft_stand_decay_until)
    return np.array([-sh.knee_penalty, bonus, -sh.gait_fall_penalty], np.float64)


def shaped_reward(reward: np.ndarray, terms: np.ndarray, sh, env_step: int) -> np.ndarray:
    """reward (N,) task rewards, terms (N, 3) summed over the repeats -> (N,) float32 shaped rewards."""
    return (np.asarray(reward, np.float64) + np.asarray(terms, np.float64) @ coefficients(sh, env_step)
            ).astype(np.float32)
