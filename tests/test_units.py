"""The research log's clock, step counts and update rates, recomputed from the resolved phases.

Decision (README "Units and the schedule", phases/baseline.yaml): the log's agent decides at every 20 ms control
step of the hopper (action repeat 1, 1000 decisions per episode), so a config's env step is the log's step and
every count of the log is written verbatim. `base` and the demos keep TD-MPC2's clock (action repeat 2). Each test
below takes a numeric sentence of the log (../shared/reference/glass-iterations-2-7.txt), quoted, and recomputes it
from `resolve(...)`; under the earlier reading (action repeat 2 and doubled counts) they fail.
"""
import json
import math

import pytest

from experiments import launch
from experiments.phases import all_phase_files, intrinsic_bonus_max, lineage, read_phase, resolve, units
from tdmpc_glass.config import derive

CONTROL_DT_S = 0.02  # hopper: 50 Hz control
NOT_LOG = {"base", "demo", "demo_glass"}  # TD-MPC2's defaults and the CPU demo: TD-MPC2's clock


def per_decision(name, variant=None) -> float:
    d = derive(resolve(name, variant).cfg)
    return d.k_update / d.collect_steps  # updates per round / decisions per round


def test_every_ledger_phase_decides_every_control_step_and_td_mpc2s_phases_every_second():
    for path in all_phase_files():
        phase = read_phase(path)
        for variant in phase.variant_names():
            cfg = resolve(str(path), variant).cfg
            if phase.name in NOT_LOG:
                assert (cfg.train.action_repeat, cfg.train.episode_length) == (2, 500), phase.name
                assert cfg.train.explore_updates == "burst", phase.name
            else:
                assert (cfg.train.action_repeat, cfg.train.episode_length) == (1, 1000), phase.name
                assert cfg.train.explore_updates == "steady", phase.name


def test_baseline_is_the_logs_clock_with_its_counts_verbatim():
    u = units(resolve("baseline").cfg)
    assert u.decision_period_ms == 20 and u.decisions_per_episode == 1000
    assert dict(u.points) == {"train.steps": 4_000_000, "train.expl_until": 25_000}
    assert u.seconds(4_000_000) == 80_000 and u.decisions(25_000) == 25_000
    # TD-MPC2's discount heuristic at 1000 decisions per episode: clip((200 - 1) / 200, 0.95, 0.995)
    assert derive(resolve("baseline").cfg).discount == pytest.approx(0.995)
    assert derive(resolve("base").cfg).discount == pytest.approx(0.99)
    td = units(resolve("base").cfg)
    assert (td.decision_period_ms, td.decisions_per_episode) == (40, 500)


def test_k_update_64_per_256_steps_is_a_quarter_update_per_decision():
    # "K_UPDATE=64 -> 64 gradient updates per 256-env-step collection batch -> ~0.25 updates per env step"
    assert per_decision("baseline") == 64 / 256 == 0.25


def test_td_mpc2_makes_one_update_per_decision_four_times_the_logs_rate():
    # "Official TD-MPC2: ~1.0 updates per env step. We've been training at 4x lower update rate for 7 iterations"
    assert per_decision("base") == 1.0
    assert per_decision("base") / per_decision("baseline") == 4


def test_aa_sweeps_a_quarter_half_and_all_of_td_mpc2s_rate():
    # "K_UPDATE in {64, 128, 256}"; section 7: k64 is the rate "4x lower" than TD-MPC2's
    for variant, k_update, ratio in (("k64", 64, 0.25), ("k128", 128, 0.5), ("k256", 256, 1.0)):
        assert per_decision("aa", variant) == k_update / 256 == ratio, variant
    # aa_winner holds k128 until aa has run ("If Glass is neutral at K_UPDATE=128"); ab, ac and section 10 follow
    for name in ("aa_winner", "ab", "ac", "window", "nk", "moe_q", "basin_restart", "kmeans_init", "multitask"):
        for variant in read_phase(lineage(name)[-1].path).variant_names():
            assert per_decision(name, variant) == 128 / 256, (name, variant)


def test_every_phase_before_aa_trains_at_the_codebases_rate():
    # "We've been training at 4x lower update rate for 7 iterations": every ledger phase outside aa's family
    after_aa = {p.stem for p in all_phase_files() if "aa" in [x.name for x in lineage(str(p))]}
    for path in all_phase_files():
        name = read_phase(path).name
        if name in NOT_LOG or path.stem in after_aa:
            continue
        assert per_decision(str(path)) == 0.25, name


def test_schedule_points_are_the_logs_counts_as_written():
    cfg = {name: resolve(name).cfg for name in ("baseline", "p", "kmeans_init", "j", "o", "r1_soft", "rstack",
                                                "basin_restart")}
    # section 9.6: "every phase with shorter exploration (EXPL_UNTIL=25k)"; p: "EXPL_UNTIL=500k"; 10.7 the same
    assert derive(cfg["baseline"]).expl_until_env_steps == 25_000
    assert derive(cfg["p"]).expl_until_env_steps == 500_000
    assert derive(cfg["kmeans_init"]).expl_until_env_steps == 500_000
    assert cfg["j"].schedule.action_smooth_from == 250_000  # "curriculum smoothing (off<250k)"
    assert cfg["o"].glass.off_after == 2_000_000  # "Glass OFF after 2M"
    for name in ("r1_soft", "rstack"):  # "Soft stand bonus 0.1->0@3M"
        assert cfg[name].shaping.soft_stand_decay_until == 3_000_000
    # 10.6: "monitor ... at step 200k ... Cost: at most 2-3 restarts per seed (< 600k extra env steps total)"
    restart = cfg["basin_restart"].schedule
    assert restart.restart_check_at == 200_000
    assert restart.restart_max * restart.restart_check_at <= 600_000
    # aa k64 s1 "234 @ 3.25M": the log's runs lasted beyond 3.25M of its steps; the phases run 4M
    assert cfg["baseline"].train.steps == 4_000_000 >= 3_250_000


def test_the_logs_loop_updates_through_the_random_phase_with_no_burst():
    # "the first 25k-500k env steps use random or near-random actions", updates at K_UPDATE per collection batch
    from tdmpc_glass.rounds import updates_due

    for name, rate in (("baseline", 0.25), ("p", 0.25), ("kmeans_init", 0.5)):
        d = derive(resolve(name).cfg)
        assert d.update_warmup_env_steps == 1000  # one episode of data before the first update
        assert updates_due(d, 800, False) == 0 and updates_due(d, 1000, False) == d.k_update
        # every round the same, before, at and after EXPL_UNTIL
        for step in (d.expl_until_env_steps - 200, d.expl_until_env_steps, d.expl_until_env_steps + 200):
            assert updates_due(d, step, step > d.expl_until_env_steps) == d.k_update == rate * d.collect_steps
    d = derive(resolve("base").cfg)  # TD-MPC2: none while seeding, one burst of 2500, then one per decision
    assert updates_due(d, 4000, False) == 0 and updates_due(d, 5000, False) == 2500
    assert updates_due(d, 5002, True) == 1


def test_glass_windows_cover_a_tenth_and_a_fifth_of_a_second():
    # "W=5-10 env steps should cover one hop phase (~0.2s at 50Hz)"
    for variant, window, seconds in (("w5", 5, 0.1), ("w10", 10, 0.2)):
        cfg = resolve("window", variant).cfg
        assert cfg.glass.window == window
        assert units(cfg).seconds(cfg.glass.window_frames()) == pytest.approx(seconds)


def test_intrinsic_bonus_reaches_the_logs_210_per_episode_paid_once_per_decision():
    # "Cluster entropy intrinsic reward is fundamentally incompatible with the reward scale (max bonus ~210)"
    for name in ("P", "Pa"):
        cfg = resolve(name).cfg
        coef, num_clusters = cfg.glass.intrinsic_coef, cfg.glass.num_clusters
        assert (coef, num_clusters) == (0.1, 8)
        # at most coef x ln K per decision (agent.world_loss), over the episode's 1000 decisions
        episode = coef * math.log(num_clusters) * cfg.train.episode_length
        assert cfg.train.episode_length == 1000 and cfg.train.action_repeat == 1
        assert episode == pytest.approx(207.94, abs=0.01) and abs(episode - 210) < 5
        assert intrinsic_bonus_max(cfg) == pytest.approx(episode)
    assert intrinsic_bonus_max(resolve("1b").cfg) is None


def test_units_helper_matches_the_config():
    u = units(resolve("o").cfg)
    assert (u.updates_per_decision, u.decision_period_ms, u.control_timestep_s) == (0.25, 20, CONTROL_DT_S)
    points = dict(u.points)
    assert points == {"train.steps": 4_000_000, "train.expl_until": 25_000, "glass.off_after": 2_000_000}
    assert u.decisions(points["glass.off_after"]) == 2_000_000 and u.seconds(points["glass.off_after"]) == 40_000


def test_list_prints_the_clock_rate_and_schedule_for_every_phase(capsys):
    assert launch.main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines[0].split()
    assert header[5:9] == ["dec_ms", "dec/ep", "upd/dec", "explore"]
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
        assert cells[7] == ",".join(f"{u.updates_per_decision:g}" for u in rates), phase.name
        assert schedule.startswith("    decisions (simulated time): train.steps "), phase.name
    assert rows["o"][0][5:9] == ["20", "1000", "0.25", "steady"]
    assert rows["base"][0][5:9] == ["40", "500", "1", "burst"]
    assert rows["o"][1] == ("    decisions (simulated time): train.steps 4M (80k s), train.expl_until 25k (500 s), "
                            "glass.off_after 2M (40k s)")
    assert rows["aa"][0][7] == "0.25,0.5,1"


def test_describe_prints_clock_rates_schedule_iterations_and_the_bonus(capsys):
    assert launch.main(["describe", "Pa"]) == 0
    text = " ".join(line.lstrip("# ").strip() for line in capsys.readouterr().out.splitlines())  # unwrapped
    assert "a decision every 20 ms (action repeat 1 x 20 ms control step), 1,000 decisions per episode (20 s)" in text
    assert "= 0.25 per decision" in text and "while exploring too, from decision 1,000 on" in text
    assert "glass.intrinsic_decay_until 1,000,000 (20,000 s)" in text and "train.steps 4,000,000 (80,000 s)" in text
    assert "= 207.9 per episode, paid once per decision" in text
    assert "6 MPPI iterations" in text
    assert launch.main(["describe", "baseline", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    train = record["config"]["train"]
    assert (train["action_repeat"], train["episode_length"], train["steps"], train["expl_until"]) == \
        (1, 1000, 4_000_000, 25_000)
    assert record["units"]["decision_period_ms"] == 20 and record["units"]["decisions_per_episode"] == 1000
    assert launch.main(["describe", "aa", "--variant", "k256", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["units"]["updates_per_decision"] == 1.0
    assert {"key": "train.expl_until", "env_steps": 25_000, "decisions": 25_000, "seconds": 500} in record["units"][
        "schedule_points"]
    assert record["intrinsic_bonus_max_per_episode"] is None and record["planner_iterations"] == 6
