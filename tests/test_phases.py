"""Every phase of the research log as a file in phases/, checked against a table written from the log.

LEDGER below is written from the research log (../shared/reference/glass-iterations-2-7.txt, sections 4, 7,
8, 9 and 10) and the assumptions the phase descriptions state, not from the YAML files: for each phase, its
parent, exactly the dotted config keys whose resolved values differ from the parent's (and those values),
its default seeds, whether it is benchmark-fair, and each variant's difference from the phase itself.
A phase file without a row here, or a row without a file, fails.

Step counts are written as the log writes them: the ledger phases run at the log's clock (baseline: a decision every
20 ms control step, action repeat 1, 1000 decisions per episode), where one env step is one decision (README
"Units and the schedule"). Seeds: section 9.2's columns s1..s5 where it lists the phase (o: 578 / 254 / 33 under
s3 / s4 / s5, best s3; p: 197 / 538 / 27 under s3 / s4 / s5, best s4, the ledger's "538 s4"; t: 375 / 612 / 534
under s1 / s2 / s3, best s2); else 1-n for the seed count n of the ledger or the iteration tables (aa: "seeds
1-3"; h 0/2; i, k, l 0/1; y 0/3; q_knee 12, r1_soft 5, r2_gait 4, rstack 3, its ablations 2), 5 where the log
gives no count. z: the iteration-6 table says 5 seeds; 9.2 lists four of them.
"""
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from experiments.phases import (
    PhaseError, all_phase_files, find_phase, lineage, read_phase, resolve, shaping_keys,
)
from tdmpc_glass.config import derive, flatten, to_dict

ROOT = Path(__file__).resolve().parents[1]
M, k = 1_000_000, 1_000

# the log's clock and codebase: a decision every 20 ms control step (action repeat 1, 1000 per episode); K_UPDATE=64
# per 256 steps = 0.25 updates per decision = 50 per 200-decision round; EXPL_UNTIL=25k with updates running from
# the first episode's end on (the log's loop, no burst); runs of 4M (the log's runs reached 3.25M)
LOG_CODEBASE = {"train.action_repeat": 1, "train.episode_length": 1000, "train.steps": 4 * M,
                "train.collect_steps": 200, "train.k_update": 50, "train.expl_until": 25 * k,
                "train.explore_updates": "steady"}
SHAPING_UNFAIR = {"t", "q_knee", "r1_soft", "r2_gait", "rstack", "rstack_nosmooth", "rstack_nosoft"}

# phase: (parent, {dotted key: value that differs from the parent's}, seeds, benchmark_fair, {variant: diff})
LEDGER = {
    # the log's codebase (the log records no settings for baseline: vanilla TD-MPC2 at its update rate)
    "baseline": ("base", LOG_CODEBASE, "1-5", True, {}),
    "z": ("baseline", {}, "1-5", True, {}),  # vanilla baseline NS=512: baseline's config, re-run in iteration 6
    # iterations 1-2
    "1b": ("baseline", {"glass.enabled": True}, "1-5", True, {}),
    "1c": ("1b", {"schedule.action_noise_start": 0.30, "schedule.action_noise_end": 0.10,
                  "schedule.action_noise_anneal_env_steps": 1 * M}, "1-5", True, {}),
    "d_v1": ("1b", {"horizon": 5, "schedule.action_noise_start": 0.40, "schedule.action_noise_end": 0.40},
             "1-5", True, {}),
    "d_v2": ("1b", {"horizon": 5}, "1-5", True, {}),
    "e": ("1b", {"schedule.q_reset_at": [500 * k]}, "1-5", True, {}),
    "f": ("1b", {"schedule.action_smooth_coef": 1e-3}, "1-5", True, {}),
    "g": ("1b", {"optim.consistency_coef": 1.0}, "1-5", True, {}),
    "h": ("f", {"optim.consistency_coef": 1.0}, "1-2", True, {}),
    # iteration 3
    "i": ("f", {"schedule.action_smooth_coef": 1e-4}, "1", True, {}),
    "j": ("f", {"schedule.action_smooth_from": 250 * k}, "1-5", True, {}),
    "k": ("f", {"glass.lambda_temp": 0.05}, "1", True, {}),
    "l_v1": ("f", {"glass.enabled": False}, "1", True, {}),
    "m": ("1b", {"schedule.perturb_at": [500 * k], "schedule.perturb_scale": 0.1}, "1-5", True, {}),
    "n": ("m", {"schedule.perturb_scale": 0.3}, "1-5", True, {}),
    "o": ("1b", {"glass.off_after": 2 * M}, "3-5", True, {}),  # 9.2: s3 578, s4 254, s5 33
    # iterations 4-5
    "p": ("1b", {"train.expl_until": 500 * k}, "3-5", True, {}),  # 9.2: s3 197, s4 538, s5 27
    "t": ("1b", {"shaping.knee_penalty": 0.1}, "1-3", False, {}),  # 9.2: s1 375, s2 612, s3 534
    # v: the distribution carries gradients into the encoder (the drift the log reports needs them)
    "v": ("1b", {"glass.cluster_input": True, "glass.cluster_input_grad": True}, "1-5", True, {}),
    "x": ("1b", {"planner.num_samples": 2048}, "1-5", True, {}),
    "y": ("1b", {"glass.num_super": 4}, "1-3", True, {}),
    "P": ("1b", {"glass.intrinsic_coef": 0.1}, "1-5", True, {}),
    "Pa": ("P", {"glass.intrinsic_decay_until": 1 * M}, "1-5", True, {}),
    # iteration 6: the reward shaping audit, on vanilla TD-MPC2 (its reference row is z)
    "q_knee": ("z", {"shaping.knee_penalty": 0.1, "planner.num_samples": 2048}, "1-12", False, {}),
    "r1_soft": ("z", {"shaping.soft_stand_bonus": 0.1, "shaping.soft_stand_decay_until": 3 * M}, "1-5", False,
                {}),
    "r2_gait": ("z", {"shaping.gait_fall_penalty": 0.1, "schedule.action_smooth_coef": 1e-3}, "1-4", False, {}),
    "rstack": ("q_knee", {"shaping.soft_stand_bonus": 0.1, "shaping.soft_stand_decay_until": 3 * M,
                          "shaping.gait_fall_penalty": 0.1, "schedule.action_smooth_coef": 1e-3}, "1-3", False, {}),
    "rstack_nosmooth": ("rstack", {"schedule.action_smooth_coef": 0.0}, "1-2", False, {}),
    "rstack_nosoft": ("rstack", {"shaping.soft_stand_bonus": 0.0, "shaping.soft_stand_decay_until": None},
                      "1-2", False, {}),
    # iteration 7: K_UPDATE 64 / 128 / 256 per 256 decisions = 50 / 100 / 200 per 200-decision round
    "aa": ("z", {"planner.num_samples": 2048}, "1-3", True,
           {"k64": {}, "k128": {"train.k_update": 100}, "k256": {"train.k_update": 200}}),
    "aa_winner": ("aa", {"train.k_update": 100}, "1-5", True, {}),  # k128 until aa has run
    "ab": ("aa_winner", {}, "1-5", True, {}),
    "ac": ("aa_winner", {"glass.enabled": True}, "1-5", True, {"glass": {}, "vanilla": {"glass.enabled": False}}),
    # section 10: directions, on ac's Glass arm
    # 10.2: "W=5-10 env steps should cover one hop phase (~0.2s at 50Hz)": W = 5 and 10 decisions (0.1 s, 0.2 s)
    "window": ("ac", {"glass.lambda_window": 1e-3, "glass.window": 5}, "1-5", True,
               {"w5": {}, "w10": {"glass.window": 10}}),
    # 10.3: "NT-Xent on c_t", similarity c.c', "foot on ground vs. not", negatives from "different episodes"
    "phase_contrast": ("ac", {"glass.lambda_contrast": 1e-3, "glass.contrast_sim": "dot",
                              "glass.contrast_label": "binary", "glass.contrast_pairs": "episode"}, "1-5", True, {}),
    "nk": ("ac", {}, "1-5", True, {"n4k4": {"glass.num_prototypes": 4, "glass.num_clusters": 4},
                                   "n8k4": {"glass.num_prototypes": 8, "glass.num_clusters": 4},
                                   "n4k2": {"glass.num_prototypes": 4, "glass.num_clusters": 2}}),
    # 10.5: the log's MoE at K=4, and controls isolating the MoE (K=4 without it, the MoE at ac's K=8)
    "moe_q": ("ac", {"glass.moe_q": True, "glass.num_clusters": 4}, "1-5", True,
              {"moe": {}, "k4": {"glass.moe_q": False}, "moe_k8": {"glass.num_clusters": 8}}),
    "basin_restart": ("ac", {"schedule.restart_check_at": 200 * k}, "1-5", True, {}),
    "kmeans_init": ("ac", {"glass.kmeans_init": True, "train.expl_until": 500 * k}, "1-5", True, {}),
    "multitask": ("ac", {"multitask.tasks": ["hopper-hop", "hopper-stand"], "multitask.target_usage": [0.5, 0.5],
                         "multitask.eta": 1.0, "train.steps": 2 * 4 * M}, "1-5", True,
                  # 10.8's mitigation, task-specific heads, beside the shared model
                  {"shared": {}, "heads": {"multitask.task_heads": True}}),
}
# the ledger as the issue lists it (sections 4 and 8, aa / ab / ac, and section 10's directions)
LEDGER_PHASES = ["baseline", "1b", "1c", "d_v1", "d_v2", "e", "f", "g", "h", "i", "j", "k", "l_v1", "m", "n", "o",
                 "p", "t", "v", "x", "y", "P", "Pa", "z", "q_knee", "r1_soft", "r2_gait", "rstack",
                 "rstack_nosmooth", "rstack_nosoft", "aa", "ab", "ac", "window", "phase_contrast", "nk", "moe_q",
                 "basin_restart", "kmeans_init", "multitask"]
NOT_LOG_PHASES = {"base", "demo", "demo_glass"}  # TD-MPC2's defaults and the CPU demo


def flat_config(name: str, variant: str | None = None) -> dict:
    return flatten(to_dict(resolve(name, variant).cfg))


def difference(child: dict, parent: dict) -> dict:
    assert child.keys() == parent.keys()
    return {k: v for k, v in child.items() if v != parent[k]}


def test_every_ledger_phase_has_a_file_and_every_file_a_row():
    for name in LEDGER_PHASES:
        assert read_phase(find_phase(name)).name == name
    names = {read_phase(path).name for path in all_phase_files()}
    assert names == set(LEDGER) | NOT_LOG_PHASES
    assert set(LEDGER_PHASES) <= set(LEDGER)


@pytest.mark.parametrize("name", list(LEDGER))
def test_phase_differs_from_its_parent_exactly_as_the_table_says(name):
    parent, expected, seeds, fair, variants = LEDGER[name]
    phase = lineage(name)[-1]
    assert phase.extends == parent
    assert difference(flat_config(name), flat_config(parent)) == expected
    assert phase.seeds == parse(seeds)
    assert phase.benchmark_fair is fair
    assert list(phase.variants) == list(variants)
    own = flat_config(name)
    for variant, diff in variants.items():
        assert difference(flat_config(name, variant), own) == diff, variant
    assert phase.description.splitlines()[0].strip(), "the first line is the summary `list` prints"


def parse(seeds: str) -> list[int]:
    low, _, high = seeds.partition("-")
    return list(range(int(low), int(high or low) + 1))


def updates_per_decision(cfg) -> float:
    d = derive(cfg)
    return d.k_update / d.collect_steps


def test_aa_expresses_the_logs_update_rates_per_decision():
    # the log's K_UPDATE counts updates per 256 decisions; a round here must divide the 1000-decision episode
    for variant, log_k_update in (("k64", 64), ("k128", 128), ("k256", 256)):
        cfg = resolve("aa", variant).cfg
        assert updates_per_decision(cfg) == log_k_update / 256
        assert cfg.train.episode_length % derive(cfg).steps_per_env_per_round == 0
        assert cfg.planner.num_samples == 2048 and not cfg.glass.enabled
    assert updates_per_decision(resolve("baseline").cfg) == 0.25  # the log's codebase, iterations 1-7
    # "Official TD-MPC2: ~1.0 updates per env step. We've been training at 4x lower update rate"
    assert updates_per_decision(resolve("base").cfg) == updates_per_decision(resolve("aa", "k256").cfg) == 1.0


def test_ab_and_ac_take_their_update_rate_from_one_place():
    holder = read_phase(find_phase("aa_winner"))
    assert list(flatten(holder.overrides)) == ["train.k_update"]
    for name in ("ab", "ac", "window", "nk", "multitask"):
        assert "aa_winner" in [p.name for p in lineage(name)]
        assert "train.k_update" not in flatten(read_phase(find_phase(name)).overrides)
    assert {resolve("ab").cfg.train.k_update, resolve("ac", "glass").cfg.train.k_update,
            resolve("ac", "vanilla").cfg.train.k_update} == {holder.overrides["train.k_update"]}


def test_ab_is_acs_vanilla_arm():
    assert flat_config("ab") == flat_config("ac", "vanilla")


def test_shaping_phases_are_benchmark_unfair_and_no_other_phase_shapes():
    for path in all_phase_files():
        phase = read_phase(path)
        shaped = any(shaping_keys(resolve(str(path), v).cfg) for v in [None, *phase.variants])
        assert shaped == (phase.name in SHAPING_UNFAIR), phase.name
        assert phase.benchmark_fair is (phase.name not in SHAPING_UNFAIR), phase.name


def test_descriptions_say_what_the_log_recorded_and_what_was_assumed():
    for name in LEDGER_PHASES:
        text = " ".join(read_phase(find_phase(name)).description.split())
        assert len(text) > 80, name
    assert "records no settings" in " ".join(read_phase(find_phase("baseline")).description.split())
    for name, word in (("t", "assumed"), ("e", "assumed"), ("m", "assumed"), ("1c", "assumed"), ("Pa", "assumed"),
                       ("r2_gait", "assumed"), ("window", "assumed"), ("multitask", "assumed")):
        assert word in read_phase(find_phase(name)).description.lower(), name


# ---- names: P and p, aliases, runs directories ------------------------------------------------------------------

def test_p_and_P_are_distinct_phases_in_files_that_differ_ignoring_case():
    p, big_p = read_phase(find_phase("p")), read_phase(find_phase("P"))
    assert (p.name, big_p.name) == ("p", "P") and p.path != big_p.path
    assert p.path.name == "p.yaml" and big_p.path.name == "P_intrinsic.yaml"
    stems = [path.stem.lower() for path in all_phase_files()]
    assert len(stems) == len(set(stems))
    assert (p.dir_name, big_p.dir_name) == ("p", "P_intrinsic")  # runs dirs cannot collide either
    assert read_phase(find_phase("Pa")).extends == "P"
    assert resolve("Pa").cfg.glass.intrinsic_coef == 0.1


def test_a_phase_can_be_named_by_an_alias_of_the_log():
    for alias, name in (("phasep", "p"), ("phaseq_knee", "q_knee"), ("phaser1_soft", "r1_soft"),
                        ("phasex_4060", "x"), ("phaseP", "P"), ("phasez", "z")):
        assert read_phase(find_phase(alias)).name == name


def test_unknown_phase_suggests_a_close_name():
    with pytest.raises(PhaseError, match=r"unknown phase 'q_kne'.*did you mean 'q_knee'"):
        find_phase("q_kne")


def test_a_file_in_phases_must_be_named_after_its_phase(tmp_path):
    folder = tmp_path / "phases"
    folder.mkdir()
    (folder / "base.yaml").write_text("name: base\n")
    (folder / "other.yaml").write_text("name: mine\nextends: base\n")
    with pytest.raises(PhaseError, match="other.yaml: name: 'mine' differs from the file name 'other'"):
        read_phase(folder / "other.yaml", folder)
    (folder / "mine_tagged.yaml").write_text("name: mine\nextends: base\n")
    assert read_phase(find_phase("mine", folder), folder).path.name == "mine_tagged.yaml"
    (folder / "child.yaml").write_text("name: child\nextends: mine\n")
    assert [p.name for p in lineage("child", folder)] == ["base", "mine", "child"]


def cli(*args):
    return subprocess.run([sys.executable, "-m", "experiments.launch", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)


def test_validate_refuses_two_phase_files_that_collide_ignoring_case(tmp_path):
    (tmp_path / "q.yaml").write_text("name: q\nextends: base\n")
    (tmp_path / "Q.yaml").write_text("name: Q\nextends: base\n")
    result = cli("validate", tmp_path / "q.yaml", tmp_path / "Q.yaml")
    assert result.returncode == 2
    assert "Q.yaml: file name 'Q' equals that of" in result.stderr and "case-insensitive" in result.stderr


# ---- a fair phase cannot shape the reward -----------------------------------------------------------------------

def write(folder: Path, stem: str, **fields) -> Path:
    path = folder / f"{stem}.yaml"
    path.write_text(yaml.safe_dump(fields, sort_keys=False))
    return path


@pytest.mark.parametrize("command", ["run", "sweep", "validate", "describe"])
def test_a_phase_claiming_fairness_while_shaping_exits_2_naming_file_and_key(tmp_path, command):
    path = write(tmp_path, "fairknee", name="fairknee", extends="t", benchmark_fair=True)
    extra = ["--runs-root", tmp_path / "runs"] if command in ("run", "sweep") else []
    result = cli(command, path, *extra)
    assert result.returncode == 2, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ") and "fairknee.yaml: benchmark_fair: true" in line
    assert "shaping.knee_penalty is 0.1" in line and "phases/t.yaml" in line
    assert not (tmp_path / "runs").exists()


def test_shaping_from_a_variant_or_the_command_line_is_refused_on_a_fair_phase(tmp_path):
    path = write(tmp_path, "fv", name="fv", extends="1b", variants={"shaped": {"shaping.gait_fall_penalty": 0.2}})
    result = cli("validate", path)
    assert result.returncode == 2
    assert "fv.yaml: benchmark_fair: true, but shaping.gait_fall_penalty is 0.2 (variant shaped)" in result.stderr
    result = cli("describe", "z", "--set", "shaping.soft_stand_bonus=0.5")
    assert result.returncode == 2
    assert "phases/z.yaml: benchmark_fair: true, but shaping.soft_stand_bonus is 0.5, set by command line" in (
        result.stderr)


def test_an_unfair_phase_may_turn_shaping_off_again():
    assert not shaping_keys(resolve("z").cfg)
    assert shaping_keys(resolve("rstack_nosoft").cfg) == {"shaping.knee_penalty": 0.1, "shaping.gait_fall_penalty": 0.1}
