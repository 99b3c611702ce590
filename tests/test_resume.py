"""Damaged run files as the trainer meets them on resume, and writes on a full disk: a damaged newest
checkpoint falls back to the one before it (every seed of the batch from the same env step, a warning naming
the file), what cannot be used is refused with one line naming the file, and a failed write leaves the files
as they were (no temp file, no partial row) with one DiskFullError line naming the file."""
import errno
import json
import shutil
from dataclasses import replace
from pathlib import Path

import jax
import numpy as np
import pytest
from train_script import rows

from tdmpc_glass import checkpoint, resume, runlayout
from tdmpc_glass.runlayout import DiskFullError, RunFileError
from tdmpc_glass.runlog import EVAL_COLUMNS, CsvLog, RunLog
from tdmpc_glass.train import train

SEEDS, ATTEMPTS = [1, 2], [0, 0]


@pytest.fixture
def runs(trained_runs, tmp_path):
    """A writable copy of the shared trained runs (checkpoints at env steps 240 and 320)."""
    dirs = []
    for d in trained_runs.dirs:
        shutil.copytree(d, tmp_path / d.name)
        dirs.append(tmp_path / d.name)
    return dirs


def ckpts(dirs):
    return [d / runlayout.CHECKPOINTS for d in dirs]


def restore(trained_runs, dirs, warnings=None):
    on_warning = None if warnings is None else (lambda i, message: warnings.append((i, message)))
    return resume.restore(trained_runs.state_template, ckpts(dirs), SEEDS, ATTEMPTS, trained_runs.cfg,
                          on_warning=on_warning)


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def corrupt(path: Path) -> None:
    """Flip bytes in the middle of the file (inside array data): only the zip CRC can tell."""
    data = bytearray(path.read_bytes())
    for k in range(len(data) // 2, len(data) // 2 + 64):
        data[k] ^= 0xFF
    path.write_bytes(bytes(data))


def env_step_of(found) -> int:
    return found[1].tick * 4  # action_repeat 2 x 2 envs per tick


@pytest.mark.parametrize("damage", [truncate, corrupt])
def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before_for_every_seed(damage, trained_runs, runs):
    newest = checkpoint.path_for(ckpts(runs)[1], 320)
    damage(newest)
    with pytest.raises(checkpoint.DamagedCheckpointError, match=f"unreadable checkpoint {newest}"):
        checkpoint.load(newest, trained_runs.state_template)
    warnings = []
    found = restore(trained_runs, runs, warnings)
    assert env_step_of(found) == 240
    assert json.loads(json.dumps(found[2])) == found[2]
    messages = [m for _, m in warnings]
    assert len(messages) == 2 and all("\n" not in m for m in messages)
    assert any(str(newest) in m and "unreadable" in m and "resuming from env step 240" in m for m in messages)
    assert any(str(checkpoint.path_for(ckpts(runs)[0], 320)) in m for m in messages)  # seed 1 falls back too
    # the files not used are gone: a later resume never mixes them with the resumed trajectory
    assert [p.name for c in ckpts(runs) for p in checkpoint.list_checkpoints(c)] == ["step_0000000240.npz"] * 2


def test_a_kill_between_the_seeds_checkpoint_writes_resumes_from_the_common_step(trained_runs, runs, capsys):
    checkpoint.path_for(ckpts(runs)[1], 320).unlink()  # seed 1 wrote 320, seed 2 was killed before its write
    found = restore(trained_runs, runs)  # warnings on stderr by default
    assert env_step_of(found) == 240
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: checkpoint") and "not every seed" in err[0]


def test_a_kill_inside_the_batchs_first_checkpoint_starts_the_batch_over(trained_runs, runs):
    for c in ckpts(runs):
        checkpoint.path_for(c, 240).unlink()
    only = checkpoint.path_for(ckpts(runs)[0], 320)
    checkpoint.path_for(ckpts(runs)[1], 320).unlink()  # seed 2 was killed before its first checkpoint
    warnings = []
    assert restore(trained_runs, runs, warnings) is None
    assert len(warnings) == 1 and str(only) in warnings[0][1] and "starting over" in warnings[0][1]
    assert not only.exists()


def test_no_readable_common_checkpoint_is_refused_with_one_line_naming_the_files(trained_runs, runs):
    damaged = [checkpoint.path_for(ckpts(runs)[0], step) for step in (240, 320)]
    for path in damaged:
        truncate(path)
    with pytest.raises(checkpoint.CheckpointError) as refused:
        restore(trained_runs, runs)
    message = str(refused.value)
    assert "\n" not in message and all(str(p) in message for p in damaged) and "no env step" in message
    assert all(p.exists() for c in ckpts(runs) for p in checkpoint.list_checkpoints(c))  # refusing changes nothing


def test_a_deleted_checkpoints_folder(trained_runs, runs):
    shutil.rmtree(ckpts(runs)[1])  # one seed's: refused, naming the folder
    with pytest.raises(checkpoint.CheckpointError, match=f"seed 2: none in {ckpts(runs)[1]}"):
        restore(trained_runs, runs)
    shutil.rmtree(ckpts(runs)[0])  # every seed's: nothing to resume, the run starts over
    assert restore(trained_runs, runs) is None


def test_a_checkpoint_of_another_seed_is_refused_not_passed_over(trained_runs, runs):
    a, b = ckpts(runs)
    for step in (240, 320):
        shutil.copy(checkpoint.path_for(a, step), checkpoint.path_for(b, step))
    with pytest.raises(checkpoint.CheckpointError, match="it is seed 1, not seed 2"):
        restore(trained_runs, runs)


# ---- full disk: the failed write leaves nothing behind ----------------------------------------------------------

class FullDisk:
    """A file object that takes `room` bytes, then fails like a full disk."""

    def __init__(self, f, room: int):
        self.f, self.room = f, room

    def write(self, data):
        if len(data) > self.room:
            self.f.write(data[:self.room])
            self.f.flush()
            self.room = 0
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def test_a_checkpoint_write_on_a_full_disk_keeps_the_old_ones_and_leaves_no_temp_file(trained_runs, runs,
                                                                                       monkeypatch):
    folder = ckpts(runs)[0]
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    state, meta = checkpoint.load(checkpoint.path_for(folder, 320), trained_runs.state_template)
    real_savez = np.savez
    monkeypatch.setattr(checkpoint.np, "savez", lambda f, **arrays: real_savez(FullDisk(f, 100_000), **arrays))
    with pytest.raises(DiskFullError) as full:
        checkpoint.save(folder, 400, [np.asarray(x) for x in jax.tree.leaves(state)], meta)
    assert "\n" not in str(full.value) and str(checkpoint.path_for(folder, 400)) in str(full.value)
    assert full.value.errno == errno.ENOSPC
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # no .tmp, nothing pruned
    checkpoint.load(checkpoint.path_for(folder, 320), trained_runs.state_template)


@pytest.mark.parametrize("writer", ["eval row", "train row", "event", "status"])
def test_run_file_writes_on_a_full_disk_leave_the_file_as_it_was(writer, runs, monkeypatch):
    log = RunLog(runs[0])
    files = {"eval row": log.eval.path, "train row": log.train.path, "event": log.dir / runlayout.EVENTS,
             "status": log.dir / runlayout.STATUS}
    before = files[writer].read_bytes()
    real_open = open

    def full_open(path, mode="r", *args, **kwargs):
        f = real_open(path, mode, *args, **kwargs)
        return FullDisk(f, 5) if ("a" in mode or "w" in mode) and Path(path).parent == log.dir else f

    monkeypatch.setattr("builtins.open", full_open)
    if writer == "status":  # the atomic write's temp file goes through os.fdopen
        import os
        real_fdopen = os.fdopen
        monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: FullDisk(real_fdopen(fd, *a, **k), 5))
    with pytest.raises(DiskFullError) as full:
        {"eval row": lambda: log.eval.append({c: 1.0 for c in EVAL_COLUMNS}),
         "train row": lambda: log.train.append({"env_step": 400, "agent_step": 200}),
         "event": lambda: log.event(400, "resume"),
         "status": lambda: log.set_status(env_step=400)}[writer]()
    monkeypatch.undo()
    assert str(files[writer]) in str(full.value) and "\n" not in str(full.value)
    assert files[writer].read_bytes() == before
    assert not [p for p in log.dir.iterdir() if p.name.endswith(".tmp")]


# ---- damaged CSV and event files -------------------------------------------------------------------------------

def test_a_half_written_last_row_is_cut_and_the_next_row_follows_it(runs):
    log = RunLog(runs[0])
    full = log.eval.path.read_text()
    log.eval.path.write_text(full + "400,200,12.")  # killed while writing
    assert log.eval.truncate_after(320) == 5
    assert log.eval.path.read_text() == full
    log.eval.append({c: 2.0 for c in EVAL_COLUMNS})
    assert len(rows(log.eval.path)) == 6


def test_a_damaged_complete_csv_line_is_refused_naming_file_and_line(runs):
    log = RunLog(runs[0])
    lines = log.train.path.read_text().splitlines(keepends=True)
    lines[3] = "\x00\x00garbage,,\r\n"
    log.train.path.write_text("".join(lines))
    with pytest.raises(RunFileError, match=f"{log.train.path}: line 4 is not a row"):
        log.train.truncate_after(320)
    log.eval.path.write_bytes(b"env_step,agent_step\r\n\xff\xfe\r\n")
    with pytest.raises(RunFileError, match="this file's header|not text"):
        log.eval.truncate_after(320)


def test_a_header_cut_short_starts_the_file_again(runs):
    log = CsvLog(runs[0] / runlayout.TRAIN)
    log.path.write_text("env_step,agent_st")
    assert log.truncate_after(320) == 0
    log.append({"env_step": 0, "agent_step": 0})
    assert log.path.read_bytes() == b"env_step,agent_step\r\n0,0\r\n"


def test_a_partial_last_event_line_is_cut_before_the_next_event(runs):
    path = runs[0] / runlayout.EVENTS
    full = path.read_text()
    path.write_text(full + '{"time": "2026-01-01T00:00:00+00:00", "env_st')
    RunLog(runs[0]).event(320, "resume")
    lines = path.read_text().splitlines()
    assert path.read_text().startswith(full) and len(lines) == len(full.splitlines()) + 1
    assert all(json.loads(line) for line in lines) and json.loads(lines[-1])["event"] == "resume"


def test_a_status_cut_short_reads_as_no_status(runs):
    (runs[0] / runlayout.STATUS).write_text('{"status": "done", "env_st')
    assert runlayout.read_status(runs[0]) == {}


# ---- the trainer itself resumes past damaged files --------------------------------------------------------------

@pytest.fixture(scope="module")
def stopped_at_240(trained_runs, tmp_path_factory):
    """The trained runs' seeds trained to env step 240 only (checkpoints at 160 and 240)."""
    root = tmp_path_factory.mktemp("stopped")
    dirs = [root / f"seed{s}" for s in SEEDS]
    cfg = trained_runs.cfg
    assert train(replace(cfg, train=replace(cfg.train, steps=240)), SEEDS, dirs, progress=False) == 0
    return dirs


DAMAGES = {
    "checkpoint truncated": lambda d: truncate(checkpoint.path_for(d / "checkpoints", 240)),
    "checkpoint corrupted": lambda d: corrupt(checkpoint.path_for(d / "checkpoints", 240)),
    "eval.csv half row": lambda d: (d / "eval.csv").write_text((d / "eval.csv").read_text() + "320,160,1"),
    "train.csv half row": lambda d: (d / "train.csv").write_text((d / "train.csv").read_text() + "280,14"),
    "status.json cut short": lambda d: (d / "status.json").write_text('{"status": "run'),
    "events.jsonl partial line": lambda d: (d / "events.jsonl").write_text((d / "events.jsonl").read_text() + '{"ti'),
}


@pytest.mark.slow
@pytest.mark.parametrize("damage", list(DAMAGES))
def test_the_trainer_resumes_past_a_damaged_file_and_reproduces_the_run(damage, trained_runs, stopped_at_240,
                                                                        tmp_path, capsys):
    dirs = [tmp_path / d.name for d in stopped_at_240]
    for src, dst in zip(stopped_at_240, dirs):
        shutil.copytree(src, dst)
    DAMAGES[damage](dirs[1])
    assert train(trained_runs.cfg, SEEDS, dirs, progress=False) == 0
    for d, ref in zip(dirs, trained_runs.dirs):
        assert rows(d / "eval.csv") == rows(ref / "eval.csv")
        assert rows(d / "train.csv") == rows(ref / "train.csv")
        assert all(json.loads(line) for line in (d / "events.jsonl").read_text().splitlines())
    if damage.startswith("checkpoint"):
        err = capsys.readouterr().err
        assert "unreadable checkpoint" in err and "resuming from env step 160" in err


# ---- config.yaml is the launcher's: a damaged one is refused before anything trains ------------------------------

@pytest.mark.parametrize("damage", ["cut short", "corrupted bytes", "empty"])
def test_a_damaged_config_yaml_is_refused_by_the_launcher_with_one_line(damage, tmp_path):
    import yaml
    from test_cli import assert_one_line_error, cli, tree

    from experiments.phases import resolve
    from experiments.rundirs import run_record

    root = tmp_path / "runs"
    run = root / "demo" / "default" / "seed1"
    run.mkdir(parents=True)
    text = yaml.safe_dump(run_record(resolve("demo"), 1), sort_keys=False)
    (run / runlayout.CONFIG).write_bytes({"cut short": text[:len(text) // 3].encode(),
                                          "corrupted bytes": b"\x00\xff\xfe" + text.encode()[3:],
                                          "empty": b""}[damage])
    (run / runlayout.EVAL).write_text("env_step,mppi_return\n0,1.0\n")
    before = tree(root)
    assert_one_line_error(cli("run", "demo", "--seeds", "1", "--runs-root", root), str(run / runlayout.CONFIG))
    assert tree(root) == before


def test_a_run_started_before_a_new_config_key_existed_resumes_while_the_key_holds_its_default():
    import json

    from tdmpc_glass.config import Config
    from tdmpc_glass.resume import config_fingerprint, fingerprint_difference

    cfg = Config()
    new = config_fingerprint(cfg)
    old = json.loads(new)
    del old["streams"], old["glass"]["active_rule"]  # written before these keys existed
    old = json.dumps(old, sort_keys=True)
    assert fingerprint_difference(old, new) is None
    cfg.streams.init = 3  # the new key set away from its default: not the run that was started
    assert "streams.init" in fingerprint_difference(old, config_fingerprint(cfg))
    cfg = Config()
    cfg.planner.num_samples = 64
    assert "planner.num_samples is 512 there, 64 now" in fingerprint_difference(new, config_fingerprint(cfg))
