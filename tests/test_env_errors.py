"""A bad environment gives one line naming the fix: an OpenGL backend whose library is missing (commands that do
not render never touch GL), no ffmpeg for a video, JAX's CUDA plugin without a visible GPU. (A dm_control task
that does not exist: tests/test_cli.py's `task=hoper-hop` and `walker-rnu` cases.)
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from experiments import rundirs
from tdmpc_glass.envs import dmc
from tdmpc_glass.video import gl

REPO = Path(__file__).resolve().parents[1]

# Make the OSMesa library impossible to load in this process, as on a machine without it (libosmesa6): PyOpenGL
# opens it through ctypes.CDLL by file name.
NO_OSMESA = """
import ctypes
_open = ctypes.CDLL.__init__
def _without_osmesa(self, name, *args, **kwargs):
    if name and "OSMesa" in str(name):
        raise OSError(f"{name}: cannot open shared object file: No such file or directory")
    _open(self, name, *args, **kwargs)
ctypes.CDLL.__init__ = _without_osmesa
"""
GL_MODULES = "sorted(m for m in sys.modules if m.split('.')[0] in ('OpenGL', 'glfw') or m.startswith(" \
             "'dm_control._render.pyopengl'))"


def python(script: str, env_extra: dict) -> subprocess.CompletedProcess:
    env = dict(os.environ, **env_extra)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, env=env,
                          timeout=300)


def test_the_fake_missing_library_breaks_a_plain_dm_control_import():
    """The control: with MUJOCO_GL=osmesa and OSMesa unloadable, importing dm_control the plain way dies inside
    PyOpenGL, which is what `describe` did before."""
    result = python(NO_OSMESA + "from dm_control import suite\n", {"MUJOCO_GL": "osmesa"})
    assert result.returncode != 0 and "OSMesa" in result.stderr and "Traceback" in result.stderr


@pytest.mark.parametrize("command", [["describe", "z"], ["validate", "z"]])
def test_commands_that_do_not_render_never_touch_gl(command):
    """describe and validate load dm_control (task names, observation sizes) with MUJOCO_GL naming a backend
    whose library is missing: they work, import no GL module, and leave MUJOCO_GL as the user set it."""
    script = NO_OSMESA + f"""
import os, sys
from experiments.cli import main
code = main({command!r})
print("GL modules:", {GL_MODULES})
print("MUJOCO_GL:", os.environ.get("MUJOCO_GL"))
print("dm_control loaded:", "dm_control.suite" in sys.modules)
sys.exit(code)
"""
    result = python(script, {"MUJOCO_GL": "osmesa", "PYOPENGL_PLATFORM": "osmesa"})
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stdout.splitlines()
    assert "GL modules: []" in lines and "MUJOCO_GL: osmesa" in lines and "dm_control loaded: True" in lines


def test_suite_import_restores_mujoco_gl(monkeypatch):
    """The render worker is started later with this process's environment: it must still see the user's
    MUJOCO_GL (or none) after dm_control was imported here."""
    monkeypatch.setenv("MUJOCO_GL", "egl")
    assert dmc.load_suite().ALL_TASKS and os.environ["MUJOCO_GL"] == "egl"
    monkeypatch.delenv("MUJOCO_GL")
    dmc.load_suite()
    assert "MUJOCO_GL" not in os.environ


# ---- ffmpeg ----------------------------------------------------------------------------------------------------

def no_ffmpeg(*_args):
    raise RuntimeError("No ffmpeg exe could be found.")


def test_missing_ffmpeg_is_one_line_naming_the_fix(monkeypatch):
    import imageio_ffmpeg

    monkeypatch.setattr(imageio_ffmpeg, "get_ffmpeg_exe", no_ffmpeg)
    with pytest.raises(gl.RenderError) as raised:
        gl.GLRenderer()
    message = str(raised.value)
    assert "\n" not in message and "apt-get install ffmpeg" in message and "imageio-ffmpeg" in message
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # not installed at all
    with pytest.raises(gl.RenderError, match=r"imageio-ffmpeg is not installed \(pip install imageio-ffmpeg"):
        gl.find_ffmpeg()
    monkeypatch.delitem(sys.modules, "imageio_ffmpeg")
    monkeypatch.setenv("IMAGEIO_FFMPEG_EXE", "/nonexistent/ffmpeg")
    with pytest.raises(gl.RenderError, match=r"IMAGEIO_FFMPEG_EXE=/nonexistent/ffmpeg is not an executable"):
        gl.find_ffmpeg()


def test_video_command_says_so_before_rolling_out(monkeypatch, capsys, tmp_path):
    """videos/render.py: exit 1 with one `error:` line about ffmpeg, and no episode rolled out."""
    import imageio_ffmpeg

    spec = importlib.util.spec_from_file_location("render_script", REPO / "videos" / "render.py")
    render = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(render)
    from tdmpc_glass.video import rollout

    fake_run = SimpleNamespace(label="hop seed1", note="checkpoint step 0", run_dir=tmp_path,
                               cfg=SimpleNamespace(glass=SimpleNamespace(enabled=True)))
    monkeypatch.setattr(rollout, "load_run", lambda path, checkpoint: fake_run)
    monkeypatch.setattr(rollout, "Roller", lambda *a, **k: pytest.fail("rolled out without ffmpeg"))
    monkeypatch.setattr(render, "enable_compilation_cache", lambda: None)
    monkeypatch.setattr(imageio_ffmpeg, "get_ffmpeg_exe", no_ffmpeg)
    assert render.main(["--run", str(tmp_path)]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no ffmpeg found" in errors[0] and "apt-get install ffmpeg" in errors[0]


# ---- no GPU where .[gpu] was asked for -------------------------------------------------------------------------

@pytest.fixture
def no_gpu(monkeypatch):
    """JAX's CUDA plugin installed, no GPU visible (faked); JAX_PLATFORMS unset."""
    monkeypatch.setattr(rundirs, "cuda_plugin", lambda: "jax-cuda12-pjrt")
    monkeypatch.setattr(rundirs, "visible_gpus", lambda: 0)
    monkeypatch.delenv("JAX_PLATFORMS", raising=False)
    return monkeypatch


def test_no_gpu_falls_back_to_the_cpu_with_one_line(no_gpu, capsys):
    rundirs.choose_platform()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("note: no GPU is visible here")
    assert "jax-cuda12-pjrt" in err and "JAX_PLATFORMS=cpu" in err
    assert os.environ["JAX_PLATFORMS"] == "cpu"


def test_asking_for_cuda_without_a_gpu_is_one_line_error(no_gpu):
    no_gpu.setenv("JAX_PLATFORMS", "cuda")
    with pytest.raises(rundirs.LaunchError) as raised:
        rundirs.choose_platform()
    assert "\n" not in str(raised.value) and "set JAX_PLATFORMS=cpu" in str(raised.value)


def test_launcher_run_refuses_cuda_without_a_gpu(no_gpu, tmp_path, capsys):
    """`tdmpc-glass run` asked for cuda where none is: exit 2, one line, nothing trained."""
    import tdmpc_glass.train
    from experiments.cli import main

    no_gpu.setenv("JAX_PLATFORMS", "cuda")
    no_gpu.setattr(tdmpc_glass.train, "train", lambda *a, **k: pytest.fail("trained without the GPU it asked for"))
    code = main(["run", "demo", "--seeds", "1", "--runs-root", str(tmp_path / "runs"), "--no-progress"])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "no GPU is visible" in errors[0]


def test_nothing_said_where_a_gpu_is_visible_or_no_plugin(monkeypatch, capsys):
    monkeypatch.delenv("JAX_PLATFORMS", raising=False)
    monkeypatch.setattr(rundirs, "cuda_plugin", lambda: "jax-cuda12-pjrt")
    monkeypatch.setattr(rundirs, "visible_gpus", lambda: 1)
    rundirs.choose_platform()
    monkeypatch.setattr(rundirs, "cuda_plugin", lambda: None)
    monkeypatch.setattr(rundirs, "visible_gpus", lambda: pytest.fail("asked the driver without the plugin"))
    rundirs.choose_platform()
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")  # the user's choice: not even looked at
    monkeypatch.setattr(rundirs, "cuda_plugin", lambda: pytest.fail("looked for the plugin with JAX_PLATFORMS=cpu"))
    rundirs.choose_platform()
    assert capsys.readouterr().err == "" and os.environ["JAX_PLATFORMS"] == "cpu"
