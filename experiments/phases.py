"""Phase files: one YAML per ablation, resolved through `extends` chains into a typed Config.

A phase names its parent (`extends`), says what it changes (`overrides`, dotted keys of the Config schema)
and why (`description`), whether it is benchmark-fair, its default seeds, optional named `variants` (each a
set of overrides on top of the phase) and `aliases` (other names its results were filed under).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tdmpc_glass.config import Config, ConfigError, build_config

PHASES_DIR = Path(__file__).resolve().parents[1] / "phases"
TOP_LEVEL_KEYS = {"name", "description", "extends", "benchmark_fair", "seeds", "aliases", "overrides", "variants"}
DEFAULT_VARIANT = "default"


class PhaseError(ValueError):
    """One-line message naming the file and the key."""


@dataclass
class Phase:
    name: str
    path: Path
    description: str = ""
    extends: str | None = None
    benchmark_fair: bool = True
    seeds: str = "1"
    aliases: list[str] = field(default_factory=list)
    overrides: dict = field(default_factory=dict)
    variants: dict[str, dict] = field(default_factory=dict)

    def variant_names(self) -> list[str]:
        return list(self.variants) or [DEFAULT_VARIANT]


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(PHASES_DIR.parent))
    except ValueError:
        return str(path)


def phase_path(name_or_path: str, phases_dir: Path = PHASES_DIR) -> Path:
    if name_or_path.endswith((".yaml", ".yml")):
        path = Path(name_or_path)
        if not path.is_file():
            raise PhaseError(f"phase file {name_or_path} does not exist")
        return path
    path = phases_dir / f"{name_or_path}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in phases_dir.glob("*.yaml"))
        import difflib
        close = difflib.get_close_matches(name_or_path, known, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise PhaseError(f"unknown phase '{name_or_path}': no {_rel(path)}{hint}")
    return path


def read_phase(path: Path) -> Phase:
    src = _rel(path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise PhaseError(f"{src}{where}: not valid YAML") from None
    if not isinstance(data, dict):
        raise PhaseError(f"{src}: a phase file must be a mapping of keys")
    unknown = sorted(set(data) - TOP_LEVEL_KEYS)
    if unknown:
        import difflib
        close = difflib.get_close_matches(unknown[0], sorted(TOP_LEVEL_KEYS), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise PhaseError(f"{src}: unknown key '{unknown[0]}'{hint}")
    name = data.get("name", path.stem)
    for key, kind in (("overrides", dict), ("variants", dict), ("aliases", list)):
        if data.get(key) is not None and not isinstance(data[key], kind):
            raise PhaseError(f"{src}: {key} must be a {kind.__name__}")
    variants = data.get("variants") or {}
    for vname, vover in variants.items():
        if vover is not None and not isinstance(vover, dict):
            raise PhaseError(f"{src}: variants.{vname} must be a mapping of overrides")
    if not isinstance(data.get("benchmark_fair", True), bool):
        raise PhaseError(f"{src}: benchmark_fair must be true or false")
    return Phase(name=str(name), path=path, description=str(data.get("description") or "").strip(),
                 extends=data.get("extends"), benchmark_fair=data.get("benchmark_fair", True),
                 seeds=str(data.get("seeds", "1")), aliases=[str(a) for a in data.get("aliases") or []],
                 overrides=data.get("overrides") or {},
                 variants={str(k): (v or {}) for k, v in variants.items()})


def lineage(name_or_path: str, phases_dir: Path = PHASES_DIR) -> list[Phase]:
    """The phase and its ancestors, root first."""
    chain, seen = [], []
    path = phase_path(name_or_path, phases_dir)
    while True:
        phase = read_phase(path)
        if phase.name in seen:
            raise PhaseError(f"{_rel(path)}: extends: cycle {' -> '.join(seen + [phase.name])}")
        seen.append(phase.name)
        chain.append(phase)
        if not phase.extends:
            return chain[::-1]
        parent = phases_dir / f"{phase.extends}.yaml"
        if not parent.is_file():
            raise PhaseError(f"{_rel(path)}: extends: parent phase '{phase.extends}' does not exist ({_rel(parent)})")
        path = parent


def resolve(name_or_path: str, variant: str | None = None, cli_overrides: dict | None = None,
            phases_dir: Path = PHASES_DIR) -> tuple[Phase, Config]:
    """(phase, resolved Config) for one variant: ancestors' overrides, the phase's, the variant's, the CLI's."""
    chain = lineage(name_or_path, phases_dir)
    phase = chain[-1]
    if variant not in (None, DEFAULT_VARIANT) and variant not in phase.variants:
        raise PhaseError(f"{_rel(phase.path)}: unknown variant '{variant}' (variants: "
                         f"{', '.join(phase.variant_names())})")
    layers = [(_rel(p.path), p.overrides) for p in chain]
    if variant in phase.variants:
        layers.append((f"{_rel(phase.path)} variants.{variant}", phase.variants[variant]))
    if cli_overrides:
        layers.append(("command line", cli_overrides))
    try:
        return phase, build_config(layers)
    except ConfigError as e:
        raise PhaseError(str(e)) from None


def all_phases(phases_dir: Path = PHASES_DIR) -> list[Phase]:
    return [read_phase(p) for p in sorted(phases_dir.glob("*.yaml"))]


_SEEDS = re.compile(r"^\d+(-\d+)?$")


def parse_seeds(text: str) -> list[int]:
    """'1-5' -> [1..5]; also '3', '1,3,5', '1-3,7'. Rejects reversed ranges, duplicates and junk."""
    seeds: list[int] = []
    for part in str(text).replace(" ", "").split(","):
        if not _SEEDS.match(part):
            raise PhaseError(f"seeds: {text!r} is not a seed list like 1-5 or 1,3,5")
        lo, _, hi = part.partition("-")
        lo, hi = int(lo), int(hi or lo)
        if hi < lo:
            raise PhaseError(f"seeds: range {part!r} runs backwards (did you mean {hi}-{lo}?)")
        seeds += range(lo, hi + 1)
    if len(set(seeds)) != len(seeds):
        raise PhaseError(f"seeds: {text!r} lists a seed twice")
    return seeds
