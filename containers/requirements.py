"""Prints one image's Python requirements, taken from setup.cfg so versions live in one place.

    python3 requirements.py main [SETUP_CFG]     all but llama-cpp-python (built in its own, earlier layer)
    python3 requirements.py client [SETUP_CFG]   only what `python -m agentic client N` imports: no engine, no metrics
"""

from __future__ import annotations

import configparser
import re
import sys
from pathlib import Path

BUILT_APART = {"llama-cpp-python"}
CLIENT = {"aiohttp", "aiohttp-session", "aiohttp-jinja2", "jinja2"}


def requirement_name(line: str) -> str:
    return re.split(r"[\[<>=!~; ]", line, maxsplit=1)[0].lower().replace("_", "-")


def requirements(setup_cfg: Path, image: str) -> list[str]:
    config = configparser.ConfigParser()
    config.read(setup_cfg)
    lines = [line.strip() for line in config["options"]["install_requires"].splitlines() if line.strip()]
    if image == "main":
        return [line for line in lines if requirement_name(line) not in BUILT_APART]
    if image == "client":
        return [line for line in lines if requirement_name(line) in CLIENT]
    raise ValueError(f"unknown image {image!r}: main or client")


if __name__ == "__main__":
    default = Path(__file__).resolve().parents[1] / "setup.cfg"
    print("\n".join(requirements(Path(sys.argv[2]) if len(sys.argv) > 2 else default, sys.argv[1])))
