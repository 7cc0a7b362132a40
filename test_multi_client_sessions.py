"""The usage guide's isolation check, run by hand against a live deployment:
`python test_multi_client_sessions.py [--clients 2 3]` (see tests/test_multi_client_sessions.py).

It needs the project's packages: started with a Python that lacks them (the system python,
as the guide writes it), it runs itself again under the project's .venv."""

import os
import sys
from pathlib import Path

VENV = Path(__file__).resolve().parent / ".venv"

try:
    import aiohttp  # noqa: F401
except ModuleNotFoundError:
    venv_python = VENV / "bin" / "python"
    if Path(sys.prefix).resolve() == VENV.resolve() or not venv_python.exists():
        sys.exit("aiohttp is not installed here: run ./deploy.sh setup, then python test_multi_client_sessions.py")
    os.execv(venv_python, [str(venv_python), __file__, *sys.argv[1:]])

from tests.test_multi_client_sessions import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
