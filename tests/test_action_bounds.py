"""TD-MPC2 beyond hopper (tdmpc2-facts.md): MPPI runs 2 more iterations when the action has >= 20 dims, and the
agent's actions in [-1, 1] are rescaled onto each task's bounds (not clipped to them), over every dm_control suite
task; on tasks bounded by [-1, 1] (hopper) stepping is bit-identical to the clipping it replaced."""
import numpy as np
import pytest

from tdmpc_glass.config import PlannerConfig
from tdmpc_glass.envs import dmc
from tdmpc_glass.planner import PlanSettings


@pytest.fixture(scope="module")
def bounds():
    """task -> (low, high) of its action spec, each task loaded once."""
    specs = {}
    for task in dmc.list_tasks():
        env = dmc.load(task)
        spec = env.action_spec()
        specs[task] = (np.asarray(spec.minimum, np.float64) * np.ones(spec.shape),
                       np.asarray(spec.maximum, np.float64) * np.ones(spec.shape))
        env.close()
    return specs


def test_mppi_iterations_grow_by_two_from_twenty_action_dims_on_every_task(bounds):
    planner = PlannerConfig()  # the config's base: 6
    large = set()
    for task, (low, _) in bounds.items():
        act_dim = low.shape[0]
        settings = PlanSettings.from_config(planner, 3, 0.99, act_dim)
        assert settings.iterations == (8 if act_dim >= 20 else 6), task
        if act_dim >= 20:
            large.add(task.split("-")[0])
    assert planner.iterations == 6  # the config keeps the base
    assert {"humanoid", "dog"} <= large and "hopper" not in large
    assert PlanSettings.from_config(planner, 3, 0.99, 19).iterations == 6
    assert PlanSettings.from_config(planner, 3, 0.99, 20).iterations == 8
    assert PlanSettings.from_config(PlannerConfig(iterations=3), 3, 0.99, 38).iterations == 5
    assert PlanSettings.from_config(planner, 3, 0.99).iterations == 6  # no task given: the base


def control_after_step(task: str, action_value: float) -> np.ndarray:
    """The simulator's control after one EnvChunk step with every action entry at action_value."""
    chunk = dmc.EnvChunk(task, 1, 1)
    try:
        chunk.reset(np.array([0]))
        chunk.step(np.full((1, chunk.low.shape[0]), action_value))
        return np.array(chunk.envs[0].physics.data.ctrl)
    finally:
        chunk.close()


def test_minus_one_zero_plus_one_reach_low_middle_high_on_every_task(bounds):
    stretched = []
    for task, (low, high) in bounds.items():
        finite = (np.abs(low) < dmc.UNBOUNDED_ACTION) & (np.abs(high) < dmc.UNBOUNDED_ACTION)
        rescale = dmc.action_rescale(low, high)
        if rescale is None:
            assert np.all(low == -1) and np.all(high == 1), task
            continue
        mid, half = rescale
        for value, target in ((-1.0, low), (0.0, (low + high) / 2), (1.0, high)):
            expected = np.where(finite, target, value)  # lqr's +-1e10 "bounds" keep the agent's action
            np.testing.assert_allclose(mid + half * value, expected, rtol=0, atol=1e-12, err_msg=task)
        stretched.append(task)
    assert {"quadruped-run", "quadruped-walk"} <= set(stretched)
    # through EnvChunk.step, into the simulator's control: quadruped's bounds are [-1, 1.1] and [-0.8, 0.8]
    low, high = bounds["quadruped-run"]
    assert set(high) == {0.8, 1.0, 1.1}
    for value, target in ((-1.0, low), (0.0, (low + high) / 2), (1.0, high)):
        np.testing.assert_allclose(control_after_step("quadruped-run", value), target, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(control_after_step("lqr-lqr_2_1", 1.0), [1.0])
    np.testing.assert_array_equal(control_after_step("quadruped-run", 3.0), high)  # [-1, 1] first


@pytest.mark.parametrize("task", ["hopper-hop", "cheetah-run"])
def test_tasks_bounded_by_one_step_bit_identically_to_clipping(task):
    """EnvChunk against a bare dm_control env driven with np.clip(action, low, high), the code it replaced."""
    rng = np.random.default_rng(0)
    chunk = dmc.EnvChunk(task, 2, 2)
    reference = [dmc.load(task, seed=i) for i in range(2)]
    try:
        assert chunk.rescale is None
        obs = chunk.reset(np.array([5, 6]))
        ref_obs = []
        for env, seed in zip(reference, (5, 6)):
            env.task.random.seed(seed)
            ref_obs.append(dmc.flatten_observation(env.reset().observation))
        np.testing.assert_array_equal(obs, np.stack(ref_obs))
        for _ in range(30):
            actions = rng.uniform(-1.3, 1.3, (2, chunk.low.shape[0]))  # some entries beyond the bounds
            obs, reward = chunk.step(actions)
            for i, env in enumerate(reference):
                total = 0.0
                for _ in range(2):
                    timestep = env.step(np.clip(actions[i], chunk.low, chunk.high))
                    total += timestep.reward or 0.0
                assert obs[i].tobytes() == dmc.flatten_observation(timestep.observation).tobytes()
                assert reward[i] == np.float32(total)
        states = chunk.physics_states()
        for i, env in enumerate(reference):
            ref_state = np.concatenate([env.physics.data.qpos, env.physics.data.qvel])
            assert states[i].tobytes() == ref_state.tobytes()
    finally:
        chunk.close()
        for env in reference:
            env.close()
