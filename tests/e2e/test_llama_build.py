"""deploy.sh's llama.cpp build: safe flags on x86-64, a cache keyed by them, a venv repaired in place."""

from __future__ import annotations

import os
import platform
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.deployment import DEPLOY

NO_AMX = ["-mno-amx-tile", "-mno-amx-int8", "-mno-amx-bf16"]
x86_only = pytest.mark.skipif(platform.machine() != "x86_64", reason="AMX flags apply to x86-64 only")


def deploy(*args: str, script: str = DEPLOY, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("CMAKE_ARGS", "AGENTIC_ALLOW_AMX")}
    result = subprocess.run([script, *args], env={**clean, **env}, capture_output=True, text=True, timeout=600, check=True)
    return result.stdout.strip()


def c_flags(cmake_args: str) -> list[str]:
    defines = dict(arg[2:].split("=", 1) for arg in shlex.split(cmake_args) if arg.startswith("-D"))
    return defines["CMAKE_C_FLAGS"].split()


@x86_only
def test_default_flags_exclude_amx_for_c_and_cxx():
    args = deploy("llama-cmake-args")
    assert c_flags(args) == NO_AMX
    assert "-DCMAKE_CXX_FLAGS=" + " ".join(NO_AMX) in shlex.split(args)


@x86_only
def test_operator_flags_come_last_and_amx_is_an_opt_in():
    assert deploy("llama-cmake-args", CMAKE_ARGS="-DGGML_CUDA=on").endswith(" -DGGML_CUDA=on")
    assert deploy("llama-cmake-args", AGENTIC_ALLOW_AMX="1") == ""


def test_the_build_key_changes_with_the_flags():
    keys = {deploy("llama-build-key"), deploy("llama-build-key", CMAKE_ARGS="-DGGML_CUDA=on"),
            deploy("llama-build-key", AGENTIC_ALLOW_AMX="1"), deploy("llama-build-key", LLAMA_CPP_VERSION="0.3.35")}
    assert len(keys) == 4
    assert deploy("llama-build-key") == deploy("llama-build-key")


def test_the_build_key_follows_our_patches_to_llama_cpp(tmp_path):
    """A changed patch is a different build: deploy.sh's key hashes the patches' content."""
    copy = tmp_path / "checkout"
    patches = copy / "patches" / "llama.cpp"
    shutil.copytree(Path(DEPLOY).parent / "patches" / "llama.cpp", patches)
    shutil.copy(DEPLOY, copy / "deploy.sh")
    assert deploy("llama-build-key", script=str(copy / "deploy.sh")) == deploy("llama-build-key")
    patch = next(patches.glob("*.patch"))
    patch.write_text(patch.read_text() + "\n")
    assert deploy("llama-build-key", script=str(copy / "deploy.sh")) != deploy("llama-build-key")


@x86_only
@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is missing")
def test_the_flags_switch_amx_off_even_where_march_turns_it_on(tmp_path):
    """llama.cpp compiles with -march=native; explicit -mno-amx-* must win over any -march,
    in either order, or the build would still carry the kernels that crash."""
    source = tmp_path / "amx.c"
    source.write_text("#ifdef __AMX_TILE__\n#error AMX tile enabled\n#endif\nint main(void) { return 0; }\n")
    flags = c_flags(deploy("llama-cmake-args"))
    march = ["-march=sapphirerapids"]
    compile_ = lambda extra: subprocess.run(["gcc", "-c", "-o", os.devnull, *extra, str(source)], capture_output=True, text=True)
    assert compile_(march).returncode != 0, "this gcc does not turn AMX on for sapphirerapids: the check proves nothing"
    assert compile_(flags + march).returncode == 0
    assert compile_(march + flags).returncode == 0


@x86_only
@pytest.mark.skipif(shutil.which("objdump") is None, reason="objdump is missing")
def test_installed_llama_cpp_has_no_amx_tile_instructions():
    import llama_cpp

    libraries = list((Path(llama_cpp.__file__).parent / "lib").glob("libggml-cpu*.so"))
    assert libraries, "libggml-cpu not found beside llama_cpp"
    for library in libraries:
        code = subprocess.run(["objdump", "-d", str(library)], capture_output=True, text=True, check=True).stdout
        assert "tileloadd" not in code and "tilezero" not in code, library


@pytest.mark.slow
def test_a_venv_from_an_older_deploy_is_repaired_without_touching_data(tmp_path):
    """A venv whose llama.cpp build is not the keyed one (an older deploy.sh's unsafe build)
    gets the keyed wheel from the cache on the next run; nothing is compiled again."""
    venv = tmp_path / "venv"
    data = tmp_path / "data"
    data.mkdir()
    (data / "sessions.db").write_bytes(b"kept")
    env = {"VENV": str(venv), "DATA_DIR": str(data)}
    deploy("setup", **env)
    stamp = venv / ".agentic-llama-build"
    assert stamp.read_text().strip() == deploy("llama-build-key")
    stamp.unlink()  # what an older deploy.sh left: its own build, no key

    out = deploy("setup", **env)
    assert "Installing llama_cpp_python" in out and "Building" not in out
    assert stamp.read_text().strip() == deploy("llama-build-key")
    assert (data / "sessions.db").read_bytes() == b"kept"
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-c", "import llama_cpp, agentic.cli"], check=True, timeout=120)
