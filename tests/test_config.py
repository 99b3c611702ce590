"""Config loading: layers of dotted overrides over the schema, type-checked by OmegaConf, one-line errors."""
import dataclasses
import itertools

import pytest
import yaml

from experiments.phases import PhaseError, format_seeds, parse_seeds
from tdmpc_glass.config import (
    Config, ConfigError, build_config, config_from_dict, config_to_yaml, dotted_keys, nearest_key,
    parse_override, to_dict,
)


def error_of(layers) -> str:
    with pytest.raises(ConfigError) as info:
        build_config(layers)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_no_layers_gives_the_schema_defaults():
    assert build_config([]) == Config()


def test_layers_apply_in_order_and_accept_dotted_or_nested_keys():
    cfg = build_config([
        ("phases/base.yaml", {"planner.num_samples": 256, "train": {"steps": 5000}}),
        ("phases/child.yaml", {"planner": {"num_samples": 128}}),
        ("command line", {"train.k_update": None, "optim.lr": 1}),
    ])
    assert cfg.planner.num_samples == 128
    assert cfg.train.steps == 5000
    assert cfg.train.k_update is None
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)
    assert isinstance(cfg, Config) and isinstance(cfg.planner, type(Config().planner))


def test_unknown_key_names_source_key_and_nearest_valid_key():
    assert error_of([("phases/z.yaml", {"planer.num_samples": 64})]) == (
        "phases/z.yaml: unknown key 'planer.num_samples' (did you mean 'planner.num_samples'?)")
    assert "did you mean 'train.k_update'" in error_of([("command line", {"train.k_updat": 64})])
    assert "did you mean 'model.size'" in error_of([("x.yaml", {"modle": {"size": 1}})])
    # a right leaf under a missing section
    assert "did you mean 'planner.num_samples'" in error_of([("x.yaml", {"num_samples": 64})])
    # nothing close: no guess
    assert error_of([("x.yaml", {"zzzz": 1})]) == "x.yaml: unknown key 'zzzz'"


def test_every_schema_key_is_its_own_nearest_key():
    for key in dotted_keys():
        assert nearest_key(key) == key


def test_wrong_type_names_source_key_expected_type_and_value():
    assert error_of([("command line", {"train.steps": "abc"})]) == "command line: train.steps: expected int, got 'abc'"
    assert error_of([("p.yaml", {"train.steps": 1.5})]) == "p.yaml: train.steps: expected int, got 1.5"
    assert error_of([("p.yaml", {"horizon": None})]) == "p.yaml: horizon: expected int, got None"
    assert error_of([("p.yaml", {"optim.lr": "fast"})]) == "p.yaml: optim.lr: expected float, got 'fast'"
    assert error_of([("p.yaml", {"train.k_update": "many"})]) == (
        "p.yaml: train.k_update: expected int or null, got 'many'")
    assert error_of([("p.yaml", {"planner.mpc": "maybe"})]) == "p.yaml: planner.mpc: expected bool, got 'maybe'"


def test_a_section_given_a_value_is_reported_as_a_section():
    assert error_of([("p.yaml", {"model": 5})]) == (
        "p.yaml: 'model' is a section, not a value; set its keys, e.g. 'model.size'")


def test_cross_field_check_errors_name_the_resolved_config():
    message = error_of([("p.yaml", {"planner.num_elites": 1000})])
    assert message.startswith("resolved config: planner.num_elites:")
    assert error_of([("p.yaml", {"model.size": 7})]).startswith("resolved config: model.size:")


@pytest.mark.parametrize("key, value", [
    ("train.num_envs", 0), ("train.action_repeat", 0), ("train.episode_length", 0), ("train.collect_steps", 0),
    ("optim.discount_denom", 0.0),
])
def test_a_zero_count_the_derived_values_divide_by_is_named_not_a_division_error(key, value):
    assert error_of([("p.yaml", {key: value})]).startswith(f"resolved config: {key}: must be ")


@pytest.mark.parametrize("key, value, why", [
    ("graph", "dense", "'dense' is not one of rownorm_sym, counts_sym, flow"),
    ("graph_grad", "some", "'some' is not one of full, prototypes, none"),
    ("se_objective", "h3", "'h3' is not one of h2, neg_resistance"),
    ("balance", "l2", "'l2' is not one of kl, sinkhorn, none"),
    ("num_prototypes", 1, "need N >= 2 prototypes"), ("num_clusters", 0, "need K >= 1 clusters"),
    ("num_super", -1, "need K_super >= 0"),
    ("tau_p", 0.0, "must be > 0"), ("contrast_tau", -1.0, "must be > 0"),
    ("lambda_se", -1e-4, "must be >= 0"), ("lambda_bal", -1.0, "must be >= 0"), ("lambda_temp", -1.0, "must be >= 0"),
    ("lambda_window", -1.0, "must be >= 0"), ("lambda_row_entropy", -1.0, "must be >= 0"),
    ("lambda_contrast", -1.0, "must be >= 0"), ("intrinsic_coef", -0.1, "must be >= 0"),
    ("graph_eps", -1e-6, "must be >= 0"), ("window", 0, "must be >= 1"),
    ("intrinsic_decay_until", 0, "must be null or >= 1"),
    ("window_form", "mean", "'mean' is not one of mi, average"), ("slice_len", 1, "must be null or >= 2 frames"),
    ("contrast_sim", "l2", "'l2' is not one of cosine, dot"),
    ("contrast_label", "toe", "'toe' is not one of pattern, binary"),
    ("contrast_pairs", "all", "'all' is not one of label, episode"),
    ("active_rule", "hard", "'hard' is not one of argmax, soft"),
])
def test_bad_glass_values_name_the_key_in_one_line(key, value, why):
    """Each glass.* key's allowed values, checked once (GlassConfig.validate), with Glass on or off."""
    for enabled in (False, True):
        message = error_of([("p.yaml", {"glass.enabled": enabled, f"glass.{key}": value})])
        assert message.startswith(f"resolved config: glass.{key}: ") and why in message, message


def test_glass_windows_of_5_to_10_frames_are_independent_of_the_td_horizon():
    """Issue 12 item 4. Before: glass.window > horizon + 1 = 4 with the loss on was an error (windows lay inside
    the TD batch's slices). Now the Glass terms get slices of their own: W = 5..10 resolves whatever the horizon,
    the default slice length grows to the window's frames, and only an explicit glass.slice_len can be too short."""
    for window, form in itertools.product(range(5, 11), ("mi", "average")):
        cfg = build_config([("p.yaml", {"horizon": 3, "glass.enabled": True, "glass.lambda_window": 1e-3,
                                        "glass.window": window, "glass.window_form": form})])
        assert cfg.glass.slice_frames(cfg.horizon) == window + (form == "average") > cfg.horizon + 1
    defaults = build_config([])
    assert defaults.glass.window == 4 and defaults.glass.slice_frames(defaults.horizon) == defaults.horizon + 1
    layers = {"horizon": 3, "glass.window": 8, "glass.lambda_window": 1e-3, "glass.window_form": "average"}
    assert error_of([("p.yaml", {**layers, "glass.slice_len": 8})]) == (
        "resolved config: glass.window: 8 (average: 9 frames) does not fit in glass.slice_len = 8 frames "
        "(windows lie inside one Glass slice)")
    assert error_of([("p.yaml", {**layers, "glass.slice_len": 600})]).startswith(
        "resolved config: glass.slice_len: 600 frames do not fit in one episode")


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


@pytest.mark.parametrize("text, expected", [
    ("train.steps=20000", ("train.steps", 20000)),
    ("optim.lr=3.0e-4", ("optim.lr", 3e-4)),
    ("train.k_update=null", ("train.k_update", None)),
    ("planner.mpc=false", ("planner.mpc", False)),
    ("task=hopper-hop", ("task", "hopper-hop")),
    (" task = cheetah-run", ("task", "cheetah-run")),  # spaces around key and value are dropped
])
def test_parse_override_reads_values_as_yaml(text, expected):
    key, value = parse_override(text)
    assert (key, value) == expected
    assert type(value) is type(expected[1])


@pytest.mark.parametrize("text", ["train.steps", "=5", ""])
def test_parse_override_rejects_text_without_key_and_value(text):
    with pytest.raises(ConfigError, match="key=value"):
        parse_override(text)


def test_overrides_parsed_from_the_command_line_feed_build_config():
    cfg = build_config([("command line", dict([parse_override("train.steps=123"),
                                               parse_override("optim.lr=1e-3")]))])
    assert cfg.train.steps == 123
    assert cfg.optim.lr == pytest.approx(1e-3)  # YAML 1.1 reads 1e-3 as text; the float field converts it


def test_yaml_round_trip_restores_the_same_config():
    cfg = build_config([("p.yaml", {"task": "walker-run", "model.size": 1, "model.latent_dim": 64,
                                    "train.k_update": 64, "optim.lr": 1e-3, "planner.mpc": False})])
    text = config_to_yaml(cfg)
    assert config_from_dict(yaml.safe_load(text)) == cfg
    assert yaml.safe_load(text) == to_dict(cfg) == dataclasses.asdict(cfg)


def test_config_from_dict_names_its_source_on_a_foreign_key():
    with pytest.raises(ConfigError, match=r"^runs/x/config.yaml: unknown key 'train.stepz'"):
        config_from_dict({"train": {"stepz": 1}}, source="runs/x/config.yaml")


@pytest.mark.parametrize("text, seeds", [
    ("1-5", [1, 2, 3, 4, 5]), ("3", [3]), (3, [3]), ("1,3,5", [1, 3, 5]), ("1-3,7", [1, 2, 3, 7]),
    ("0", [0]), (" 2 , 4-5", [2, 4, 5]),
])
def test_parse_seeds(text, seeds):
    assert parse_seeds(text) == seeds
    assert parse_seeds(format_seeds(seeds)) == seeds


@pytest.mark.parametrize("text, why", [
    ("3-1", "runs backwards"), ("", "not a list"), ("a", "not a list"), ("-1", "not a list"),
    ("1--3", "not a list"), ("1,1", "more than once"), ("1-3,2", "more than once"), ("1,", "not a list"),
    (True, "expected a seed list"), (None, "expected a seed list"), ("1-100000", "more than"),
])
def test_parse_seeds_rejects_with_one_line_naming_the_source(text, why):
    with pytest.raises(PhaseError) as info:
        parse_seeds(text, source="--seeds")
    message = str(info.value)
    assert message.startswith("--seeds: ") and why in message and "\n" not in message
