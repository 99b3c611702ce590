"""The training loop over a batch of seeds: S seeds x E envs in one process, one jitted call per agent step
(it adds the step's rows, runs the updates due at a round's end and plans the next actions), evaluation,
logging, checkpoint/resume and signal handling.

Everything the loop carries is one value, `Loop`: a checkpoint saves it and `restore_or_init` returns it
whole; the host driver is `while not loop.done: loop = trainer.step(loop, stop)`, and what is due at an env
step (updates, evaluation, a train.csv row, a checkpoint, the end) is asked of one `LoopSchedule`.

Schedule, in ENV steps per seed (agent steps x action_repeat x envs of the seed):
  a round = `collect_steps` agent steps over the seed's envs, then K_UPDATE updates in one lax.scan;
  uniform random actions until EXPL_UNTIL; updates (train.explore_updates): TD-MPC2's "burst" (none while
  exploring, one burst of `seed_updates` when it ends, then K_UPDATE per round) or the research log's "steady"
  (K_UPDATE per round from `update_warmup` on, while exploring too);
  evaluation at env step 0 and every `eval_freq`; a checkpoint at the first episode end after every
  `checkpoint_freq`, on a signal and at the end.
Episodes have a fixed length and every env of every seed resets together, so rounds end on episode
boundaries and a checkpoint taken there (plus per-episode reset seeds) makes a resumed run identical to an
uninterrupted one.

The loop knows no phase feature. They plug in at three seams:
  envs/training.py     environment wrappers (action noise, reward shaping, multi-task sampling)
  rounds.py            the traced per-round inputs (intrinsic reward, action smoothing) and static plan
  interventions.py     changes after a round (Q-reset, perturbation, basin check); basin.py restarts
"""
from __future__ import annotations

import signal
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from . import acting, agent, provenance, resume, rounds, runlayout, seams
from .basin import train_with_restarts
from .config import Config, derive
from .envs import EnvPool
from .envs.training import EVAL_STREAM, StepContext, episode_seeds, eval_observation, pool_measure, training_env
from .flatstate import FlatState, as_tree
from .interventions import RoundView
from .loopschedule import LoopSchedule
from .interventions import from_config as scheduled_interventions
from .multitask import model_obs_dim, tasks_of
from .planner import PlanSettings
from .rounds import Counters
from .schedules import restart_seed
from .trainlog import BatchLog, TrainLogWindow


class StopRequest:
    """First SIGINT/SIGTERM: finish the episode (abandon an evaluation), checkpoint, exit. Second: stop at once."""

    def __init__(self):
        self.signum = None

    def __enter__(self):
        self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc):
        for s, handler in self._old.items():
            signal.signal(s, handler)

    def _handle(self, signum, frame):
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        print(f"\n{signal.Signals(signum).name}: finishing the current episode, then checkpointing; an evaluation "
              "under way stops now and runs again on resume (send again to stop at once)", file=sys.stderr, flush=True)

    @property
    def exit_code(self) -> int:
        return 130 if self.signum == signal.SIGINT else 143


def explore_actions(run_seeds, tick: int, num_envs: int, act_dim: int) -> np.ndarray:
    """Uniform random actions (S, E, A) of one tick before EXPL_UNTIL, drawn from (run seed, tick)."""
    return np.stack([np.random.default_rng([s, tick]).uniform(-1, 1, (num_envs, act_dim))
                     for s in run_seeds]).astype(np.float32)


@dataclass
class Loop:
    """Everything the loop carries from one step of the driver to the next (a checkpoint saves it; a restore
    returns it whole)."""

    states: FlatState  # the batch's stacked AgentState, flat between the jitted calls (flatstate.py)
    counters: Counters
    active: np.ndarray  # (S,) bool: seeds still training in this batch
    left: np.ndarray  # (S,) bool: seeds an intervention took out on purpose (basin restart), not failures
    prev_mean: jax.Array  # (S, E, H, A) the planner's previous means
    window: TrainLogWindow  # the train.csv row being gathered
    next_checkpoint: int  # env step from which the next episode end checkpoints
    attempts: tuple  # (S,) each seed's basin-restart attempt
    resumed: bool = False  # restored from a checkpoint (else fresh)
    start_step: int = 0  # env step this process started (or resumed) at
    last_row: dict = field(default_factory=dict)  # the latest train.csv row, {column: (S,) values} (basin check)
    obs: Optional[np.ndarray] = None  # (S, E, obs_dim) the envs' current observations
    planned: Optional[jax.Array] = None  # (S, E, A) actions the last call planned for the current tick
    metrics: dict = field(default_factory=dict)  # the last round's update metrics, (S,) device arrays
    ok: Optional[np.ndarray] = None  # (S,) bool: the last round's parameters and metrics finite
    done: bool = False  # the driver stops: finished, stopped on request, or no seed left


class Trainer:
    """Trains `seeds` (one restart attempt of each) into `run_dirs`: `run()` returns a process exit code.

    interventions: after-round interventions (default: those the config schedules, interventions.from_config).
    fused: plan the next step's actions inside the step's jitted call (one call per agent step); False plans
      in a call of its own before each step, the same results in two calls (tests and benchmarks compare).
    traces: how often the step and act functions were traced (tests assert it stops growing)."""

    def __init__(self, cfg: Config, seeds: list[int], run_dirs: list[Path], progress: bool = True,
                 attempt: int = 0, interventions: Optional[list] = None, fused: bool = True):
        self.cfg, self.d = cfg, derive(cfg)
        self.seeds, self.progress = list(seeds), progress
        self.attempt = attempt
        # the random streams (config.StreamsConfig): init, exploration (reseeded by basin restarts), planner noise
        streams = cfg.streams
        self.init_seeds = [s if streams.init is None else streams.init for s in self.seeds]
        self.run_seeds = [restart_seed(s if streams.explore is None else streams.explore, attempt, cfg.schedule)
                          for s in self.seeds]
        self.noise_keys = jax.vmap(jax.random.PRNGKey)(
            jnp.asarray([s if streams.planner is None else streams.planner for s in self.seeds]))
        self.log = BatchLog(run_dirs)
        t = cfg.train
        self.E, self.L = t.num_envs, t.episode_length
        self.schedule = LoopSchedule.from_config(cfg)
        pool = EnvPool(tasks_of(cfg) if cfg.multitask.tasks else cfg.task, len(seeds) * self.E, t.action_repeat,
                       t.num_workers, measure=pool_measure(cfg))
        self.env = training_env(cfg, self.run_seeds, pool)
        self.eval_pool = None
        self.eval_obs = eval_observation(cfg)
        self.obs_dim, self.act_dim = model_obs_dim(cfg, pool.obs_dim), pool.act_dim
        self.traces = {"round": 0, "act": 0}
        world_tx, policy_tx = agent.optimisers(cfg)
        self.interventions = (interventions if interventions is not None
                              else scheduled_interventions(cfg, self.obs_dim, self.act_dim, world_tx))
        self.fused, self.overlap = fused, cfg.train.overlap_updates
        self._init = jax.jit(jax.vmap(lambda s: agent.init_state(cfg, self.obs_dim, self.act_dim, s)))
        settings = PlanSettings.from_config(cfg.planner, cfg.horizon, self.d.discount, self.act_dim)
        self.agent_step = rounds.make_step(agent.Hyper.from_config(cfg), world_tx, policy_tx, settings,
                                           cfg.planner.mpc, on_trace=lambda: self._count("round"))
        self.timings = dict.fromkeys(("env", "device", "act", "eval", "log"), 0.0)  # seconds, for benchmarks
        self.calls = dict.fromkeys(("step", "act"), 0)  # jitted calls the training rounds made (tests count them)

        def act(states, obs, prev_mean, counter, eval_mode: bool, use_planner: bool, noise_keys=None):
            self._count("act")
            return acting.act(as_tree(states), obs, prev_mean, counter, settings, eval_mode, use_planner,
                              noise_keys)

        self.act = jax.jit(act, static_argnames=("eval_mode", "use_planner"))

    def _count(self, name: str) -> None:
        self.traces[name] += 1

    def env_step(self, counters: Counters) -> int:
        return self.schedule.env_step(counters.tick)

    def state_template(self):
        """The shapes of one seed's AgentState (to load a checkpoint of this config)."""
        return jax.eval_shape(lambda: agent.init_state(self.cfg, self.obs_dim, self.act_dim, 0))

    # ---- state: fresh or resumed ---------------------------------------------------------------------------
    def restore_or_init(self) -> Loop:
        """The loop value to start from: the batch's newest common checkpoint, else a fresh start."""
        S, attempts = len(self.seeds), (self.attempt,) * len(self.seeds)
        ckpt_dirs, skipped = [d / runlayout.CHECKPOINTS for d in self.log.dirs], []
        found = resume.restore(self.state_template(), ckpt_dirs, self.seeds, attempts, self.cfg,
                               on_warning=lambda i, message: skipped.append((i, message)))
        if found is None:  # a run killed before its first checkpoint starts over
            last_row = self.log.rewind(-1)
            states, counters = self._init(jnp.asarray(self.init_seeds)), Counters()
        else:
            states, counters, schedule_states = found
            for i, state in enumerate(schedule_states):
                self.env.load(i, state)
            last_row = self.log.rewind(self.env_step(counters))
        env_step = self.env_step(counters)
        for i, message in skipped:  # damaged or half-written checkpoints the batch resumed without
            print(f"warning: seed {self.seeds[i]}: {message}", file=sys.stderr)
            self.log.event(i, env_step, "checkpoint_skipped", message=message)
        return Loop(FlatState.of(states), counters, np.ones(S, bool), np.zeros(S, bool),
                    prev_mean=jnp.zeros((S, self.E, self.cfg.horizon, self.act_dim)),
                    window=TrainLogWindow(env_step, self.schedule.next_log_row),
                    next_checkpoint=self.schedule.next_checkpoint(env_step), attempts=attempts,
                    resumed=found is not None, start_step=env_step, last_row=last_row)

    def save_checkpoints(self, loop: Loop) -> None:
        clock = time.perf_counter()
        ckpt_dirs = [d / runlayout.CHECKPOINTS for d in self.log.dirs]
        schedule = [{"attempt": a, "run_seed": r, **self.env.state(i)}
                    for i, (a, r) in enumerate(zip(loop.attempts, self.run_seeds))]
        resume.save(loop.states.tree(), ckpt_dirs, loop.active, self.seeds, self.env_step(loop.counters),
                    loop.counters, schedule, self.cfg)
        self.timings["log"] += time.perf_counter() - clock

    # ---- one round -----------------------------------------------------------------------------------------
    def collect_and_update(self, loop: Loop) -> Loop:
        """One round: per tick, one env step of every env of every seed and one jitted call that adds the
        tick's rows, runs the updates due at the round's end and plans the next tick's actions.

        With train.overlap_updates the round's updates are a call of their own, dispatched just before the
        round's last env step so that they run while the envs step; that tick's call then adds rows and plans."""
        cfg, d, L, t, schedule = self.cfg, self.d, self.L, self.timings, self.schedule
        counters, obs, prev_mean, planned = loop.counters, loop.obs, loop.prev_mean, loop.planned
        states, ticks = loop.states, d.steps_per_env_per_round
        ok, metrics, round_updates = None, {}, 0
        for i in range(ticks):
            tick, env_step = counters.tick, self.env_step(counters)
            next_step = schedule.env_step(tick + 1)
            rows = []
            if schedule.episode_start(tick):  # every env of every seed starts a new episode together
                clock = time.perf_counter()
                obs = self.env.reset(tick // L)
                t["env"] += time.perf_counter() - clock
                prev_mean, planned = jnp.zeros_like(prev_mean), None
                rows.append(self._row(obs, np.zeros((*obs.shape[:2], self.act_dim), np.float32),
                                      np.zeros(obs.shape[:2], np.float32), 0))
            exploring = schedule.exploring(env_step)
            if exploring:
                actions = explore_actions(self.run_seeds, tick, self.E, self.act_dim)
            else:
                if planned is None:  # an episode's first step, or the states changed after the last call
                    clock = time.perf_counter()
                    self.calls["act"] += 1
                    planned, prev_mean = self.act(states, jnp.asarray(obs), prev_mean, tick, eval_mode=False,
                                                  use_planner=cfg.planner.mpc, noise_keys=self.noise_keys)
                    planned = np.array(planned)
                    t["act"] += time.perf_counter() - clock
                actions = planned
                actions[~loop.active] = 0.0  # a failed seed's NaN actions must not reach the simulator

            clock = time.perf_counter()
            if i == ticks - 1:  # the updates due at the round's end
                plan, inputs = rounds.plan_round(cfg, d, next_step, counters)
                round_updates = plan.num_updates
                if round_updates:
                    seams.notify("update_round")
            else:
                plan, inputs = rounds.no_updates(counters)
            if self.overlap and (plan.num_updates or plan.kmeans):  # dispatched now, they run during env.step
                self.calls["step"] += 1
                states, _, prev_mean, ok, metrics = self.agent_step(states, None, obs, prev_mean, np.int32(tick),
                                                                    plan=plan, inputs=inputs)
                plan, inputs = rounds.no_updates(counters)
            t["device"] += time.perf_counter() - clock

            clock = time.perf_counter()
            obs, reward = self.env.step(actions, StepContext(tick, env_step, exploring))
            t["env"] += time.perf_counter() - clock
            rows.append(self._row(obs, actions, reward, tick % L + 1))
            counters = counters._replace(tick=tick + 1)

            clock = time.perf_counter()
            plan = plan._replace(act=self.fused and not schedule.exploring(next_step))
            self.calls["step"] += 1
            column = lambda j: np.stack([row[j] for row in rows], axis=1)  # (S, n, E, ...)
            states, planned, prev_mean, step_ok, step_metrics = self.agent_step(
                states, tuple(column(j) for j in range(4)), obs, prev_mean, np.int32(counters.tick),
                plan=plan, inputs=inputs, noise_keys=self.noise_keys)
            if plan.num_updates:
                ok, metrics = step_ok, step_metrics
            planned = None if planned is None else np.array(planned)  # waits for the call: the only sync
            t["device"] += time.perf_counter() - clock

        counters = counters._replace(updates=counters.updates + round_updates,
                                     burst_done=counters.burst_done or not schedule.exploring(next_step))
        env_metrics = self.env.round_metrics(next_step)
        metrics = {**metrics, **env_metrics} if metrics else {}  # the env wrappers' values join update rounds
        return replace(loop, states=states, counters=counters, obs=obs, prev_mean=prev_mean, planned=planned,
                       metrics=metrics, ok=np.asarray(ok) if round_updates else None)

    @staticmethod
    def _row(obs, action, reward, pos: int):
        return obs, action, reward, np.full(obs.shape[:2], pos, np.int32)

    def check_finite(self, loop: Loop) -> Loop:
        """A seed whose update metrics or parameters went non-finite is marked failed and leaves the batch."""
        if loop.ok is None or loop.ok[loop.active].all():
            return loop
        metrics = jax.device_get(loop.metrics)
        active, env_step, update = loop.active.copy(), self.env_step(loop.counters), loop.counters.updates
        for i in np.flatnonzero(active & ~loop.ok):
            bad = [k for k, v in metrics.items() if not np.isfinite(v[i])]
            term = bad[0] if bad else "parameters"
            self.log.event(i, env_step, "nonfinite", term=term, update=update,
                           message=f"non-finite {term} in the updates ending at update {update}; "
                                   "the last good checkpoint is kept")
            self.log.status(i, status=runlayout.FAILED, env_step=env_step)
            print(f"seed {self.seeds[i]}: non-finite {term} at env step {env_step}; run marked failed",
                  file=sys.stderr)
            active[i] = False
        return replace(loop, active=active)

    def intervene(self, loop: Loop, prev_env_step: int) -> Loop:
        """Run the after-round interventions; log their events; seeds they take out leave the batch."""
        if not self.interventions:
            return loop
        env_step, tree = self.env_step(loop.counters), loop.states.tree()
        active, left, states = loop.active.copy(), loop.left.copy(), tree
        for intervention in self.interventions:
            view = RoundView(prev_env_step, env_step, active.copy(), self.seeds, list(loop.attempts),
                             self.run_seeds, loop.last_row)
            states, events = intervention.after_round(states, view)
            for event in events:
                self.log.event(event.seed_index, env_step, event.name, **event.fields)
                if event.leave is not None:
                    self.log.status(event.seed_index, env_step=env_step, **event.leave)
                    active[event.seed_index], left[event.seed_index] = False, True
        # actions planned before an intervention changed the states are planned again
        if states is tree:
            return replace(loop, active=active, left=left)
        return replace(loop, states=FlatState.of(states), active=active, left=left, planned=None)

    # ---- evaluation ----------------------------------------------------------------------------------------
    def evaluate(self, states, eval_index: int, stop: Optional[StopRequest] = None) -> Optional[dict]:
        """Mean/std over `eval_episodes` episodes per seed, with MPPI and with the policy prior alone, as
        {name: (S,) array}. Shows its progress; returns None as soon as `stop` is requested (nothing written)."""
        n, S = self.cfg.train.eval_episodes, len(self.seeds)
        if self.eval_pool is None:
            self.eval_pool = EnvPool(self.cfg.task, S * n, self.cfg.train.action_repeat, self.cfg.train.num_workers)
        out = {}
        bar = tqdm(total=2 * self.L, unit="step", leave=False, disable=not self.progress, file=sys.stderr,
                   desc=f"evaluation: {n} episodes x {S} seeds, MPPI then pi", dynamic_ncols=True,
                   mininterval=0.5 if sys.stderr.isatty() else 10)
        with bar:
            for name, use_planner in (("mppi", True), ("pi", False)):
                obs = self.eval_pool.reset(episode_seeds(self.seeds, EVAL_STREAM, eval_index, n))
                prev_mean = jnp.zeros((S, n, self.cfg.horizon, self.act_dim))
                returns = np.zeros(S * n)
                for t in range(self.L):
                    if stop is not None and stop.signum is not None:
                        return None
                    actions, prev_mean = self.act(states, jnp.asarray(self.eval_obs(obs.reshape(S, n, -1))),
                                                  prev_mean, eval_index * self.L + t, eval_mode=True,
                                                  use_planner=use_planner)
                    seams.notify("eval_env_step")
                    obs, reward = self.eval_pool.step(np.asarray(actions).reshape(S * n, -1))
                    returns += reward
                    bar.update()
                returns = returns.reshape(S, n)
                out[f"{name}_return"], out[f"{name}_return_std"] = returns.mean(1), returns.std(1)
        return out

    def log_eval(self, loop: Loop, stop: Optional[StopRequest] = None) -> Loop:
        """Evaluate and write the eval.csv rows; an evaluation stopped half-way writes nothing (last_eval
        stays, so the resumed run evaluates this env step again)."""
        env_step, t, clock = self.env_step(loop.counters), self.cfg.train, time.perf_counter()
        results = self.evaluate(loop.states, env_step // max(t.eval_freq, 1), stop)
        if results is None:
            return loop
        common = {"env_step": env_step, "agent_step": loop.counters.tick * self.E, "episodes": t.eval_episodes}
        self.log.eval_row(common, results, loop.active)
        if t.video_at_eval:
            self.log.record_videos(self.cfg, self.obs_dim, self.act_dim, self.act, loop.states.tree(), loop.active,
                                   env_step)
        self.timings["eval"] += time.perf_counter() - clock
        return replace(loop, counters=loop.counters._replace(last_eval=env_step))

    def write_train_row(self, loop: Loop) -> Loop:
        """Close the train.csv window into a row (when it saw updates) and open the next one."""
        env_step, clock = self.env_step(loop.counters), time.perf_counter()
        common = {"env_step": env_step, "agent_step": loop.counters.tick * self.E,
                  "update": loop.counters.updates, "wall_time_s": time.time() - self.log.started}
        row = self.log.train_row(loop.window.flush(env_step), common, loop.active)
        self.timings["log"] += time.perf_counter() - clock
        return loop if row is None else replace(loop, last_row=row)

    # ---- the loop ------------------------------------------------------------------------------------------
    def advance(self, loop: Loop) -> Loop:
        """One round and what follows it: the finite check, the train.csv window, the interventions."""
        env_step, updates_before = self.env_step(loop.counters), loop.counters.updates
        loop = self.check_finite(self.collect_and_update(loop))
        loop.window.add(loop.metrics, loop.counters.updates - updates_before)
        if loop.window.due(self.env_step(loop.counters)):
            loop = self.write_train_row(loop)
        return self.intervene(loop, env_step)

    def step(self, loop: Loop, stop: StopRequest) -> Loop:
        """What is due at the loop's env step: an evaluation, a checkpoint (or the end), else one round."""
        schedule, counters, stopping = self.schedule, loop.counters, stop.signum is not None
        env_step = self.env_step(counters)
        # (a stop request defers a due evaluation to the resumed run: next_eval is checkpointed)
        if schedule.eval_due(env_step, counters.next_eval) and not stopping:
            loop = self.log_eval(loop, stop)
            if loop.counters.last_eval == env_step:
                loop = replace(loop, counters=loop.counters._replace(next_eval=schedule.next_eval(env_step)))
        finished, stopping = schedule.finished(env_step), stop.signum is not None
        if schedule.checkpoint_due(loop.counters.tick, loop.next_checkpoint, stopping):
            if finished and loop.counters.last_eval != env_step and not stopping:
                loop = self.log_eval(loop, stop)
            loop = self.write_train_row(loop)  # a checkpoint closes the window: a resumed run logs the same rows
            if env_step > loop.start_step or not loop.resumed:
                self.save_checkpoints(loop)
            loop = replace(loop, next_checkpoint=schedule.next_checkpoint(env_step))
            if finished or stop.signum is not None:
                return replace(loop, done=True)
        if not loop.active.any():
            return replace(loop, done=True)
        return self.advance(loop)

    def run(self) -> int:
        """The host driver: restore or start, step until done, mark how it ended. Returns an exit code."""
        cfg, loop = self.cfg, self.restore_or_init()
        self.log.start(loop.start_step, loop.resumed, cfg.train.steps, loop.attempts, self.run_seeds,
                       provenance.record(cfg, loop.start_step, loop.resumed))
        self.log.start_tracking(cfg, loop.attempts)
        bar = tqdm(total=cfg.train.steps, initial=loop.start_step, unit="env step", disable=not self.progress,
                   mininterval=0.5 if sys.stderr.isatty() else 10, dynamic_ncols=True, file=sys.stderr)
        with StopRequest() as stop, bar:
            try:
                while not loop.done:
                    loop = self.step(loop, stop)
                    bar.update(self.env_step(loop.counters) - bar.n)
                    bar.set_postfix_str(self.log.mppi_postfix(), refresh=False)
            except KeyboardInterrupt:
                self.log.finish(loop.active, self.env_step(loop.counters), runlayout.INTERRUPTED,
                                "stopped at once; progress since the last checkpoint is lost")
                return 130
            return self.finish(loop, stop)

    def finish(self, loop: Loop, stop: StopRequest) -> int:
        """Mark the runs done, or interrupted when a stop request came before the end; the exit code."""
        env_step = self.env_step(loop.counters)
        if stop.signum is not None and (env_step < self.cfg.train.steps or loop.counters.last_eval != env_step):
            self.log.finish(loop.active, env_step, runlayout.INTERRUPTED,
                            f"{signal.Signals(stop.signum).name}; resume with the same command")
            return stop.exit_code
        self.log.finish(loop.active, env_step, runlayout.DONE, None)
        return 0 if (loop.active | loop.left).all() else 1

    def close(self) -> None:
        for pool in (self.env.pool, self.eval_pool):
            if pool is not None:
                pool.close()
        self.log.close()


def train(cfg: Config, seeds: list[int], run_dirs: list[Path], *, progress: bool = True) -> int:
    """Train `seeds` (vmapped in this process) into `run_dirs`. Returns a process exit code.

    Seeds whose status is done (for at least cfg.train.steps) or failed are skipped; the rest resume from
    their latest checkpoint when they have one. Basin restarts: see basin.py.

    One writer per run directory: a second process on any of them is refused (exit 2) naming the holder; a
    full disk or a run file that cannot be resumed from stops with one line (exit 1), the last good
    checkpoint kept, and the same command resumes once the cause is gone."""
    def batch(todo_seeds, todo_dirs, attempt):
        trainer = Trainer(cfg, todo_seeds, todo_dirs, progress=progress, attempt=attempt)
        try:
            return trainer.run()
        finally:
            trainer.close()

    dirs = [Path(d) for d in run_dirs]
    warning = provenance.apply_runtime(cfg)  # XLA_FLAGS before JAX starts its backend
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    try:
        with runlayout.RunLock(dirs, command=" ".join(sys.argv)) as lock:
            for run_dir, holder in lock.taken_over:
                print(f"warning: {run_dir}: took over the stale lock of {runlayout.holder_text(holder)}",
                      file=sys.stderr)
            for run_dir in dirs:  # a writer killed inside write_atomic leaves its temp file; we hold the lock
                runlayout.remove_temp_files(run_dir)
            return train_with_restarts(cfg, list(seeds), dirs, batch)
    except runlayout.RunLockedError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (runlayout.DiskFullError, runlayout.RunFileError) as e:  # CheckpointError is a RunFileError
        print(f"error: {e}", file=sys.stderr)
        return 1
