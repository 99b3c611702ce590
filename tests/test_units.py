"""The research log's step counts and update rates, recomputed from the resolved phases.

Decision (README "Units and the schedule", phases/baseline.yaml): the log's "env step" is the agent's step, and a
phase file counts simulator env steps = agent steps x action_repeat 2. Each test below takes a numeric sentence
of the log (../shared/reference/glass-iterations-2-7.txt), quoted, and recomputes it from `resolve(...)`; under
the earlier reading (the log's steps taken as simulator steps for K_UPDATE and schedule points) they fail.
"""
import json
import math

import pytest

from experiments import launch
from experiments.phases import all_phase_files, intrinsic_bonus_max, lineage, read_phase, resolve, units
from tdmpc_glass import agent
from tdmpc_glass.config import derive

ACTION_REPEAT = 2
EPISODE_ENV_STEPS = 1000  # hopper: 20 s at a 0.02 s control step
NOT_LOG = {"base", "demo", "demo_glass"}  # TD-MPC2's defaults and the CPU demo: not phases of the log


def per_agent_step(name, variant=None) -> float:
    d = derive(resolve(name, variant).cfg)
    return d.k_update / d.collect_steps  # updates per round / agent steps per round


def per_env_step(name, variant=None) -> float:
    cfg = resolve(name, variant).cfg
    return per_agent_step(name, variant) / cfg.train.action_repeat


def log_steps(env_steps: int) -> float:
    """A config's env steps in the log's unit, agent steps."""
    return env_steps / ACTION_REPEAT


def test_every_phase_repeats_actions_twice_so_env_steps_are_twice_agent_steps():
    for path in all_phase_files():
        assert resolve(str(path)).cfg.train.action_repeat == ACTION_REPEAT, path.stem


def test_k_update_64_per_256_steps_is_a_quarter_update_per_agent_step():
    # "K_UPDATE=64 -> 64 gradient updates per 256-env-step collection batch -> ~0.25 updates per env step"
    assert per_agent_step("baseline") == 64 / 256 == 0.25
    assert per_env_step("baseline") == 0.125  # per simulator step


def test_td_mpc2_makes_one_update_per_agent_step_four_times_the_logs_rate():
    # "Official TD-MPC2: ~1.0 updates per env step. We've been training at 4x lower update rate for 7 iterations"
    assert per_agent_step("base") == 1.0 and per_env_step("base") == 0.5
    assert per_agent_step("base") / per_agent_step("baseline") == 4


def test_aa_sweeps_a_quarter_half_and_all_of_td_mpc2s_rate():
    # "K_UPDATE in {64, 128, 256}"; section 7: k64 is the rate "4x lower" than TD-MPC2's
    td_mpc2 = per_agent_step("base")
    for variant, k_update, ratio in (("k64", 64, 0.25), ("k128", 128, 0.5), ("k256", 256, 1.0)):
        assert per_agent_step("aa", variant) == k_update / 256
        assert per_agent_step("aa", variant) / td_mpc2 == ratio, variant
        assert per_env_step("aa", variant) == k_update / 256 / ACTION_REPEAT
    # aa_winner holds k128 until aa has run ("If Glass is neutral at K_UPDATE=128"); ab, ac and section 10 follow
    for name in ("aa_winner", "ab", "ac", "window", "nk", "moe_q", "basin_restart", "kmeans_init", "multitask"):
        for variant in read_phase(lineage(name)[-1].path).variant_names():
            assert per_agent_step(name, variant) == 128 / 256, (name, variant)


def test_every_phase_before_aa_trains_at_the_codebases_rate():
    # "We've been training at 4x lower update rate for 7 iterations": every ledger phase outside aa's family
    after_aa = {p.stem for p in all_phase_files() if "aa" in [x.name for x in lineage(str(p))]}
    for path in all_phase_files():
        name = read_phase(path).name
        if name in NOT_LOG or path.stem in after_aa:
            continue
        assert per_agent_step(str(path)) == 0.25, name


def test_schedule_points_are_the_logs_counts_in_agent_steps():
    cfg = {name: resolve(name).cfg for name in ("baseline", "p", "kmeans_init", "j", "o", "r1_soft", "rstack",
                                                "basin_restart")}
    # section 9.6: "every phase with shorter exploration (EXPL_UNTIL=25k)"; p: "EXPL_UNTIL=500k"; 10.7 the same
    assert log_steps(derive(cfg["baseline"]).expl_until_env_steps) == 25_000
    assert log_steps(derive(cfg["p"]).expl_until_env_steps) == 500_000
    assert log_steps(derive(cfg["kmeans_init"]).expl_until_env_steps) == 500_000
    assert log_steps(cfg["j"].schedule.action_smooth_from) == 250_000  # "curriculum smoothing (off<250k)"
    assert log_steps(cfg["o"].glass.off_after) == 2_000_000  # "Glass OFF after 2M"
    for name in ("r1_soft", "rstack"):  # "Soft stand bonus 0.1->0@3M"
        assert log_steps(cfg[name].shaping.soft_stand_decay_until) == 3_000_000
    # 10.6: "monitor ... at step 200k ... Cost: at most 2-3 restarts per seed (< 600k extra env steps total)"
    restart = cfg["basin_restart"].schedule
    assert log_steps(restart.restart_check_at) == 200_000
    assert restart.restart_max * log_steps(restart.restart_check_at) <= 600_000
    # aa k64 s1 "234 @ 3.25M": the log's runs lasted beyond 3.25M of its steps; the phases run 4M
    assert log_steps(cfg["baseline"].train.steps) == 4_000_000
    assert log_steps(cfg["baseline"].train.steps) >= 3_250_000


def test_the_seeding_burst_is_what_the_rate_would_have_made_by_then():
    # p: the 500k random phase ends with the updates 0.25 per agent step would have made: 125k
    assert derive(resolve("p").cfg).seed_updates == 500_000 * 0.25
    assert derive(resolve("baseline").cfg).seed_updates == 25_000 * 0.25
    assert derive(resolve("kmeans_init").cfg).seed_updates == 500_000 * 0.5  # at aa_winner's k128


def test_intrinsic_bonus_reaches_the_logs_210_per_episode():
    # "Cluster entropy intrinsic reward is fundamentally incompatible with the reward scale (max bonus ~210)"
    for name in ("P", "Pa"):
        cfg = resolve(name).cfg
        coef, num_clusters = cfg.glass.intrinsic_coef, cfg.glass.num_clusters
        assert (coef, num_clusters) == (0.1, 8)
        # what the update adds per agent step at most (agent.world_loss), over an episode's agent steps
        h = agent.Hyper.from_config(cfg)
        per_agent_step_max = h.action_repeat * coef * math.log(num_clusters)
        episode = per_agent_step_max * cfg.train.episode_length
        assert episode == pytest.approx(0.1 * math.log(8) * EPISODE_ENV_STEPS) == pytest.approx(207.94, abs=0.01)
        assert abs(episode - 210) < 5
        assert intrinsic_bonus_max(cfg) == pytest.approx(episode)
    assert intrinsic_bonus_max(resolve("1b").cfg) is None


def test_units_helper_matches_the_config():
    u = units(resolve("o").cfg)
    assert (u.updates_per_agent_step, u.updates_per_env_step) == (0.25, 0.125)
    points = dict(u.points)
    assert points == {"train.steps": 8_000_000, "train.expl_until": 50_000, "glass.off_after": 4_000_000}
    assert u.agent_steps(points["glass.off_after"]) == 2_000_000


def test_list_prints_both_rates_and_the_schedule_in_both_units_for_every_phase(capsys):
    assert launch.main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines[0].split()
    assert header[5:7] == ["upd/agent", "upd/env"]
    rows = {}
    for i, line in enumerate(lines[1:], start=1):
        if not line.startswith(" "):
            rows[line.split()[0]] = (line.split(), lines[i + 1])
    names = {read_phase(p).name for p in all_phase_files()}
    assert set(rows) == names
    for path in all_phase_files():
        phase = read_phase(path)
        cells, schedule = rows[phase.name]
        rates = [units(resolve(str(path), v).cfg) for v in phase.variant_names()]
        assert cells[5] == ",".join(f"{u.updates_per_agent_step:g}" for u in rates), phase.name
        assert cells[6] == ",".join(f"{u.updates_per_env_step:g}" for u in rates), phase.name
        assert schedule.startswith("    env steps (agent steps): train.steps "), phase.name
    assert rows["o"][1] == ("    env steps (agent steps): train.steps 8M (4M), train.expl_until 50k (25k), "
                            "glass.off_after 4M (2M)")
    assert rows["aa"][0][5:7] == ["0.25,0.5,1", "0.125,0.25,0.5"]


def test_describe_prints_rates_schedule_iterations_and_the_bonus(capsys):
    assert launch.main(["describe", "Pa"]) == 0
    text = capsys.readouterr().out
    assert "= 0.25 per agent step = 0.125 per env step" in text
    assert "glass.intrinsic_decay_until 2,000,000 (1,000,000)" in text and "train.steps 8,000,000 (4,000,000)" in text
    assert "= 207.9 per episode" in text
    assert "6 MPPI iterations" in text
    assert launch.main(["describe", "aa", "--variant", "k256", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["units"]["updates_per_agent_step"] == 1.0 and record["units"]["updates_per_env_step"] == 0.5
    assert {"key": "train.expl_until", "env_steps": 50_000, "agent_steps": 25_000} in record["units"][
        "schedule_points"]
    assert record["intrinsic_bonus_max_per_episode"] is None and record["planner_iterations"] == 6
