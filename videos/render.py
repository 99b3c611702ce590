"""K-labelled rollout videos and K timelines for any checkpoint of a run.

    python videos/render.py --run runs/<phase>/<variant>/seed<k> [--checkpoint latest|best|<env_step>]
        [--episodes 1] [--policy mppi|pi] [--seed S] [--out DIR] [--max-steps N] [--height H --width W]
        [--camera 0] [--no-overlay]
    python videos/render.py --grid RUN RUN ... [same options]     (with --run too, it comes first)

Rolls the checkpoint out in dm_control (eval mode: MPPI, or the policy prior alone with --policy pi),
renders headless from camera 0 and writes, per episode, into --out (default <run>/videos/):
step<env_step>_<policy>_seed<S>_ep<i>.mp4 / .csv / _latents.npz / _timeline.png / _summary.json
(tdmpc_glass/video/recorder.py describes each file). --grid rolls every run out from the same episode seed and
writes one side-by-side video grid_<policy>_seed<S>_ep<i>.mp4 (default --out: <common parent>/videos/).

A run trained with Glass off has no K labels: its frames say "K=- (Glass off)", the CSV's K column is empty
and the timeline is skipped (said on stderr). Exit codes: 0 done, 2 bad input (no such run, checkpoint
missing or incompatible: one line `error: ...`), 1 rendering impossible here (no OpenGL backend, or no ffmpeg
to write the video: one line `error: ...` naming what to install, said before anything is rolled out).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="videos/render.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", help="run directory <runs_root>/<phase>/<variant>/seed<k>")
    p.add_argument("--grid", nargs="+", metavar="RUN", default=[],
                   help="render these runs side by side in one video (same episode seed for each)")
    p.add_argument("--checkpoint", default="latest",
                   help="latest (default), best (the kept checkpoint closest at or after the best MPPI eval), "
                        "or an env step of a kept checkpoint")
    p.add_argument("--episodes", type=int, default=1)
    p.add_argument("--policy", choices=("mppi", "pi"), default="mppi")
    p.add_argument("--seed", type=int, default=0, help="episode seed (reset states); the same for every grid run")
    p.add_argument("--out", type=Path, help="output folder (default <run>/videos/)")
    p.add_argument("--max-steps", type=int, help="cap the episode at this many agent steps (default: a full episode)")
    p.add_argument("--height", type=int, default=None, help="frame height (default 360, 240 per grid tile)")
    p.add_argument("--width", type=int, default=None, help="frame width (default 480, 320 per grid tile)")
    p.add_argument("--camera", type=int, default=0)
    p.add_argument("--no-overlay", dest="overlay", action="store_false", help="plain frames, no K overlay")
    args = p.parse_args(argv)
    if not args.run and not args.grid:
        p.error("give --run RUN or --grid RUN ...")
    for name in ("episodes", "max_steps", "height", "width"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name.replace('_', '-')}: must be >= 1, got {value}")
    return args


def describe(path: Path, s: dict) -> str:
    if not s.get("glass", True) or s.get("distinct_k") is None:
        k = "Glass off (no K labels)"
    else:
        per_hop = s.get("switches_per_hop_cycle")
        per_hop = f"{per_hop:.2f} per hop cycle" if per_hop is not None else "no hop cycles"
        k = (f"K used {s['clusters_used']}, {s['switches']} switches ({per_hop}), longest stable "
             f"{s['longest_stable_steps']} steps (K={s['longest_stable_k']})")
    return f"{path}: return {s['return']:.1f} over {s['steps']} steps; {k}"


def enable_compilation_cache() -> None:
    """The launcher's compilation cache (provenance.use_compilation_cache): the planner takes a minute to
    compile on a CPU."""
    from tdmpc_glass.provenance import use_compilation_cache

    use_compilation_cache()


def main(argv: list[str] | None = None) -> int:
    """The CLI (argv: the arguments after the program name; default sys.argv[1:]) -> the exit code."""
    args = parse_args(argv)
    enable_compilation_cache()
    from tdmpc_glass.runlayout import VIDEOS
    from tdmpc_glass.video.gl import GLRenderer, RenderError
    from tdmpc_glass.video.recorder import Source, write_episode, write_grid
    from tdmpc_glass.video.rollout import Roller, RunError, episode_seed, load_run, stack_states

    runs = ([args.run] if args.run else []) + [r for r in args.grid if r != args.run]
    grid = bool(args.grid)
    height = args.height or (240 if grid else 360)
    width = args.width or (320 if grid else 480)
    try:
        loaded = [load_run(Path(r), args.checkpoint) for r in runs]
    except RunError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for run in loaded:
        print(f"{run.label}: {run.note}", file=sys.stderr)
        if not run.cfg.glass.enabled:
            print(f"note: {run.label}: Glass is off in this run, so K cannot be labelled: the frames say "
                  "'K=- (Glass off)', the CSV's K column is empty and the timeline is skipped", file=sys.stderr)
    if args.out:
        out = args.out
    elif grid:
        out = Path(os.path.commonpath([str(r.run_dir.resolve()) for r in loaded])) / VIDEOS
    else:
        out = loaded[0].run_dir / VIDEOS
    try:
        renderer = GLRenderer()
    except RenderError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    with renderer:
        rollers = {}
        for i in range(args.episodes):
            seed = episode_seed(args.seed, i)
            sources = []
            for run in loaded:
                key = id(run.cfg)
                if key not in rollers:
                    rollers[key] = Roller(run.cfg, run.obs_dim, run.act_dim)
                print(f"{run.label}: rolling out episode {i} ({args.policy}, seed {args.seed})", file=sys.stderr)
                ep = rollers[key].run(stack_states([run.state]), seed, args.policy, args.max_steps)[0]
                sources.append(Source(label=run.label, episode=ep, checkpoint=str(run.checkpoint),
                                      checkpoint_env_step=run.env_step, note=run.note))
            try:
                if grid:
                    stem = f"grid_{args.policy}_seed{args.seed}_ep{i}"
                    summary = write_grid(sources, out, stem, renderer, height, width, args.camera, args.overlay)
                    print(f"wrote {out / (stem + '.mp4')} ({summary['frames']} frames at {summary['fps']:.0f} fps)")
                    for s in summary["runs"]:
                        print("  " + describe(Path(s["run"]), s))
                else:
                    src = sources[0]
                    stem = f"step{src.checkpoint_env_step}_{args.policy}_seed{args.seed}_ep{i}"
                    summary = write_episode(src, out, stem, renderer, height, width, args.camera, args.overlay)
                    print(f"wrote {out / (stem + '.mp4')} ({summary['frames']} frames at {summary['fps']:.0f} fps, "
                          f".csv, _summary.json" + (", _timeline.png)" if summary["files"]["timeline"] else ")"))
                    print("  " + describe(Path(stem), summary))
            except RenderError as e:
                print(f"error: {e}", file=sys.stderr)
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
