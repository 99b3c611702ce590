"""Training loop over a batch of seeds: S seeds x E envs in one process, one jitted call per decision and per
round of updates, evaluation, CSV logging, checkpoint/resume and signal handling.

Schedule, in ENV steps per seed (agent steps x action_repeat x envs of the seed):
  a round = `collect_steps` agent steps over the seed's envs, then K_UPDATE updates in one lax.scan;
  uniform random actions until EXPL_UNTIL, then one burst of `seed_updates` updates, then K_UPDATE per round;
  evaluation at env step 0 and every `eval_freq`; a checkpoint at the first episode end after every
  `checkpoint_freq`, on a signal and at the end.
Episodes have a fixed length and every env of every seed resets together, so rounds end on episode
boundaries and a checkpoint taken there (plus per-episode reset seeds) makes a resumed run identical to an
uninterrupted one.
"""
from __future__ import annotations

import csv
import json
import os
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from . import agent, buffer as replay, checkpoint, multitask, schedules
from .config import Config, derive, to_dict
from .envs import EnvPool
from .envs import shaping as shaping_lib
from .planner import PlanSettings, plan_batch, policy_act_batch
from .runlog import RunLog
from .world_model import make_networks

TRAIN_STREAM, EVAL_STREAM = 0, 1


def episode_seeds(run_seeds, stream: int, index: int, per_seed: int) -> np.ndarray:
    """Reset seeds (S * per_seed,) for episode `index` of a stream; seed-major order, like the env pools."""
    return np.array([np.random.SeedSequence([s, stream, index, i]).generate_state(1)[0]
                     for s in run_seeds for i in range(per_seed)], dtype=np.int64)


def config_fingerprint(cfg: Config) -> str:
    """Everything that must match to resume a checkpoint (train.steps may grow to extend a run; the
    train.video_at_eval switch changes no result, so it is left out and may be flipped on resume)."""
    tree = to_dict(replace(cfg, train=replace(cfg.train, steps=0)))
    tree["train"].pop("video_at_eval", None)
    return json.dumps(tree, sort_keys=True)


class StopRequest:
    """First SIGINT/SIGTERM: finish the episode, checkpoint, exit. Second: stop at once."""

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
        print(f"\n{signal.Signals(signum).name}: finishing the current episode, then checkpointing "
              "(send again to stop at once)", file=sys.stderr, flush=True)

    @property
    def exit_code(self) -> int:
        return 130 if self.signum == signal.SIGINT else 143


class TrainLogWindow:
    """Averages per-round metrics (arrays over seeds) between train.csv rows and measures throughput."""

    def __init__(self, env_step: int, log_freq: int):
        self.log_freq = log_freq
        self._reset(env_step)

    def _reset(self, env_step):
        self.sums, self.rounds, self.updates = {}, 0, 0
        self.step0, self.clock0 = env_step, time.time()
        self.next_row = (env_step // self.log_freq + 1) * self.log_freq

    def add(self, metrics: dict, num_updates: int):
        if metrics:
            for k, v in metrics.items():
                self.sums[k] = self.sums.get(k, 0.0) + v
            self.rounds += 1
            self.updates += num_updates

    def due(self, env_step: int) -> bool:
        return env_step >= self.next_row and self.rounds > 0

    def flush(self, env_step: int):
        """The row since the last one (None when no updates ran), and a new window."""
        if self.rounds == 0:
            return None
        elapsed = max(time.time() - self.clock0, 1e-9)
        row = {k: v / self.rounds for k, v in self.sums.items()}
        row.update(updates_per_s=self.updates / elapsed, env_steps_per_s=(env_step - self.step0) / elapsed)
        self._reset(env_step)
        return row


class Trainer:
    def __init__(self, cfg: Config, seeds: list[int], run_dirs: list[Path], progress: bool = True,
                 attempts: list[int] | None = None):
        """attempts: basin restarts already made per seed (0: the run's first attempt; see `train`)."""
        self.cfg, self.d = cfg, derive(cfg)
        self.seeds, self.progress = list(seeds), progress
        self.attempts = [0] * len(self.seeds) if attempts is None else [int(a) for a in attempts]
        # the seed of each run's current attempt: its init, keys, exploration and training episodes
        self.run_seeds = [schedules.restart_seed(s, a, cfg.schedule) for s, a in zip(self.seeds, self.attempts)]
        self.restarting = np.zeros(len(self.seeds), dtype=bool)  # seeds that left this batch to restart
        self.tasks = multitask.tasks_of(cfg)
        self.multitask = bool(cfg.multitask.tasks)
        self.sampler = multitask.TaskSampler(cfg, len(self.seeds)) if self.multitask else None
        self.task_ids = None  # (S, E) task of each env in the current episode (multi-task)
        self.shaping = shaping_lib.enabled(cfg.shaping)
        self.logs = [RunLog(p) for p in run_dirs]
        t = cfg.train
        self.E, self.L = t.num_envs, t.episode_length
        self.env_steps_per_tick = t.action_repeat * self.E
        self.ticks_per_round = self.d.steps_per_env_per_round
        self.pool = EnvPool(self.tasks if self.multitask else cfg.task, len(seeds) * self.E, t.action_repeat,
                            t.num_workers, shaping=self.shaping)
        self.eval_pool = None
        # multi-task: a one-hot task id joins the observation
        self.obs_dim = multitask.model_obs_dim(cfg, self.pool.obs_dim)
        self.act_dim = self.pool.act_dim
        self.hyper = agent.Hyper.from_config(cfg)
        self.plan_settings = PlanSettings.from_config(cfg.planner, cfg.horizon, self.d.discount)
        self.world_tx, self.policy_tx = agent.optimisers(cfg)
        self.round_traces = 0  # incremented only while tracing: tests assert it stops growing
        self._videos = None  # train.video_at_eval: a tdmpc_glass.video.EvalVideoRecorder, made at the first eval
        self._build_functions()

    # ---- jitted pieces -------------------------------------------------------------------------------------
    def _build_functions(self):
        cfg, E = self.cfg, self.E
        self._init = jax.jit(jax.vmap(lambda s: agent.init_state(cfg, self.obs_dim, self.act_dim, s)))

        def act(states, obs, prev_mean, counter, eval_mode: bool, use_planner: bool):
            purpose = agent.EVAL if eval_mode else agent.ACT
            keys = jax.vmap(lambda k: jax.random.split(agent.stream(k, purpose, counter), obs.shape[1]))(states.key)
            if use_planner:
                return plan_batch(states.world, states.policy, obs, prev_mean, keys, self.plan_settings, eval_mode)
            return policy_act_batch(states.policy, states.world, obs, keys, eval_mode), prev_mean

        self._act = jax.jit(act, static_argnames=("eval_mode", "use_planner"))

        def q_reset(states, index):  # schedule.q_reset_at: fresh Q heads from the seed's key and the reset's index
            def one(state):
                key = agent.stream(state.key, agent.INIT, schedules.Q_RESET_STREAM + index)
                fresh_world, _ = make_networks(cfg, self.obs_dim, self.act_dim, key)
                return schedules.q_reset(state, fresh_world.qs, self.world_tx)
            return jax.vmap(one)(states)

        def perturb(states, index):  # schedule.perturb_at
            s = cfg.schedule
            return jax.vmap(lambda state: schedules.perturb(
                state, s.perturb_scale, s.perturb_target,
                agent.stream(state.key, agent.INIT, schedules.PERTURB_STREAM + index)))(states)

        self._q_reset_jit, self._perturb_jit = jax.jit(q_reset), jax.jit(perturb)

        def round_fn(states, obs, action, reward, pos, first_update, num_updates: int, hyper: agent.Hyper,
                     kmeans: bool, intrinsic_coef=None, smooth_coef=None):
            self.round_traces += 1
            buffers = jax.vmap(replay.add)(states.buffer, obs, action, reward, pos)
            states = eqx.tree_at(lambda s: s.buffer, states, buffers)
            if kmeans:  # once, when seeding ends: prototypes from the exploration data (research log 10.7)
                states = jax.vmap(lambda s: agent.kmeans_prototypes(s, agent.stream(s.key, agent.INIT, 1)))(states)
            if num_updates == 0:
                return states, {}
            run = lambda s: agent.run_updates(s, first_update, num_updates, hyper, self.world_tx, self.policy_tx,
                                              intrinsic_coef, smooth_coef)
            return jax.vmap(run)(states)

        donate = (0,) if jax.default_backend() != "cpu" else ()
        self._round_jit = jax.jit(round_fn, static_argnames=("num_updates", "hyper", "kmeans"),
                                  donate_argnums=donate)

    # ---- state: fresh or resumed ---------------------------------------------------------------------------
    def _template(self):
        return jax.eval_shape(lambda: agent.init_state(self.cfg, self.obs_dim, self.act_dim, 0))

    def restore_or_init(self):
        latest = [checkpoint.list_checkpoints(log.dir / "checkpoints") for log in self.logs]
        if not any(latest):
            self.counters = {"tick": 0, "updates": 0, "burst_done": False, "next_eval": 0, "last_eval": -1}
            for log in self.logs:  # a run killed before its first checkpoint starts over
                log.eval.truncate_after(-1)
                log.train.truncate_after(-1)
            return self._init(jnp.asarray(self.run_seeds)), False
        steps = {int(c[-1].stem.split("_")[1]) if c else None for c in latest}
        if len(steps) != 1:
            detail = ", ".join(f"seed {s}: {c[-1].name if c else 'none'}" for s, c in zip(self.seeds, latest))
            raise checkpoint.CheckpointError(f"seeds of one batch must resume from the same env step ({detail}); "
                                             "run them in separate batches")
        template, fingerprint = self._template(), config_fingerprint(self.cfg)
        seed_states, metas = [], []
        for seed, ckpts in zip(self.seeds, latest):
            state, meta = checkpoint.load(ckpts[-1], template)
            if meta.get("fingerprint") != fingerprint:
                raise checkpoint.CheckpointError(f"incompatible checkpoint {ckpts[-1]}: written with a different config")
            if meta.get("seed") != seed:
                raise checkpoint.CheckpointError(f"incompatible checkpoint {ckpts[-1]}: it is seed {meta.get('seed')}, "
                                                 f"not seed {seed}")
            seed_states.append(state)
            metas.append(meta)
        for i, (meta, ckpts) in enumerate(zip(metas, latest)):
            self._load_schedule_state(i, meta.get("schedule", {}), ckpts[-1])
        self.counters = metas[0]["counters"]
        env_step = self.counters["tick"] * self.env_steps_per_tick
        for log in self.logs:
            log.eval.truncate_after(env_step)
            log.train.truncate_after(env_step)
        states = jax.tree.map(lambda *xs: jnp.asarray(np.stack(xs)), *seed_states)
        return states, True

    def save_checkpoints(self, states, active):
        env_step = self.env_step
        host = jax.device_get(states)
        leaves = jax.tree.leaves(host)
        fingerprint = config_fingerprint(self.cfg)
        for i, (seed, log) in enumerate(zip(self.seeds, self.logs)):
            if active[i]:
                meta = {"seed": seed, "env_step": env_step, "counters": self.counters, "fingerprint": fingerprint,
                        "schedule": self._schedule_state(i)}
                checkpoint.save(log.dir / "checkpoints", env_step, [x[i] for x in leaves], meta)

    @property
    def env_step(self) -> int:
        return self.counters["tick"] * self.env_steps_per_tick

    # ---- schedules, shaping, multi-task (schedules.py, envs/shaping.py, multitask.py) ------------------------
    def _observation(self, raw_obs) -> np.ndarray:
        """Pool observations (S * E, obs_dim) -> (S, E, obs_dim), with the one-hot task id when multi-task."""
        obs = raw_obs.reshape(len(self.seeds), self.E, -1)
        return multitask.with_task_id(obs, self.task_ids, len(self.tasks)) if self.multitask else obs

    def _eval_obs(self, obs) -> np.ndarray:
        """Evaluation observations (S, n, obs_dim) of `task`, with its task id when multi-task."""
        if not self.multitask:
            return obs
        return multitask.with_task_id(obs, np.full(obs.shape[:-1], self.tasks.index(self.cfg.task)),
                                      len(self.tasks))

    def _schedule_metrics(self, shaping_mean) -> dict:
        """Per-seed (S,) arrays for train.csv: the schedules' current values."""
        out, s = {}, self.cfg.schedule
        if s.action_noise_start or s.action_noise_end:
            out["action_noise_std"] = np.full(len(self.seeds), schedules.action_noise_std(s, self.env_step))
        if self.shaping:
            out["shaping_reward"] = shaping_mean  # mean shaping added per agent step in the round
        if self.multitask:
            for k, task in enumerate(self.tasks):
                out[f"task_p_{task}"] = self.sampler.p[:, k].copy()
                out[f"task_u_{task}"] = self.sampler.u[:, k].copy()
        return out

    def _schedule_state(self, i: int) -> dict:
        """Seed i's schedule state for its checkpoint meta."""
        state = {"attempt": self.attempts[i], "run_seed": self.run_seeds[i]}
        if self.multitask:
            state.update(self.sampler.state(i))
        return state

    def _load_schedule_state(self, i: int, state: dict, path) -> None:
        if int(state.get("attempt", 0)) != self.attempts[i]:
            raise checkpoint.CheckpointError(f"incompatible checkpoint {path}: it is restart attempt "
                                             f"{state.get('attempt', 0)}, this run is attempt {self.attempts[i]}")
        if self.multitask:
            self.sampler.load(i, state)

    def _scheduled_events(self, states, prev_step: int, active):
        """Q-resets, perturbations and the basin check due after a round that moved env_step from prev_step."""
        s, now = self.cfg.schedule, self.env_step
        for index in schedules.crossed(s.q_reset_at, prev_step, now):
            states = self._q_reset_jit(states, jnp.int32(index))
            for i, log in enumerate(self.logs):
                if active[i]:
                    log.event(now, "q_reset", index=index, scheduled_at=s.q_reset_at[index])
        for index in schedules.crossed(s.perturb_at, prev_step, now):
            states = self._perturb_jit(states, jnp.int32(index))
            for i, log in enumerate(self.logs):
                if active[i]:
                    log.event(now, "perturb", index=index, scheduled_at=s.perturb_at[index], scale=s.perturb_scale,
                              target=s.perturb_target)
        if s.restart_check_at is not None and schedules.crossed([s.restart_check_at], prev_step, now):
            self._basin_check(active)
        return states

    def _basin_metric(self, i: int):
        """Seed i's active_prototypes in its latest train.csv row (None without one)."""
        path = self.logs[i].train.path
        if not path.exists():
            return None
        with open(path, newline="") as f:
            values = [r.get("active_prototypes") for r in csv.DictReader(f)
                      if r.get("env_step") and int(float(r["env_step"])) <= self.env_step]
        try:
            return float(values[-1]) if values else None
        except (TypeError, ValueError):
            return None

    def _basin_check(self, active):
        """Research log 10.6: a seed with fewer active prototypes than restart_min_active leaves the batch and is
        restarted from scratch by `train` (attempt + 1, seed + restart_seed_offset * attempt)."""
        s, now = self.cfg.schedule, self.env_step
        for i, log in enumerate(self.logs):
            if not active[i]:
                continue
            value = self._basin_metric(i)
            if value is not None and schedules.basin_restart_due(value, self.attempts[i], s):
                attempt = self.attempts[i] + 1
                new_seed = schedules.restart_seed(self.seeds[i], attempt, s)
                log.event(now, "restart", attempt=attempt, active_prototypes=value, threshold=s.restart_min_active,
                          previous_seed=self.run_seeds[i], new_seed=new_seed,
                          message=f"{value:g} active prototypes < {s.restart_min_active}: restarting from scratch "
                                  f"with seed {new_seed} (attempt {attempt} of at most {s.restart_max})")
                log.set_status(status="restarting", env_step=now, attempt=attempt)
                active[i], self.restarting[i] = False, True
            else:
                why = ("no active_prototypes in train.csv yet" if value is None else
                       "enough active prototypes" if value >= s.restart_min_active else "no restarts left")
                log.event(now, "restart_check", active_prototypes=value, threshold=s.restart_min_active,
                          attempt=self.attempts[i], restart=False, message=why)

    # ---- evaluation ----------------------------------------------------------------------------------------
    def evaluate(self, states, eval_index: int) -> dict[str, np.ndarray]:
        """Mean/std over `eval_episodes` episodes per seed, with MPPI and with the policy prior alone."""
        n, S = self.cfg.train.eval_episodes, len(self.seeds)
        if self.eval_pool is None:
            self.eval_pool = EnvPool(self.cfg.task, S * n, self.cfg.train.action_repeat, self.cfg.train.num_workers)
        out = {}
        for name, use_planner in (("mppi", True), ("pi", False)):
            obs = self.eval_pool.reset(episode_seeds(self.seeds, EVAL_STREAM, eval_index, n))
            prev_mean = jnp.zeros((S, n, self.cfg.horizon, self.act_dim))
            returns = np.zeros(S * n)
            for t in range(self.L):
                actions, prev_mean = self._act(states, jnp.asarray(self._eval_obs(obs.reshape(S, n, -1))), prev_mean,
                                               eval_index * self.L + t, eval_mode=True, use_planner=use_planner)
                obs, reward = self.eval_pool.step(np.asarray(actions).reshape(S * n, -1))
                returns += reward
            returns = returns.reshape(S, n)
            out[f"{name}_return"], out[f"{name}_return_std"] = returns.mean(1), returns.std(1)
        return out

    # ---- the loop ------------------------------------------------------------------------------------------
    def run(self) -> int:
        cfg, S, E = self.cfg, len(self.seeds), self.E
        states, resumed = self.restore_or_init()
        active = np.ones(S, dtype=bool)
        start_step = self.env_step
        for i, log in enumerate(self.logs):
            log.event(start_step, "resume" if resumed else "start", total_env_steps=cfg.train.steps,
                      **({"attempt": self.attempts[i], "run_seed": self.run_seeds[i]} if self.attempts[i] else {}))
            last, best = log.best_eval_so_far()
            log.set_status(status="running", env_step=start_step, total_env_steps=cfg.train.steps,
                           last_mppi_return=last, best_mppi_return=best, attempt=self.attempts[i])
        eval_freq, ckpt_freq = cfg.train.eval_freq, cfg.train.checkpoint_freq
        next_ckpt = (start_step // ckpt_freq + 1) * ckpt_freq
        self._train_log = TrainLogWindow(start_step, cfg.train.log_freq)
        bar = tqdm(total=cfg.train.steps, initial=start_step, unit="env step", disable=not self.progress,
                   mininterval=0.5 if sys.stderr.isatty() else 10, dynamic_ncols=True, file=sys.stderr)
        self.started = time.time()
        prev_mean = jnp.zeros((S, E, cfg.horizon, self.act_dim))
        with StopRequest() as stop:
            try:
                while True:
                    # (a stop request defers a due evaluation to the resumed run: next_eval is checkpointed)
                    if self.env_step >= self.counters["next_eval"] and stop.signum is None:
                        self._log_eval(states, active)
                        self.counters["next_eval"] = (self.env_step // eval_freq + 1) * eval_freq
                        bar.set_postfix_str(self._postfix(), refresh=False)
                    finished = self.env_step >= cfg.train.steps
                    at_episode_end = self.counters["tick"] % self.L == 0
                    if at_episode_end and (finished or stop.signum is not None or self.env_step >= next_ckpt):
                        if finished and self.counters["last_eval"] != self.env_step:
                            self._log_eval(states, active)
                        # a checkpoint closes the train.csv window, so a resumed run logs the same rows
                        self._write_train_rows(active)
                        if self.env_step > start_step or not resumed:
                            self.save_checkpoints(states, active)
                        next_ckpt = (self.env_step // ckpt_freq + 1) * ckpt_freq
                        if finished or stop.signum is not None:
                            break
                    if not active.any():
                        break
                    prev_step = self.env_step
                    states, prev_mean, metrics = self._collect_and_update(states, prev_mean, active)
                    bar.update(self.env_step - bar.n)
                    self._check_finite(metrics, active)
                    self._train_log.add(metrics, self._last_num_updates)
                    if self._train_log.due(self.env_step):
                        self._write_train_rows(active)
                    states = self._scheduled_events(states, prev_step, active)
            except KeyboardInterrupt:
                stop.signum = stop.signum or signal.SIGINT
                self._finish(active, "interrupted", "stopped at once; progress since the last checkpoint is lost")
                bar.close()
                return 130
            bar.close()
            exit_code = 0
            if stop.signum is not None and self.env_step < cfg.train.steps:
                self._finish(active, "interrupted", f"{signal.Signals(stop.signum).name}; resume with the same command")
                exit_code = stop.exit_code
            else:
                self._finish(active, "done", None)
        return 1 if (exit_code == 0 and not (active | self.restarting).all()) else exit_code

    def _collect_and_update(self, states, prev_mean, active):
        """Collect one round of agent steps for every env of every seed, then run the round's updates."""
        cfg, S, E, L = self.cfg, len(self.seeds), self.E, self.L
        rows_obs, rows_action, rows_reward, rows_pos = [], [], [], []
        shaping_sum = np.zeros(S)
        for _ in range(self.ticks_per_round):
            tick = self.counters["tick"]
            if tick % L == 0:  # every env of every seed starts a new episode together
                if self.multitask:  # each env's task for this episode, then the usage controller moves p
                    self.task_ids = self.sampler.sample(self.run_seeds, tick // L, E)
                    self.sampler.observe(self.task_ids)
                self.obs = self._observation(self.pool.reset(
                    episode_seeds(self.run_seeds, TRAIN_STREAM, tick // L, E),
                    None if self.task_ids is None else self.task_ids.reshape(-1)))
                prev_mean = jnp.zeros_like(prev_mean)
                rows_obs.append(self.obs)
                rows_action.append(np.zeros((S, E, self.act_dim), np.float32))
                rows_reward.append(np.zeros((S, E), np.float32))
                rows_pos.append(np.zeros((S, E), np.int32))
            if tick * self.env_steps_per_tick < self.d.expl_until_env_steps:
                actions = np.stack([np.random.default_rng([s, tick]).uniform(-1, 1, (E, self.act_dim))
                                    for s in self.run_seeds]).astype(np.float32)
            else:
                actions, prev_mean = self._act(states, jnp.asarray(self.obs), prev_mean, tick, eval_mode=False,
                                               use_planner=cfg.planner.mpc)
                actions = np.array(actions)  # a writable host copy
                # executed-action noise (schedule.action_noise_*): the noisy action is the one stored
                actions = schedules.action_noise(actions, self.run_seeds, tick,
                                                 schedules.action_noise_std(cfg.schedule, self.env_step))
                actions[~active] = 0.0  # a failed seed's NaN actions must not reach the simulator
            obs, reward = self.pool.step(actions.reshape(S * E, -1))
            if self.shaping:  # shaped rewards enter the buffer only; evaluation pools never shape
                shaped = shaping_lib.shaped_reward(reward, self.pool.shaping_terms, cfg.shaping, self.env_step)
                shaping_sum += (shaped - reward).reshape(S, E).mean(1)
                reward = shaped
            self.obs = self._observation(obs)
            rows_obs.append(self.obs)
            rows_action.append(actions)
            rows_reward.append(reward.reshape(S, E))
            rows_pos.append(np.full((S, E), tick % L + 1, np.int32))
            self.counters["tick"] += 1

        stack = lambda rows: jnp.asarray(np.stack(rows, axis=1))  # (S, n, E, ...)
        burst = not self.counters["burst_done"] and self.env_step >= self.d.expl_until_env_steps
        num_updates = self._updates_due()
        glass_off = cfg.glass.off_after is not None and self.env_step >= cfg.glass.off_after
        # Glass's intrinsic reward (P / Pa): None when off; else a float32 whose value decays with env step and
        # whose type never changes, so the round is traced once for it
        intrinsic = agent.intrinsic_coefficient(cfg, self.env_step)
        states, metrics = self._round_jit(states, stack(rows_obs), stack(rows_action), stack(rows_reward),
                                          stack(rows_pos), jnp.int32(self.counters["updates"]),
                                          num_updates=num_updates,
                                          hyper=self.hyper._replace(glass=None) if glass_off else self.hyper,
                                          kmeans=burst and cfg.glass.enabled and cfg.glass.kmeans_init,
                                          intrinsic_coef=None if intrinsic is None else jnp.float32(intrinsic),
                                          smooth_coef=schedules.action_smooth_coef(cfg.schedule, self.env_step))
        self.counters["updates"] += num_updates
        self._last_num_updates = num_updates
        metrics = {k: np.asarray(v) for k, v in metrics.items()}
        if metrics:  # host-side schedule values of the round, logged with its update metrics
            metrics.update(self._schedule_metrics(shaping_sum / self.ticks_per_round))
        return states, prev_mean, metrics

    def _updates_due(self) -> int:
        if self.env_step < self.d.expl_until_env_steps:
            return 0
        if not self.counters["burst_done"]:
            self.counters["burst_done"] = True
            return self.d.seed_updates
        return self.d.k_update

    def _check_finite(self, metrics, active):
        if not metrics:
            return
        finite = metrics.pop("params_finite")
        for i, log in enumerate(self.logs):
            if not active[i]:
                continue
            bad = [k for k, v in metrics.items() if not np.isfinite(v[i])]
            if bad or not finite[i]:
                term = bad[0] if bad else "parameters"
                log.event(self.env_step, "nonfinite", term=term, update=self.counters["updates"],
                          message=f"non-finite {term} in the updates ending at update {self.counters['updates']}; "
                                  "the last good checkpoint is kept")
                log.set_status(status="failed", env_step=self.env_step)
                print(f"seed {self.seeds[i]}: non-finite {term} at env step {self.env_step}; run marked failed",
                      file=sys.stderr)
                active[i] = False

    def _write_train_rows(self, active):
        row = self._train_log.flush(self.env_step)
        if row is None:
            return
        common = {"env_step": self.env_step, "agent_step": self.counters["tick"] * self.E,
                  "update": self.counters["updates"], "wall_time_s": time.time() - self.started}
        for i, log in enumerate(self.logs):
            if active[i]:
                log.train.append({**common, **{k: (float(v[i]) if np.ndim(v) else v) for k, v in row.items()}})
                log.set_status(env_step=self.env_step, env_steps_per_s=row["env_steps_per_s"])

    def _log_eval(self, states, active):
        self.counters["last_eval"] = self.env_step
        index = self.env_step // max(self.cfg.train.eval_freq, 1)
        results = self.evaluate(states, index)
        for i, log in enumerate(self.logs):
            if not active[i]:
                continue
            row = {"env_step": self.env_step, "agent_step": self.counters["tick"] * self.E,
                   "episodes": self.cfg.train.eval_episodes, "wall_time_s": time.time() - self.started}
            row.update({k: float(v[i]) for k, v in results.items()})
            log.eval.append(row)
            best = log.status.get("best_mppi_return")
            mppi = row["mppi_return"]
            log.set_status(env_step=self.env_step, last_mppi_return=mppi,
                           best_mppi_return=mppi if best is None else max(best, mppi))
        if self.cfg.train.video_at_eval:
            self._record_videos(states, active)

    def _record_videos(self, states, active):
        """One K-labelled MPPI episode per seed into <run>/videos/eval_step<env_step>_mppi.* (tdmpc_glass/video.py)."""
        from .rollout import run_label
        from .video import EvalVideoRecorder

        if self._videos is None:
            self._videos = EvalVideoRecorder(self.cfg, self.obs_dim, self.act_dim, act=self._act)
        self._videos.record(states, [log.dir for log in self.logs], [run_label(log.dir) for log in self.logs],
                            active, self.env_step)

    def _postfix(self) -> str:
        last = [log.status.get("last_mppi_return") for log in self.logs]
        last = [x for x in last if x is not None]
        return f"MPPI {np.mean(last):.1f}" if last else ""

    def _finish(self, active, status, message):
        for i, log in enumerate(self.logs):
            if active[i]:
                log.event(self.env_step, status, **({"message": message} if message else {}))
                log.set_status(status=status, env_step=self.env_step)
        self._close_pools()

    def _close_pools(self):
        for pool in (self.pool, self.eval_pool):
            if pool is not None:
                pool.close()
        if self._videos is not None:
            self._videos.close()


RESTARTS_DIR = "restarts"  # run_dir/restarts/attempt<k>/: the files of a basin-restarted attempt k
ATTEMPT_FILES = ("eval.csv", "train.csv", "checkpoints", "videos")


def begin_restart(run_dir: Path, attempt: int) -> dict:
    """Move the files of attempt `attempt - 1` of a run into run_dir/restarts/attempt<attempt - 1>/ and mark the
    run as running attempt `attempt` from env step 0. config.yaml and events.jsonl stay (events.jsonl is the
    run's whole history). Safe to repeat after a kill half-way: what is already moved stays moved."""
    run_dir = Path(run_dir)
    archive = run_dir / RESTARTS_DIR / f"attempt{attempt - 1}"
    archive.mkdir(parents=True, exist_ok=True)
    for name in ATTEMPT_FILES:  # each move is one rename: a kill leaves every file on one side or the other
        src, dst = run_dir / name, archive / name
        if not src.exists():
            continue
        if dst.exists():  # moved before a kill; what is here now is the new attempt's empty folder
            if src.is_dir() and not any(src.iterdir()):
                src.rmdir()
                continue
            raise RuntimeError(f"{src}: cannot archive restart attempt {attempt - 1}, {dst} exists already")
        os.replace(src, dst)
    log = RunLog(run_dir)
    log.set_status(status="running", env_step=0, attempt=attempt)
    return log.status


def train(cfg: Config, seeds: list[int], run_dirs: list[Path], *, progress: bool = True) -> int:
    """Train `seeds` (vmapped in this process) into `run_dirs`. Returns a process exit code.

    Seeds whose status is done (for at least cfg.train.steps) or failed are skipped; the rest resume from
    their latest checkpoint when they have one.

    Basin restart (schedule.restart_check_*, research log 10.6): a seed the check sends back leaves its batch
    (status `restarting`, a `restart` event) while the others go on. When the batch ends, its earlier files move
    to run_dir/restarts/attempt<k>/ and the restarted seeds train from scratch as their own batch, with their
    own step counter from 0, seed + restart_seed_offset * attempt for init and exploration, and the same
    config (so the same check again, while restarts are left). Batches run in order of attempt; a killed
    run resumes each from its checkpoints (whose meta holds the attempt).
    """
    code, first = 0, True
    for _ in range(cfg.schedule.restart_max + 2):  # one batch per restart attempt, attempt 0 first
        groups: dict[int, list] = {}
        for seed, run_dir in zip(seeds, run_dirs):
            status = RunLog(run_dir).read_status() or {}
            if status.get("status") == "restarting":
                status = begin_restart(Path(run_dir), int(status.get("attempt", 1)))
            if status.get("status") == "done" and status.get("env_step", 0) >= cfg.train.steps:
                if first:
                    print(f"seed {seed}: already done ({run_dir})", file=sys.stderr)
            elif status.get("status") == "failed":
                if first:
                    print(f"seed {seed}: failed earlier, skipped (see {Path(run_dir) / 'events.jsonl'})",
                          file=sys.stderr)
            else:
                groups.setdefault(int(status.get("attempt") or 0), []).append((seed, Path(run_dir)))
        first = False
        if not groups:
            return code
        attempt = min(groups)
        todo = groups[attempt]
        trainer = Trainer(cfg, [s for s, _ in todo], [d for _, d in todo], progress=progress,
                          attempts=[attempt] * len(todo))
        try:
            result = trainer.run()
        finally:
            trainer._close_pools()
        if result in (130, 143):  # interrupted: the same command resumes
            return result
        code = code or result
    return code
