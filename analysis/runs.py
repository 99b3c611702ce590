"""The one run loader that every analysis tool and the dashboard share.

A runs root holds `<root>/<phase>/<variant>/seed<k>/` directories, laid out as tdmpc_glass/runlayout.py
describes (config.yaml, eval.csv, train.csv, status.json, events.jsonl, checkpoints/, videos/; every name is
taken from that module). The loader is lenient the way a researcher's disk is messy:

- running, interrupted and failed runs load like finished ones (a run is whatever of its files can be read);
- a CSV whose writer was cut mid-row loses only that partial last row; missing or empty files read as empty;
- directories that are not run directories (no `seed<k>` name, or none of a run's files inside) are ignored;
- a phase filed under another name is merged into its canonical name through the `aliases` lists of
  phases/*.yaml and of the runs' own config.yaml (e.g. `phasez/` -> `z`);
- a run is benchmark-unfair if its config.yaml or its phase file says so.

A run's *label* is `phase` for the default variant and `phase:variant` otherwise (`aa:k128`).
Its best MPPI is the highest mppi_return over its evaluation rows.
"""
from __future__ import annotations

import io
import json
import math
import os
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pandas as pd
import yaml

from tdmpc_glass import runlayout
from tdmpc_glass.runlayout import DEFAULT_VARIANT, RUN_FILES, seed_of

REPO_ROOT = Path(__file__).resolve().parents[1]
PHASES_DIR = REPO_ROOT / "phases"


class AnalysisError(ValueError):
    """A problem with the input that the command-line tools report as one line `error: ...` and exit 2."""


# ---- lenient readers -------------------------------------------------------------------------------------------

def read_csv(path: str | os.PathLike) -> pd.DataFrame:
    """A CSV that is appended to row by row, possibly while we read it.

    A missing, unreadable or empty file is an empty frame; a last line without its newline is a row the writer
    had not finished and is dropped, as are rows with more fields than the header.
    """
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return pd.DataFrame()
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]  # rfind = -1 (no newline at all) leaves nothing
    if not text.strip():
        return pd.DataFrame()
    try:
        frame = pd.read_csv(io.StringIO(text), on_bad_lines="skip")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError):
        return pd.DataFrame()
    for column in frame.columns:  # a stray text cell must not turn a numeric column into strings
        if frame[column].dtype == object:
            converted = pd.to_numeric(frame[column], errors="coerce")
            if converted.notna().sum() >= frame[column].notna().sum() * 0.5 and converted.notna().any():
                frame[column] = converted
    return frame


def read_yaml(path: str | os.PathLike) -> dict:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """One JSON object per line; a partial or broken line is skipped."""
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict):
            out.append(item)
    return out


# ---- phases and their names ------------------------------------------------------------------------------------

@dataclass
class PhaseInfo:
    """What phases/<name>.yaml says about a phase (read as plain YAML; analysis never imports the launcher)."""
    name: str
    description: str = ""
    benchmark_fair: bool = True
    aliases: list[str] = field(default_factory=list)
    variants: list[str] = field(default_factory=list)


def phase_catalogue(phases_dir: str | os.PathLike | None = PHASES_DIR) -> dict[str, PhaseInfo]:
    """Canonical phase name -> PhaseInfo for every phases/*.yaml (an unreadable file is skipped)."""
    out: dict[str, PhaseInfo] = {}
    if phases_dir is None:
        return out
    for path in sorted(Path(phases_dir).glob("*.yaml")):
        data = read_yaml(path)
        if not data:
            continue
        name = str(data.get("name") or path.stem)
        variants = data.get("variants")
        out[name] = PhaseInfo(
            name=name,
            description=" ".join(str(data.get("description") or "").split()),
            benchmark_fair=as_bool(data.get("benchmark_fair", True)),
            aliases=[str(a) for a in data.get("aliases") or [] if a is not None],
            variants=[str(v) for v in variants] if isinstance(variants, dict) else [])
    return out


def as_bool(value, default: bool = True) -> bool:
    """A yes/no cell of a YAML or CSV file (true/false, 1/0, yes/no, on/off ...); `default` when blank or unclear."""
    if isinstance(value, bool):
        return value
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return default
    text = str(value).strip().lower()
    if text in ("false", "0", "no", "n", "f", "off"):
        return False
    if text in ("true", "1", "yes", "y", "t", "on"):
        return True
    return default


class PhaseNames:
    """Resolves any name a phase was filed under to its canonical name.

    Names linked by an `aliases` list (of phases/*.yaml or of a run's config.yaml) form one group, linked
    transitively. A group's canonical name is its phases/*.yaml name if it has one, else a name that some file
    declares as its `name` and that nobody lists as an alias, else the first declared name in natural order.
    """

    def __init__(self, catalogue: dict[str, PhaseInfo] | None = None):
        self.catalogue = dict(catalogue or {})
        self._parent: dict[str, str] = {}
        self._declared: set[str] = set()
        self._aliased: set[str] = set()
        self._cache: dict[str, str] = {}
        for info in self.catalogue.values():
            self.add(info.name, info.aliases)

    def _find(self, name: str) -> str:
        self._parent.setdefault(name, name)
        while self._parent[name] != name:
            self._parent[name] = self._parent[self._parent[name]]
            name = self._parent[name]
        return name

    def add(self, name: str, aliases=()) -> None:
        """Declare `name` (a phase's own name) and the other names its results were filed under."""
        name = str(name)
        self._declared.add(name)
        self._find(name)
        for alias in aliases or []:
            alias = str(alias)
            if alias and alias != name:
                self._aliased.add(alias)
                self._parent[self._find(alias)] = self._find(name)
        self._cache.clear()

    def canonical(self, name: str) -> str:
        name = str(name)
        if name not in self._parent:
            return name
        if name not in self._cache:
            root = self._find(name)
            group = [n for n in self._parent if self._find(n) == root]
            ranked = sorted(group, key=lambda n: (n not in self.catalogue, n in self._aliased or n not in
                                                  self._declared, n not in self._declared, natural_key(n)))
            for member in group:
                self._cache[member] = ranked[0]
        return self._cache[name]

    def label(self, label: str) -> str:
        """Canonical form of a label `phase` or `phase:variant` (`phase:default` is written `phase`)."""
        phase, variant = split_label(label)
        return make_label(self.canonical(phase), variant)

    def info(self, name: str) -> PhaseInfo | None:
        return self.catalogue.get(self.canonical(name))


def split_label(label: str) -> tuple[str, str]:
    phase, _, variant = str(label).partition(":")
    return phase, variant or DEFAULT_VARIANT


def make_label(phase: str, variant: str = DEFAULT_VARIANT) -> str:
    return phase if variant in ("", DEFAULT_VARIANT) else f"{phase}:{variant}"


# ---- runs ------------------------------------------------------------------------------------------------------

@dataclass(eq=False)
class Run:
    """One seed of one phase variant, as far as its files can be read."""
    path: Path
    phase: str  # canonical phase name
    variant: str
    seed: int
    filed_as: str  # the phase directory name on disk
    benchmark_fair: bool
    description: str
    record: dict  # config.yaml as read ({} when missing)

    @property
    def label(self) -> str:
        """`phase` for the default variant, else `phase:variant` (e.g. `aa:k128`)."""
        return make_label(self.phase, self.variant)

    @cached_property
    def eval(self) -> pd.DataFrame:
        return read_csv(self.path / runlayout.EVAL)

    def train(self) -> pd.DataFrame:
        """train.csv, read on demand (it can be large); not cached, so a live reader sees new rows."""
        return read_csv(self.path / runlayout.TRAIN)

    def events(self) -> list[dict]:
        return read_jsonl(self.path / runlayout.EVENTS)

    @cached_property
    def status_record(self) -> dict:
        return runlayout.read_status(self.path)

    @property
    def status(self) -> str:
        """running / done / failed / interrupted, or `unknown` without a readable status.json."""
        return str(self.status_record.get("status") or "unknown")

    @property
    def config(self) -> dict:
        cfg = self.record.get("config")
        return cfg if isinstance(cfg, dict) else {}

    @property
    def task(self) -> str | None:
        task = self.config.get("task")
        return str(task) if task else None

    @property
    def best_mppi(self) -> float | None:
        """Highest mppi_return over the evaluations; None while the run has no evaluation."""
        if "mppi_return" not in self.eval:
            return None
        values = pd.to_numeric(self.eval["mppi_return"], errors="coerce").dropna()
        return float(values.max()) if len(values) else None

    @property
    def env_steps(self) -> int | None:
        """How far the run got: the larger of its last evaluated env step and status.json's env_step."""
        steps = []
        if "env_step" in self.eval:
            evaluated = pd.to_numeric(self.eval["env_step"], errors="coerce").dropna()
            if len(evaluated):
                steps.append(int(evaluated.max()))
        step = self.status_record.get("env_step")
        if isinstance(step, (int, float)) and not isinstance(step, bool) and math.isfinite(step):
            steps.append(int(step))
        return max(steps) if steps else None


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and seed_of(path) is not None and any((path / f).is_file() for f in RUN_FILES)


def find_run_dirs(root: Path) -> list[Path]:
    """`<root>/<phase>/<variant>/seed<k>` directories holding at least one run file; hidden folders skipped."""
    out = []
    for phase_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
        for variant_dir in sorted(p for p in phase_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            out += [p for p in sorted(variant_dir.iterdir()) if is_run_dir(p)]
    return out


def load_runs(root: str | os.PathLike, phases_dir: str | os.PathLike | None = PHASES_DIR,
              names: PhaseNames | None = None) -> list[Run]:
    """Every run under `root`, sorted by (phase, variant, seed). Raises AnalysisError if root is not a folder.

    `names` (optional) is updated with the aliases the runs' config.yaml files declare, so a caller can resolve
    labels typed by a user or imported from a CSV the same way.
    """
    root = Path(root)
    if not root.exists():
        raise AnalysisError(f"runs root {root} does not exist")
    if not root.is_dir():
        raise AnalysisError(f"runs root {root} is not a directory")
    names = names if names is not None else PhaseNames(phase_catalogue(phases_dir))
    found = []
    for seed_dir in find_run_dirs(root):
        record = read_yaml(seed_dir / runlayout.CONFIG)
        meta = record.get("phase")
        meta = meta if isinstance(meta, dict) else {"name": meta} if isinstance(meta, str) and meta else {}
        recorded = str(meta.get("name") or seed_dir.parent.parent.name)
        names.add(recorded, meta.get("aliases"))
        if recorded != seed_dir.parent.parent.name:
            names.add(recorded, [seed_dir.parent.parent.name])
        found.append((seed_dir, record, meta, recorded))
    runs = []
    for seed_dir, record, meta, recorded in found:  # after every config is read, so aliases apply to all runs
        phase = names.canonical(recorded)
        info = names.catalogue.get(phase)
        # unfair if the run's record or the phase file says so: a phase marked unfair later never counts for G1/G2
        fair = as_bool(meta.get("benchmark_fair"), True) and (info.benchmark_fair if info else True)
        description = " ".join(str(meta.get("description") or (info.description if info else "")).split())
        runs.append(Run(path=seed_dir, phase=phase, variant=str(meta.get("variant") or seed_dir.parent.name),
                        seed=seed_of(seed_dir), filed_as=seed_dir.parent.parent.name,
                        benchmark_fair=fair, description=description, record=record))
    return sorted(runs, key=lambda r: (natural_key(r.phase), natural_key(r.variant), r.seed))


def natural_key(text: str) -> tuple:
    """Sort key that puts `2` before `10` (phase names like 1b, aa, k64/k128)."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part.lower())
                 for part in re.split(r"(\d+)", str(text)) if part)
