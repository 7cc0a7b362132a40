"""agentic: a self-hosted LLM chat server with isolated per-user sessions."""

__version__ = "0.1.0"
