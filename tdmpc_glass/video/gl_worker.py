"""The child process that renders MuJoCo frames headless (started by tdmpc_glass.video.gl.GLRenderer).

MuJoCo/dm_control fix their OpenGL backend when first imported, from MUJOCO_GL; a process that already
imported them (the trainer, the rollout) cannot switch. So rendering runs here, in a fresh interpreter whose
MUJOCO_GL the parent set before it started: `python -m tdmpc_glass.video.gl_worker`.

Protocol: pickled messages on stdin / the original stdout (fd 1 is re-pointed at stderr so library prints
cannot corrupt it). First message from the worker: ("ok", {backend, gl_renderer, software}) once a probe frame rendered, or
("error", "one line"). Then per request ("render", task, states (n, nq + nv), height, width, camera) ->
("ok", frames uint8 (n, height, width, 3)) or ("error", "one line"); ("close",) ends the process.
"""
from __future__ import annotations

import os
import pickle
import sys

PROBE_XML = """<mujoco><worldbody><light pos="0 0 2"/><geom type="sphere" size=".1"/>
<camera name="c" pos="0 -1 0" xyaxes="1 0 0 0 0 1"/></worldbody></mujoco>"""


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}"[:300]


def _gl_renderer_name(physics) -> str:
    """The OpenGL renderer string (e.g. 'llvmpipe (LLVM 15.0.6, 256 bits)' for Mesa's CPU rasteriser), or ''."""
    try:
        from OpenGL import GL

        with physics.contexts.gl.make_current() as ctx:
            name = ctx.call(lambda: GL.glGetString(GL.GL_RENDERER))
        return name.decode(errors="replace") if isinstance(name, bytes) else str(name or "")
    except Exception:  # noqa: BLE001 - only a speed hint
        return ""


def main() -> None:
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything printed from here on goes to stderr
    sys.stdout = sys.stderr
    stdin = sys.stdin.buffer

    def send(message):
        pickle.dump(message, out, protocol=pickle.HIGHEST_PROTOCOL)
        out.flush()

    backend = os.environ.get("MUJOCO_GL", "")
    try:
        from dm_control import mujoco as dm_mujoco

        probe = dm_mujoco.Physics.from_xml_string(PROBE_XML)
        probe.render(16, 16, camera_id=0)
        gl_renderer = _gl_renderer_name(probe)
        probe.free()
    except Exception as e:  # noqa: BLE001 - any failure means this backend does not work here
        send(("error", _one_line(e)))
        out.close()
        os._exit(0)
    # Software rasterisers (Mesa llvmpipe / softpipe, OSMesa) spend most of a frame on shadows and reflections
    # (3-5x slower on a CPU); drop those two there. A GPU renders everything.
    software = backend == "osmesa" or any(s in gl_renderer.lower() for s in ("llvmpipe", "softpipe", "swrast",
                                                                            "software"))
    flags = {"shadow": False, "reflection": False} if software else {}
    send(("ok", {"backend": backend, "gl_renderer": gl_renderer, "software": software}))

    from ..envs.dmc import load

    envs = {}
    while True:
        try:
            message = pickle.load(stdin)
        except EOFError:
            break
        if message[0] == "close":
            break
        try:
            _, task, states, height, width, camera = message
            key = (task, height, width)
            if key not in envs:
                env = load(task)
                vis = env.physics.model.vis.global_  # the offscreen buffer must hold the frame (default 640x480)
                vis.offwidth, vis.offheight = max(vis.offwidth, width), max(vis.offheight, height)
                envs[key] = env
            physics = envs[key].physics
            nq, nv = physics.model.nq, physics.model.nv
            if states.shape[1] != nq + nv:
                raise ValueError(f"{task}: physics states have {states.shape[1]} numbers, the model needs {nq + nv}")
            import numpy as np

            frames = np.empty((len(states), height, width, 3), np.uint8)
            for i, s in enumerate(states):
                physics.data.qpos[:] = s[:nq]
                physics.data.qvel[:] = s[nq:]
                physics.forward()
                frames[i] = physics.render(height, width, camera_id=camera, render_flag_overrides=dict(flags))
            send(("ok", frames))
        except Exception as e:  # noqa: BLE001
            send(("error", _one_line(e)))
    for env in envs.values():
        try:
            env.physics.free()
        except Exception:  # noqa: BLE001
            pass
    out.close()
    # dm_control's atexit hooks try to free GL contexts through an executor that is already shut down and
    # print tracebacks; everything is freed above, so leave without them.
    os._exit(0)


if __name__ == "__main__":
    main()
