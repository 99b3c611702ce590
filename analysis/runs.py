"""The one run loader that every analysis tool and the dashboard share.

A runs root holds `<root>/<phase>/<variant>/seed<k>/` directories, laid out as tdmpc_glass/runlayout.py
describes (config.yaml, eval.csv, train.csv, status.json, events.jsonl, checkpoints/, videos/; every name is
taken from that module). The loader is lenient the way a researcher's disk is messy:

- running, interrupted and failed runs load like finished ones (a run is whatever of its files can be read);
- a CSV whose writer was cut mid-row loses only that partial last row; missing files read as empty;
- a damaged file (cut short, emptied, random bytes, not UTF-8, the wrong columns) reads as far as it can and is
  named by `Run.damage()` (a `Damage`: the file, one line saying what is wrong, whether any of it is usable),
  so every tool can skip or flag the run with one line instead of failing; a cut last line of a running run
  is a row being written, not damage;
- directories that are not run directories (no `seed<k>` name, or none of a run's files inside) are ignored;
- a phase filed under another name is merged into its canonical name through the `aliases` lists of
  phases/*.yaml and of the runs' own config.yaml (e.g. `phasez/` -> `z`);
- a run is benchmark-unfair if its config.yaml or its phase file says so.

A run's *label* is `phase` for the default variant and `phase:variant` otherwise (`aa:k128`).
Its best MPPI is the highest mppi_return over its evaluation rows.
"""
from __future__ import annotations

import csv
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

EVAL_REQUIRED = ("env_step", "mppi_return")  # columns without which eval.csv is not an evaluation table
TRAIN_REQUIRED = ("env_step",)
EVENT_KEY = "event"  # every line of events.jsonl names its event


@dataclass(frozen=True)
class Damage:
    """A run file that is there but cannot be read whole (cut short, corrupted, not the table it should be).

    reason: what is wrong, one line; usable: False when nothing of the file is used (it reads as if missing),
    True when its readable part is (e.g. every row but a cut last one)."""
    path: Path
    reason: str
    usable: bool

    @property
    def file(self) -> str:
        return self.path.name

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def _read_text(path: Path) -> tuple[str | None, list[str], Damage | None]:
    """(text, notes, fatal) of a run file: text None when missing; notes on a text that is partly bad (bytes
    that are not UTF-8, replaced); fatal when nothing can be read (empty, unreadable)."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return None, [], None
    except OSError as e:
        return None, [], Damage(Path(path), f"unreadable ({e.strerror or type(e).__name__})", False)
    if not data:
        return None, [], Damage(Path(path), "empty (0 bytes)", False)
    try:
        return data.decode("utf-8"), [], None
    except UnicodeDecodeError as e:
        return data.decode("utf-8", errors="replace"), [f"not UTF-8 text (byte {e.start})"], None


def _numeric_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Text cells to numbers column by column: a column at least half of whose non-blank cells are numbers is
    numeric (a stray text cell there becomes NaN); blank cells are NaN."""
    out = {}
    for column in frame.columns:
        cells = frame[column].str.strip()
        blank = cells == ""
        numbers = pd.to_numeric(cells.mask(blank), errors="coerce")
        filled = int((~blank).sum())
        if filled == 0 or (numbers.notna().any() and numbers.notna().sum() >= 0.5 * filled):
            out[column] = numbers
        else:
            out[column] = frame[column].mask(blank)
    return pd.DataFrame(out, index=frame.index)


def _unique(header: list[str]) -> list[str]:
    """Column names made unique the way pandas does (a second `x` becomes `x.1`)."""
    seen: dict[str, int] = {}
    out = []
    for name in header:
        if name in seen:
            seen[name] += 1
            out.append(f"{name}.{seen[name]}")
        else:
            seen[name] = 0
            out.append(name)
    return out


def inspect_csv(path: str | os.PathLike, required: tuple[str, ...] = (), live: bool = False
                ) -> tuple[pd.DataFrame, Damage | None]:
    """A CSV that is appended to row by row, possibly while we read it, and what is wrong with it.

    Returns (frame, damage). A missing file is an empty frame and no damage. The frame holds the rows with as
    many fields as the header and a numeric first required column; numeric columns are numbers. Damage names
    what was left out: a last line without its newline (a row the writer had not finished; not damage while
    `live`, i.e. the run is running), rows with the wrong number of fields, bytes that are not UTF-8; and it
    is unusable (an empty frame) for an empty file, a header without the `required` columns, or no readable row.
    """
    path = Path(path)
    text, notes, fatal = _read_text(path)
    if fatal is not None or text is None:
        return pd.DataFrame(), fatal
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]  # rfind = -1 (no newline at all) leaves nothing
        if not live:
            notes.append("last line cut mid-row (dropped)")
    try:
        rows = [row for row in csv.reader(io.StringIO(text)) if row]
    except csv.Error as e:
        return pd.DataFrame(), Damage(path, "; ".join(notes + [f"not CSV ({str(e).split(' - ')[0]})"]), False)
    if not rows:
        return pd.DataFrame(), Damage(path, "; ".join(notes + ["no header"]), False) if notes else None
    header = [name.strip() for name in rows[0]]
    missing = [c for c in required if c not in header]
    if missing:
        notes.append(f"wrong columns: its header has no {', '.join(missing)}")
        return pd.DataFrame(), Damage(path, "; ".join(notes), False)
    body = [row for row in rows[1:] if len(row) == len(header)]
    frame = _numeric_columns(pd.DataFrame(body, columns=_unique(header), dtype=object)) if body else \
        pd.DataFrame(columns=_unique(header))
    if required and len(frame):
        frame = frame[pd.to_numeric(frame[required[0]], errors="coerce").notna()].reset_index(drop=True)
    malformed = len(rows) - 1 - len(frame)
    if malformed:
        notes.append(f"{malformed} malformed row{'s' if malformed != 1 else ''} skipped (wrong number of fields"
                     + (f" or no numeric {required[0]})" if required else ")"))
    if not notes:
        return frame, None
    usable = len(frame) > 0 or len(rows) == 1  # a header alone is a table without rows yet
    if not usable:
        notes.append("no readable row")
    return frame, Damage(path, "; ".join(notes), usable)


def read_csv(path: str | os.PathLike) -> pd.DataFrame:
    """inspect_csv's frame: a missing, unreadable or empty file is an empty frame; a last line without its
    newline is a row the writer had not finished and is dropped, as are rows with the wrong number of fields."""
    return inspect_csv(path)[0]


def read_yaml(path: str | os.PathLike) -> dict:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _usable_text(path: Path) -> tuple[str | None, Damage | None]:
    """A whole small file's text, or None with what is wrong (None, None when it is missing)."""
    text, notes, fatal = _read_text(path)
    if fatal is not None or text is None:
        return None, fatal
    if notes:
        return None, Damage(path, notes[0], False)
    return text, None


def inspect_config(path: str | os.PathLike) -> tuple[dict, Damage | None]:
    """A run's config.yaml ({} when missing) and what is wrong with it: empty, not UTF-8, not YAML, not a
    mapping with a `config` section (all unusable: {}), or cut mid-line (no final newline; what parsed is
    returned)."""
    path = Path(path)
    text, damage = _usable_text(path)
    if text is None:
        return {}, damage
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        return {}, Damage(path, f"not valid YAML ({getattr(e, 'problem', None) or 'parse error'}{where})", False)
    if not isinstance(data, dict) or not isinstance(data.get("config"), dict):
        return {}, Damage(path, "not a run record (no `config` mapping)", False)
    if not text.endswith("\n"):
        return data, Damage(path, "cut mid-line (no final newline)", True)
    return data, None


def inspect_status(path: str | os.PathLike) -> tuple[dict, Damage | None]:
    """A run's status.json ({} when missing) and what is wrong with it: empty, not UTF-8, not JSON, not an
    object with a text `status` (all unusable: {})."""
    path = Path(path)
    text, damage = _usable_text(path)
    if text is None:
        return {}, damage
    try:
        data = json.loads(text)
    except ValueError as e:
        return {}, Damage(path, f"not valid JSON, cut short or corrupted ({getattr(e, 'msg', e)})", False)
    if not isinstance(data, dict) or not isinstance(data.get("status"), str):
        return {}, Damage(path, "not a status record (no text `status` field)", False)
    return data, None


def inspect_jsonl(path: str | os.PathLike, live: bool = False) -> tuple[list[dict], Damage | None]:
    """events.jsonl: one JSON object per line, each naming its `event`; the events that read, and what is wrong:
    a cut last line (not damage while `live`), lines that are not events, bytes that are not UTF-8."""
    path = Path(path)
    text, notes, fatal = _read_text(path)
    if fatal is not None or text is None:
        return [], fatal
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
        if not live:
            notes.append("last line cut mid-line (dropped)")
    out, bad = [], 0
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError:
            item = None
        if isinstance(item, dict) and EVENT_KEY in item:
            out.append(item)
        else:
            bad += 1
    if bad:
        notes.append(f"{bad} line{'s' if bad != 1 else ''} that {'are' if bad != 1 else 'is'} not an event "
                     "skipped")
    return out, (Damage(path, "; ".join(notes), bool(out)) if notes else None)


def first_line(text: str) -> str:
    """A description's summary: its first non-blank line, whitespace collapsed (phase descriptions open with a
    one-line summary, then a paragraph of details)."""
    for line in str(text or "").splitlines():
        if line.strip():
            return " ".join(line.split())
    return ""


# ---- phases and their names ------------------------------------------------------------------------------------

@dataclass
class PhaseInfo:
    """What phases/<name>.yaml says about a phase (read as plain YAML; analysis never imports the launcher)."""
    name: str
    description: str = ""  # whitespace collapsed
    summary: str = ""  # the description's first line
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
            summary=first_line(data.get("description")),
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
    description: str  # whitespace collapsed
    record: dict  # config.yaml as read ({} when missing or unusable)
    summary: str = ""  # the description's first line: what a card shows
    config_damage: Damage | None = None  # what is wrong with config.yaml, if anything

    @property
    def label(self) -> str:
        """`phase` for the default variant, else `phase:variant` (e.g. `aa:k128`)."""
        return make_label(self.phase, self.variant)

    @cached_property
    def _eval_read(self) -> tuple[pd.DataFrame, Damage | None]:
        return inspect_csv(self.path / runlayout.EVAL, EVAL_REQUIRED, live=self.live)

    @cached_property
    def eval(self) -> pd.DataFrame:
        """The readable rows of the run's evaluations (empty when the file is missing or unusable)."""
        return self._eval_read[0]

    def train(self) -> pd.DataFrame:
        """train.csv, read on demand (it can be large); not cached, so a live reader sees new rows."""
        return inspect_csv(self.path / runlayout.TRAIN, TRAIN_REQUIRED, live=self.live)[0]

    def events(self) -> list[dict]:
        return inspect_jsonl(self.path / runlayout.EVENTS, live=self.live)[0]

    @cached_property
    def _status_read(self) -> tuple[dict, Damage | None]:
        return inspect_status(self.path / runlayout.STATUS)

    @cached_property
    def status_record(self) -> dict:
        """status.json ({} when missing or unusable)."""
        return self._status_read[0]

    @property
    def live(self) -> bool:
        """status.json says running: a last CSV or events line without its newline is a row being written."""
        return self.status == runlayout.RUNNING

    def damage(self, files=RUN_FILES) -> list[Damage]:
        """What is wrong with the run's `files` (names of runlayout.RUN_FILES), in that order; [] when all read
        whole. train.csv and events.jsonl are read again for it (they are not cached)."""
        out = []
        for name in files:
            if name == runlayout.CONFIG:
                found = self.config_damage
            elif name == runlayout.EVAL:
                found = self._eval_read[1]
            elif name == runlayout.STATUS:
                found = self._status_read[1]
            elif name == runlayout.TRAIN:
                found = inspect_csv(self.path / name, TRAIN_REQUIRED, live=self.live)[1]
            elif name == runlayout.EVENTS:
                found = inspect_jsonl(self.path / name, live=self.live)[1]
            else:
                raise ValueError(f"not a run file: {name!r} (one of {', '.join(RUN_FILES)})")
            if found is not None:
                out.append(found)
        return out

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
        best = runlayout.best_mppi(pd.to_numeric(self.eval["mppi_return"], errors="coerce").tolist())
        return None if best is None else best[1]

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
        record, damage = inspect_config(seed_dir / runlayout.CONFIG)
        meta = record.get("phase")
        meta = meta if isinstance(meta, dict) else {"name": meta} if isinstance(meta, str) and meta else {}
        recorded = str(meta.get("name") or seed_dir.parent.parent.name)
        names.add(recorded, meta.get("aliases"))
        if recorded != seed_dir.parent.parent.name:
            names.add(recorded, [seed_dir.parent.parent.name])
        found.append((seed_dir, record, meta, recorded, damage))
    runs = []
    for seed_dir, record, meta, recorded, damage in found:  # after every config is read, so aliases apply to all runs
        phase = names.canonical(recorded)
        info = names.catalogue.get(phase)
        # unfair if the run's record or the phase file says so: a phase marked unfair later never counts for G1/G2
        fair = as_bool(meta.get("benchmark_fair"), True) and (info.benchmark_fair if info else True)
        raw = meta.get("description") or (info.description if info else "")
        summary = first_line(meta.get("description")) or (info.summary if info else "")
        runs.append(Run(path=seed_dir, phase=phase, variant=str(meta.get("variant") or seed_dir.parent.name),
                        seed=seed_of(seed_dir), filed_as=seed_dir.parent.parent.name, benchmark_fair=fair,
                        description=" ".join(str(raw).split()), record=record, summary=summary,
                        config_damage=damage))
    return sorted(runs, key=lambda r: (natural_key(r.phase), natural_key(r.variant), r.seed))


def natural_key(text: str) -> tuple:
    """Sort key that puts `2` before `10` (phase names like 1b, aa, k64/k128)."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part.lower())
                 for part in re.split(r"(\d+)", str(text)) if part)
