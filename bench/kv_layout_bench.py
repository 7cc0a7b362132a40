"""What the KV cache layout and flash attention cost a step: one unified cache vs a stream per
sequence (agentic's and llama-server's with -np), and flash attention on (llama.cpp's default
on CPU, agentic's) vs off, on llama-cpp-python's low-level API, no server in the way.

    .venv/bin/python bench/kv_layout_bench.py [--n 8 16] [--history 60 600] [--rounds 3]

For each layout, N sequences first hold a history of H tokens each; then one round is a prefill
of 30 new tokens in every sequence (one batch, as a burst of turns) and 64 decode steps of one
token per sequence. Layouts alternate round by round on one model; figures are medians.
In the unified cache attention spans every used cell of every sequence (other sequences' cells
masked), in split streams only the sequence's own; split streams decode a batch in one pass only
when its sequences have consecutive ids (llama_batch_allocr::split_equal), which is why agentic
keeps its running turns on consecutive sequences. The prefill's growth with the history is what
makes a later turn's first token slower than a first turn's with the same number of new tokens
(llama.cpp's CPU flash-attention kernel takes a prompt of fewer than 64 tokens a row at a time).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import llama_cpp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agentic.config import bundled_model_path  # noqa: E402
from agentic.engine.batch import Batch  # noqa: E402

THREADS = 2
NEW_TOKENS = 30
STEPS = 64
CTX_PER_SEQ = 1024
_SILENT = llama_cpp.llama_log_callback(lambda level, text, user_data: None)  # a reference, or ctypes frees it


def context(model, n: int, unified: bool, flash_attn: bool = True):
    params = llama_cpp.llama_context_default_params()
    params.n_ctx = CTX_PER_SEQ * n
    params.n_batch = params.n_ubatch = 512
    params.n_seq_max = n
    params.n_threads = params.n_threads_batch = THREADS
    params.kv_unified = unified
    params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash_attn else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
    ctx = llama_cpp.llama_init_from_model(model, params)
    assert ctx, "llama.cpp could not create the context"
    return ctx


def fill(ctx, batch: Batch, seqs: range, start: int, count: int) -> None:
    """`count` tokens at positions start.. in every sequence, as many batches as it takes."""
    pending = [(seq, pos) for seq in seqs for pos in range(start, start + count)]
    while pending:
        chunk, pending = pending[:batch.capacity], pending[batch.capacity:]
        batch.clear()
        for seq, pos in chunk:
            batch.add(100 + (pos * 31 + seq * 7) % 20000, pos, seq, pos == start + count - 1)
        assert batch.decode(ctx) == 0


def one_round(ctx, batch: Batch, n: int, history: int) -> tuple[float, float]:
    """(prefill ms, ms per decode step) after which every sequence is back to its history."""
    seqs = range(n)
    started = time.perf_counter()
    fill(ctx, batch, seqs, history, NEW_TOKENS)
    prefill = time.perf_counter() - started
    pos = history + NEW_TOKENS
    started = time.perf_counter()
    for step in range(STEPS):
        batch.clear()
        for seq in seqs:
            batch.add(300 + seq, pos + step, seq, True)
        assert batch.decode(ctx) == 0
    decode = (time.perf_counter() - started) / STEPS
    memory = llama_cpp.llama_get_memory(ctx)
    for seq in seqs:
        llama_cpp.llama_memory_seq_rm(memory, seq, history, -1)
    return prefill * 1000, decode * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--history", type=int, nargs="+", default=[60, 600])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    llama_cpp.llama_log_set(_SILENT, None)
    llama_cpp.llama_backend_init()
    model = llama_cpp.llama_model_load_from_file(str(bundled_model_path()).encode(), llama_cpp.llama_model_default_params())
    rows = []
    for n in args.n:
        for history in args.history:
            contexts = {"unified": context(model, n, True), "split": context(model, n, False), "split-noFA": context(model, n, False, flash_attn=False)}
            batch = Batch(512, n)
            for ctx in contexts.values():
                fill(ctx, batch, range(n), 0, history)
            results: dict[str, list[tuple[float, float]]] = {layout: [] for layout in contexts}
            for _ in range(args.rounds):
                for layout, ctx in contexts.items():
                    results[layout].append(one_round(ctx, batch, n, history))
            medians = {layout: (statistics.median(r[0] for r in rs), statistics.median(r[1] for r in rs)) for layout, rs in results.items()}
            for layout, (prefill, step) in medians.items():
                rows.append((n, history, layout, prefill, step, step / medians["split"][1]))
            batch.free()
            for ctx in contexts.values():
                llama_cpp.llama_free(ctx)
            print(f"N={n} history={history}: " + "; ".join(f"{layout} prefill {p:.0f} ms, step {s:.1f} ms" for layout, (p, s) in medians.items()), flush=True)
    print(f"\n{'N':>3} {'history':>7} {'layout':<10} {f'prefill {NEW_TOKENS}/seq ms':>18} {'decode step ms':>14} {'step vs split':>13}")
    for n, history, layout, prefill, step, ratio in rows:
        print(f"{n:>3} {history:>7} {layout:<10} {prefill:>18.0f} {step:>14.1f} {ratio:>12.2f}x")


if __name__ == "__main__":
    main()
