"""Phase files: one YAML per ablation, resolved through `extends` chains into a typed Config.

A phase file (phases/<name>.yaml, or any .yaml path given on the command line):

    name: z                      # optional; defaults to the file name (and must equal it inside phases/)
    description: "..."           # what changed and why, in the research log's words
    extends: base                # parent phase; only base (TD-MPC2's defaults) has none
    benchmark_fair: true         # false for reward shaping or env edits
    seeds: 1-5                   # default seeds
    aliases: [phasez]            # other names results of this phase were filed under
    overrides: {planner.num_samples: 512}      # dotted keys of tdmpc_glass.config.Config
    variants: {k64: {train.k_update: 25}}      # optional named variants, each a dict of overrides

Resolution order: the root ancestor's overrides, then each descendant's down to the phase, then the variant's,
then the command line's. Variants are not inherited. A parent is looked up next to the child file first,
then in phases/. Every error is a PhaseError whose one-line message names the file and the key.

File names. Inside phases/ a phase's file is <name>.yaml. Phase names are case-sensitive (the log has both
`p` and `P`), but file names must not collide on a case-insensitive disk, so a phase whose name differs from
another's only in case lives in <name>_<tag>.yaml and says `name: <name>` (P is phases/P_intrinsic.yaml).
Lookups by name read the folder's listing, never the disk's case folding; its runs go under
<runs>/<file stem>/ (config.yaml records the canonical name). On the command line a phase may also be named
by one of its aliases (`phasep` is p). A phase that claims benchmark_fair: true while its resolved config
shapes the reward (any non-zero shaping.* key) is refused.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tdmpc_glass.config import Config, ConfigError, build_config, derive, flatten, to_dict
from tdmpc_glass.runlayout import DEFAULT_VARIANT, count_text  # a phase without variants runs as this one

ROOT = Path(__file__).resolve().parents[1]
PHASES_DIR = ROOT / "phases"
ROOT_PHASE = "base"  # the only phase without a parent: TD-MPC2's defaults
TOP_LEVEL_KEYS = ("name", "description", "extends", "benchmark_fair", "seeds", "aliases", "overrides", "variants")
# phase and variant names become directory names
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class PhaseError(ValueError):
    """A one-line message naming the file and the key."""


@dataclass
class Phase:
    name: str
    path: Path
    description: str = ""
    extends: str | None = None
    benchmark_fair: bool = True
    seeds: list[int] = field(default_factory=lambda: [1])
    aliases: list[str] = field(default_factory=list)
    overrides: dict = field(default_factory=dict)
    variants: dict[str, dict] = field(default_factory=dict)

    @property
    def source(self) -> str:
        return display_path(self.path)

    @property
    def dir_name(self) -> str:
        """The runs directory of the phase: its name, or the file stem for a <name>_<tag>.yaml in phases/."""
        stem = self.path.stem
        return stem if stem != self.name and stem.startswith(self.name + "_") else self.name

    def variant_names(self) -> list[str]:
        return list(self.variants) or [DEFAULT_VARIANT]


def display_path(path: Path) -> str:
    """phases/z.yaml for files of the repository, the path as given otherwise."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def _did_you_mean(word: str, choices) -> str:
    close = difflib.get_close_matches(word, sorted(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def is_phase_file(arg: str) -> bool:
    return arg.endswith((".yaml", ".yml"))


def _yaml_files(folder: Path) -> dict[str, Path]:
    """File stem -> path of the .yaml files in a folder, from its listing: exact case, even on a disk that
    folds case (where phases/P.yaml would otherwise open p.yaml)."""
    try:
        names = os.listdir(folder)
    except OSError:
        return {}
    return {n[: -len(".yaml")]: Path(folder) / n for n in sorted(names) if n.endswith(".yaml")}


def _declared(path: Path) -> dict:
    """The name and aliases a phase file declares, read leniently (a broken file declares nothing)."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def phase_file(name: str, folder: Path) -> Path | None:
    """The file of phase `name` in a folder: <name>.yaml, else a <name>_<tag>.yaml declaring that name."""
    files = _yaml_files(folder)
    if name in files:
        return files[name]
    for stem, path in files.items():
        if stem.startswith(name + "_") and str(_declared(path).get("name")) == name:
            return path
    return None


def _aliases(path: Path) -> list[str]:
    aliases = _declared(path).get("aliases")
    return [str(a) for a in aliases if isinstance(a, (str, int))] if isinstance(aliases, list) else []


def _by_alias(alias: str, folder: Path) -> Path | None:
    """The one file in a folder that lists `alias` among its aliases (None if no file does, or several)."""
    owners = [path for path in _yaml_files(folder).values() if alias in _aliases(path)]
    return owners[0] if len(owners) == 1 else None


def known_names(folder: Path) -> list[str]:
    """File stems and declared names of a folder's phases (for 'did you mean')."""
    files = _yaml_files(folder)
    return sorted({*files, *(str(_declared(p).get("name") or p.stem) for p in files.values())})


def find_phase(name_or_path: str, phases_dir: Path = PHASES_DIR) -> Path:
    """The file of a phase given by name, by alias, or by a path to a .yaml file."""
    if is_phase_file(name_or_path):
        path = Path(name_or_path)
        if not path.is_file():
            raise PhaseError(f"phase file {name_or_path} does not exist")
        return path
    path = phase_file(name_or_path, phases_dir) or _by_alias(name_or_path, phases_dir)
    if path is None:
        missing = display_path(phases_dir / f"{name_or_path}.yaml")
        raise PhaseError(f"unknown phase '{name_or_path}': no {missing}"
                         f"{_did_you_mean(name_or_path, known_names(phases_dir))}")
    return path


def read_phase(path: Path, phases_dir: Path = PHASES_DIR) -> Phase:
    """Parse and check one phase file on its own (its overrides are checked when resolved)."""
    src = display_path(path)
    try:
        data = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise PhaseError(f"{src}{where}: not valid YAML ({getattr(e, 'problem', None) or 'parse error'})") from None
    except OSError as e:
        raise PhaseError(f"{src}: cannot read ({e.strerror})") from None
    if not isinstance(data, dict):
        raise PhaseError(f"{src}: a phase file must be a mapping with keys {', '.join(TOP_LEVEL_KEYS)}")
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            raise PhaseError(f"{src}: unknown key '{key}'{_did_you_mean(str(key), TOP_LEVEL_KEYS)}")

    def expect(key, kinds, what):
        value = data.get(key)
        if value is not None and not isinstance(value, kinds):
            raise PhaseError(f"{src}: {key}: expected {what}, got {value!r}")
        return value

    name = str(expect("name", (str, int), "a name") or Path(path).stem)
    if not _NAME.match(name):
        raise PhaseError(f"{src}: name: {name!r} is not a valid phase name (letters, digits, _ . -)")
    in_phases_dir = Path(path).resolve().parent == phases_dir.resolve()
    stem = Path(path).stem
    if in_phases_dir and name != stem and not stem.startswith(name + "_"):  # `extends` finds parents by file name
        raise PhaseError(f"{src}: name: '{name}' differs from the file name '{stem}' (a file in phases/ is "
                         f"<name>.yaml, or <name>_<tag>.yaml when another name differs from it only in case)")
    extends = expect("extends", (str,), "a parent phase name")
    if extends is None and name != ROOT_PHASE:  # so every phase starts from base's explicit defaults
        raise PhaseError(f"{src}: extends: missing; every phase but {ROOT_PHASE} names a parent (e.g. extends: base)")
    fair = data.get("benchmark_fair", True)
    if not isinstance(fair, bool):
        raise PhaseError(f"{src}: benchmark_fair: expected true or false, got {fair!r}")
    aliases = expect("aliases", (list,), "a list of names") or []
    overrides = expect("overrides", (dict,), "a mapping of dotted config keys to values") or {}
    variants = expect("variants", (dict,), "a mapping of variant names to overrides") or {}
    for vname, vover in variants.items():
        if not _NAME.match(str(vname)) or str(vname) == DEFAULT_VARIANT:
            raise PhaseError(f"{src}: variants: {vname!r} is not a valid variant name "
                             f"(letters, digits, _ . -; '{DEFAULT_VARIANT}' is reserved)")
        if vover is not None and not isinstance(vover, dict):
            raise PhaseError(f"{src}: variants.{vname}: expected a mapping of overrides, got {vover!r}")
    seeds = data.get("seeds", 1)
    return Phase(
        name=name, path=Path(path), description=str(expect("description", (str,), "text") or "").strip(),
        extends=extends, benchmark_fair=fair, seeds=parse_seeds(seeds, source=f"{src}: seeds"),
        aliases=[str(a) for a in aliases], overrides=overrides,
        variants={str(k): (v or {}) for k, v in variants.items()},
    )


def lineage(name_or_path: str, phases_dir: Path = PHASES_DIR) -> list[Phase]:
    """The phase and its ancestors, root first."""
    path = find_phase(name_or_path, phases_dir)
    chain: list[Phase] = []
    seen: list[Path] = []
    while True:
        if path.resolve() in seen:
            names = " -> ".join(p.name for p in chain) + f" -> {read_phase(path, phases_dir).name}"
            raise PhaseError(f"{chain[-1].source}: extends: cycle {names}")
        seen.append(path.resolve())
        phase = read_phase(path, phases_dir)
        chain.append(phase)
        if phase.extends is None:
            return chain[::-1]
        path = _parent_path(phase, phases_dir)


def _parent_path(phase: Phase, phases_dir: Path) -> Path:
    for folder in (phase.path.parent, phases_dir):
        candidate = phase_file(phase.extends, folder)
        if candidate is not None:
            return candidate
    known = known_names(phases_dir) + known_names(phase.path.parent)
    raise PhaseError(f"{phase.source}: extends: parent phase '{phase.extends}' does not exist"
                     f"{_did_you_mean(phase.extends, set(known))}")


def config_layers(chain: list[Phase], variant: str | None = None) -> list[tuple[str, dict]]:
    """The (source, overrides) layers of a phase chain and one of its variants, applied in this order."""
    phase = chain[-1]
    layers = [(p.source, p.overrides) for p in chain]
    if variant is not None and phase.variants:
        if variant not in phase.variants:
            raise PhaseError(f"{phase.source}: unknown variant '{variant}' (variants: {', '.join(phase.variants)})"
                             f"{_did_you_mean(variant, phase.variants)}")
        layers.append((f"{phase.source}: variants.{variant}", phase.variants[variant]))
    elif variant not in (None, DEFAULT_VARIANT):
        raise PhaseError(f"{phase.source}: unknown variant '{variant}' (the phase has no variants)")
    return layers


@dataclass
class Resolved:
    """One variant of a phase, resolved: the Config and the layers it was built from."""

    variant: str
    phase: Phase
    cfg: Config
    layers: list[tuple[str, dict]]

    def source_of(self, key: str) -> str:
        """Which layer set a dotted key last ('schema default' when none did)."""
        for source, mapping in reversed(self.layers):
            if key in flatten(mapping or {}):
                return source
        return "schema default"


def resolve(name_or_path: str, variant: str | None = None, cli_overrides: dict | None = None,
            phases_dir: Path = PHASES_DIR) -> Resolved:
    """One variant of a phase (None: the phase without variant overrides), resolved into a checked Config."""
    chain = lineage(name_or_path, phases_dir)
    layers = config_layers(chain, variant)
    if cli_overrides:
        layers.append(("command line", cli_overrides))
    try:
        cfg = build_config(layers)
    except ConfigError as e:
        raise PhaseError(str(e)) from None
    resolved = Resolved(variant or DEFAULT_VARIANT, chain[-1], cfg, layers)
    check_fairness(resolved)
    return resolved


def shaping_keys(cfg: Config) -> dict:
    """The shaping.* keys of a config that are set (non-zero, non-null): reward shaping, benchmark-unfair."""
    return {f"shaping.{k}": v for k, v in flatten(dataclasses.asdict(cfg.shaping)).items() if v}


def check_fairness(resolved: Resolved) -> None:
    """A phase that shapes the reward cannot claim benchmark_fair: true (its runs would count for G1/G2)."""
    phase = resolved.phase
    shaped = shaping_keys(resolved.cfg)
    if phase.benchmark_fair and shaped:
        key, value = next(iter(shaped.items()))
        where = resolved.source_of(key)
        variant = "" if resolved.variant == DEFAULT_VARIANT else f" (variant {resolved.variant})"
        raise PhaseError(f"{phase.source}: benchmark_fair: true, but {key} is {value!r}{variant}, set by {where}: "
                         f"reward shaping is benchmark-unfair; set benchmark_fair: false")


def resolve_variants(name_or_path: str, variant: str | None = None, cli_overrides: dict | None = None,
                     phases_dir: Path = PHASES_DIR) -> list[Resolved]:
    """The named variant, or every variant of the phase (one after another) when variant is None."""
    phase = lineage(name_or_path, phases_dir)[-1]
    names = [variant] if variant is not None else phase.variant_names()
    return [resolve(name_or_path, name, cli_overrides, phases_dir) for name in names]


# ---- units: the clock of a phase (README "Units and the schedule") --------------------------------------------
# A config counts env steps (simulator control steps); a decision spans action_repeat of them. `list` and
# `describe` print the decision period, the update rate per decision and every schedule point in decisions and
# seconds of simulated time.

# dotted config keys whose values are env-step points of a phase's schedule (lists: several points)
STEP_KEYS = ("train.steps", "train.expl_until", "schedule.action_noise_anneal_env_steps",
             "schedule.action_smooth_from", "schedule.q_reset_at", "schedule.perturb_at", "schedule.restart_check_at",
             "glass.off_after", "glass.intrinsic_decay_until", "shaping.soft_stand_decay_until")


@dataclass(frozen=True)
class Units:
    """A resolved config's clock, update rate and schedule (decision = action_repeat env steps)."""

    action_repeat: int
    control_timestep_s: float  # simulated seconds per env (control) step of the task
    decisions_per_episode: int
    updates_per_round: int  # K_UPDATE
    decisions_per_round: int  # collect_steps, over a seed's envs
    explore_updates: str  # burst (TD-MPC2) | steady (the log's loop)
    update_warmup: int  # env steps before the first update
    seed_updates: int  # updates of the round that ends the uniform-random phase (the burst, or K_UPDATE)
    points: tuple[tuple[str, int], ...]  # (dotted key, env step) of every schedule point that is set

    @property
    def decision_period_ms(self) -> float:
        return round(1000 * self.control_timestep_s * self.action_repeat, 9)

    @property
    def updates_per_decision(self) -> float:
        return self.updates_per_round / self.decisions_per_round

    def decisions(self, env_steps: int) -> float:
        return env_steps / self.action_repeat

    def seconds(self, env_steps: int) -> float:
        return round(env_steps * self.control_timestep_s, 6)


def units(cfg: Config) -> Units:
    from tdmpc_glass.envs import control_timestep  # loads the task's suite (cached per task)

    d, flat = derive(cfg), flatten(to_dict(cfg))
    points = []
    for key in STEP_KEYS:
        value = d.expl_until_env_steps if key == "train.expl_until" else flat[key]
        points += [(key, int(v)) for v in (value if isinstance(value, list) else [value]) if v]  # None, 0: unset
    t = cfg.train
    return Units(t.action_repeat, control_timestep(cfg.task), t.episode_length, d.k_update, d.collect_steps,
                 t.explore_updates, d.update_warmup_env_steps, d.seed_updates, tuple(points))


def intrinsic_bonus_max(cfg: Config) -> float | None:
    """The most intrinsic reward one training episode can collect (phases P, Pa): coef x ln K, paid once per
    decision, over the episode's decisions (research log: "max bonus ~210" for 0.1 x ln 8 x 1000); None without
    the bonus."""
    g, t = cfg.glass, cfg.train
    if not (g.enabled and g.intrinsic_coef > 0):
        return None
    return g.intrinsic_coef * math.log(g.num_clusters) * t.episode_length


def short_count(n: float) -> str:
    """8000000 -> '8M', 50000 -> '50k', 3250000 -> '3.25M', 0.125 -> '0.125'."""
    return count_text(n)


def all_phase_files(phases_dir: Path = PHASES_DIR) -> list[Path]:
    return sorted(phases_dir.glob("*.yaml"), key=lambda p: p.stem.lower())


MAX_SEEDS = 1000  # all seeds of a run share one process; more than this is a typo, not an experiment
_SEED_PART = re.compile(r"^(\d+)(?:-(\d+))?$")


def parse_seeds(text, source: str = "seeds") -> list[int]:
    """'1-5' -> [1, 2, 3, 4, 5]; also '3', '1,3,5', '1-3,7'. Rejects reversed ranges, duplicates, negatives, junk.

    Raises PhaseError('<source>: ...') in one line.
    """
    if isinstance(text, bool) or not isinstance(text, (str, int)):
        raise PhaseError(f"{source}: expected a seed list like 1-5, 3, 1,3,5 or 1-3,7, got {text!r}")
    raw = str(text).replace(" ", "")
    seeds: list[int] = []
    for part in raw.split(","):
        match = _SEED_PART.match(part)
        if not match:
            raise PhaseError(f"{source}: {str(text)!r} is not a list of non-negative seeds like 1-5, 3, 1,3,5 or 1-3,7")
        low = int(match.group(1))
        high = int(match.group(2)) if match.group(2) is not None else low
        if high < low:
            raise PhaseError(f"{source}: range '{part}' runs backwards (did you mean '{high}-{low}'?)")
        if high - low >= MAX_SEEDS:
            raise PhaseError(f"{source}: range '{part}' holds more than {MAX_SEEDS} seeds")
        seeds += range(low, high + 1)
    seen: set[int] = set()
    for s in seeds:
        if s in seen:
            raise PhaseError(f"{source}: {str(text)!r} lists seed {s} more than once")
        seen.add(s)
    return seeds


def format_seeds(seeds: list[int]) -> str:
    """[1, 2, 3, 7] -> '1-3,7' (the inverse of parse_seeds)."""
    parts, start = [], None
    for i, s in enumerate(seeds):
        if start is None:
            start = s
        if i + 1 == len(seeds) or seeds[i + 1] != s + 1:
            parts.append(str(start) if start == s else f"{start}-{s}")
            start = None
    return ",".join(parts)
