"""What a turn's prompt costs to tokenize on the inference thread: the whole conversation
rendered by the chat template, with every part tokenized afresh vs with the token cache holding
the conversation's earlier parts (a turn tokenizes only its new message).

    .venv/bin/python bench/tokenize_bench.py [--turns 10 30] [--repeats 20]

Each conversation has `turns` exchanges of a 22-word question and a 34-word reply, every text
different; the figure is the median time of tokenize_chat for its next turn.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agentic.config import EngineSettings, bundled_model_path  # noqa: E402
from agentic.engine.model import LlamaModel  # noqa: E402
from agentic.engine.token_cache import TokenCache  # noqa: E402

REPLY = "The lighthouse keeper climbed the stairs at dusk, counting each step as the sea below grew dark and loud. "


def conversation(turns: int, tag: int) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": "You are a helpful assistant."}]
    for turn in range(turns):
        messages += [{"role": "user", "content": f"[{tag}.{turn}] Tell me one more fact about lighthouses, and keep it to a short paragraph."},
                     {"role": "assistant", "content": f"[{tag}.{turn}] {REPLY * 2}"}]
    return messages + [{"role": "user", "content": f"[{tag}] And one more?"}]


def timed(model: LlamaModel, messages: list[dict[str, str]]) -> float:
    started = time.perf_counter()
    model.tokenize_chat(messages)
    return (time.perf_counter() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, nargs="+", default=[10, 30])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    model = LlamaModel(EngineSettings(model_path=bundled_model_path(), threads=2, parallel=1, ctx_per_session=512, kv_budget_mb=16))
    try:
        for turns in args.turns:
            fresh, cached, tokens = [], [], 0
            for tag in range(args.repeats):
                messages = conversation(turns, tag)
                model.token_cache = TokenCache()
                fresh.append(timed(model, messages))
                model.token_cache = TokenCache()
                tokens = len(model.tokenize_chat(messages[:-1])[1])  # the earlier turns, as the previous turn left them
                cached.append(timed(model, messages))
            print(f"{turns} turns ({tokens} tokens): every part tokenized {statistics.median(fresh):.2f} ms, "
                  f"earlier parts cached {statistics.median(cached):.2f} ms")
    finally:
        model.close()


if __name__ == "__main__":
    main()
