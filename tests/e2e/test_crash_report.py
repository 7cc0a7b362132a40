"""A main server that dies on its own is reported by deploy.sh: how, when, its last log lines."""

from __future__ import annotations

import signal
import time

from tests.e2e.deployment import http


def wait_for_status(deployment, text: str) -> str:
    for _ in range(100):
        out = deployment.deploy("status").stdout
        if text in out:
            return out
        time.sleep(0.1)
    raise AssertionError(f"{text!r} never appeared in status:\n{out}")


def test_sigill_shows_in_status_with_the_fix_and_a_faulthandler_stack_in_the_log(deployment):
    deployment.deploy("main")
    deployment.kill(signal.SIGILL)  # what llama.cpp's AMX kernels did on the first chat

    out = wait_for_status(deployment, "exited (signal SIGILL")
    assert "main exited (signal SIGILL at " in out
    assert "./deploy.sh main" in out and "AGENTIC_ALLOW_AMX" in out
    log = (deployment.data_dir / "logs" / "main.log").read_text()
    assert "Fatal Python error: Illegal instruction" in log
    assert "Fatal Python error: Illegal instruction" in out  # the last log lines are shown

    deployment.deploy("main")  # a new start clears the report
    assert "exited" not in deployment.deploy("status").stdout
    status, _ = http("GET", f"{deployment.url}/health")
    assert status == 200


def test_a_deliberate_stop_is_not_reported_as_a_crash_but_an_exit_code_is(deployment):
    deployment.deploy("main")
    deployment.deploy("stop", "main")
    out = deployment.deploy("status").stdout
    assert "stopped" in out and "exited" not in out

    deployment.deploy("main")
    deployment.kill(signal.SIGKILL)
    assert "exited (signal SIGKILL" in wait_for_status(deployment, "exited")
