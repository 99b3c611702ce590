"""How long a second suite's task tracks dm_control's from the same initial state under the same actions.

    python -m experiments.suite_agreement [--task hopper-hop] [--suite playground] [--seeds 3] [--steps 1000]

For each seed: dm_control's task is reset with that seed; the other suite's env gets the very same qpos and qvel;
both then take the same uniform random actions, one control step at a time (action repeat 1). Printed per seed
and as the median over seeds: the first control step at which the observations differ by more than each
tolerance (max absolute difference over the observation), the first step at which the rewards differ by more
than REWARD_TOL, and both episode returns over the steps. A step count equal to --steps means "never".
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

OBS_TOLS = (1e-4, 1e-2, 1.0)
REWARD_TOL = 0.01


def first_exceeding(diff: np.ndarray, tol: float) -> int:
    """Index of the first entry of diff (T,) above tol, or T if none."""
    above = np.nonzero(diff > tol)[0]
    return int(above[0]) if above.size else len(diff)


def compare(task: str, suite: str, seed: int, steps: int) -> dict:
    """One seed's trajectories in dm_control and in `suite`: divergence steps and both returns."""
    from mujoco import mjx

    from tdmpc_glass.envs import suites

    dmc_chunk = suites.chunk_factory(task, 1, 1)()
    other = suites.chunk_factory(f"{suite}:{task}", 1, 1)()
    try:
        dmc_chunk.reset(np.array([seed]))
        start = dmc_chunk.physics_states()[0]
        other.reset(np.array([seed]))
        nq = other.env.mjx_model.nq
        data = other.state.data.replace(qpos=other.state.data.qpos.at[0].set(start[:nq]),
                                        qvel=other.state.data.qvel.at[0].set(start[nq:]))
        import jax

        data = jax.vmap(lambda d: mjx.forward(other.env.mjx_model, d))(data)
        other.state = other.state.replace(data=data)
        rng = np.random.default_rng(seed)
        obs_diff, reward_diff, returns = [], [], np.zeros(2)
        for _ in range(steps):
            action = rng.uniform(-1.0, 1.0, (1, dmc_chunk.low.shape[0]))
            obs_a, r_a = dmc_chunk.step(action)
            obs_b, r_b = other.step(action)
            obs_diff.append(float(np.max(np.abs(obs_a - obs_b))))
            reward_diff.append(float(abs(r_a[0] - r_b[0])))
            returns += (r_a[0], r_b[0])
    finally:
        dmc_chunk.close()
        other.close()
    obs_diff, reward_diff = np.asarray(obs_diff), np.asarray(reward_diff)
    out = {f"obs_within_{tol:g}": first_exceeding(obs_diff, tol) for tol in OBS_TOLS}
    out["reward_within"] = first_exceeding(reward_diff, REWARD_TOL)
    out["return_dmc"], out[f"return_{suite}"] = float(returns[0]), float(returns[1])
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.suite_agreement", description=__doc__.split("\n")[1])
    parser.add_argument("--task", default="hopper-hop", help="dm_control task name (default hopper-hop)")
    parser.add_argument("--suite", default="playground", help="the other suite (default playground)")
    parser.add_argument("--seeds", type=int, default=3, help="reset seeds 0..N-1 (default 3)")
    parser.add_argument("--steps", type=int, default=1000, help="control steps per seed (default 1000)")
    args = parser.parse_args(argv)
    from tdmpc_glass.envs import suites

    try:
        if args.suite == suites.DEFAULT or args.suite not in suites.SUITES:
            raise ValueError(f"--suite: expected one of {', '.join(s for s in suites.SUITES if s != suites.DEFAULT)}"
                             f", got {args.suite!r}")
        suites.validate_task(args.task)
        suites.validate_task(f"{args.suite}:{args.task}")
        if args.seeds < 1 or args.steps < 1:
            raise ValueError("--seeds and --steps must be >= 1")
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows = []
    for seed in range(args.seeds):
        rows.append(compare(args.task, args.suite, seed, args.steps))
        print(f"seed {seed}: " + ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}"
                                           for k, v in rows[-1].items()), flush=True)
    print(f"median over {args.seeds} seeds ({args.task}, dm_control vs {args.suite}, {args.steps} control steps, "
          f"same initial state and uniform random actions; a count of {args.steps} means never): "
          + ", ".join(f"{k} {np.median([r[k] for r in rows]):g}" for k in rows[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
