"""The llama.cpp model and context, through llama-cpp-python's low-level API.

Only the inference thread calls into a LlamaModel after it is loaded.
"""

from __future__ import annotations

import ctypes
import logging
from pathlib import Path

import llama_cpp

from agentic.config import EngineSettings
from agentic.engine.chat_template import ChatTemplate
from agentic.engine.token_cache import TokenCache
from agentic.engine.types import Sampling

log = logging.getLogger("agentic.engine")

_llama_backend_ready = False
_GGML_LOG_WARN = 3
_GGML_LOG_CONT = 5


@llama_cpp.llama_log_callback
def _forward_llama_log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    """llama.cpp prints hundreds of lines per load; keep only warnings and errors, in our log."""
    if _GGML_LOG_WARN <= level < _GGML_LOG_CONT:
        log.log(logging.WARNING if level == _GGML_LOG_WARN else logging.ERROR, "llama.cpp: %s", text.decode(errors="replace").rstrip())


def _backend_init() -> None:
    global _llama_backend_ready  # process-wide llama.cpp state, initialised exactly once
    if not _llama_backend_ready:
        llama_cpp.llama_log_set(_forward_llama_log, ctypes.c_void_p(0))
        llama_cpp.llama_backend_init()
        _llama_backend_ready = True


# llama.cpp's limit on sequence ids (LLAMA_MAX_SEQ).
MAX_SEQUENCES = 256
# llama.cpp rounds each sequence's stream up to a multiple of this many cells.
STREAM_CELLS_MULTIPLE = 256


def stream_cells(ctx_per_session: int) -> int:
    return -(-ctx_per_session // STREAM_CELLS_MULTIPLE) * STREAM_CELLS_MULTIPLE


def sequences_for(budget_cells: int, ctx_per_session: int, parallel: int, n_batch: int) -> int:
    """How many sequences (each a stream of cells for one session's context) the cache has: as
    many as the budget holds, and never fewer than the turns decoded together plus the prefix
    holder (llama.cpp reserves an output row per sequence within the batch: never more than its size)."""
    return min(MAX_SEQUENCES, n_batch, max(parallel + 1, budget_cells // stream_cells(ctx_per_session)))


def gpu_offload_supported() -> bool:
    return bool(llama_cpp.llama_supports_gpu_offload())


class LlamaModel:
    def __init__(self, settings: EngineSettings) -> None:
        if settings.model_path is None or not Path(settings.model_path).is_file():
            raise FileNotFoundError(f"model file not found: {settings.model_path}")
        _backend_init()
        self.path = Path(settings.model_path)
        self.gpu_offload = gpu_offload_supported()
        mparams = llama_cpp.llama_model_default_params()
        mparams.n_gpu_layers = settings.gpu_layers if self.gpu_offload else 0
        self.model = llama_cpp.llama_model_load_from_file(str(self.path).encode(), mparams)
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load {self.path}")
        self.vocab = llama_cpp.llama_model_get_vocab(self.model)
        self.token_cache = TokenCache()
        self.kv_bytes_per_token = self._kv_bytes_per_token()
        budget_cells = settings.kv_budget_mb * 2**20 // self.kv_bytes_per_token
        self.n_seq = sequences_for(budget_cells, settings.ctx_per_session, settings.parallel, settings.batch_size)
        self.n_ctx_seq = settings.ctx_per_session
        self.n_batch = settings.batch_size
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = self.n_seq * stream_cells(settings.ctx_per_session)
        cparams.n_batch = settings.batch_size
        cparams.n_ubatch = settings.batch_size
        cparams.n_seq_max = self.n_seq
        cparams.n_threads = settings.threads
        cparams.n_threads_batch = settings.threads
        # A stream of cells per sequence, not one pool: in a unified cache every token's attention
        # spans every sequence's cells, which made 16-stream decode steps 16 % slower with short
        # histories and 43 % with 600-token ones (bench/kv_layout_bench.py).
        cparams.kv_unified = False
        self.ctx = llama_cpp.llama_init_from_model(self.model, cparams)
        if not self.ctx:
            llama_cpp.llama_model_free(self.model)
            raise RuntimeError("llama.cpp could not create a context")
        self.kv_cells = llama_cpp.llama_n_ctx(self.ctx)
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        self.template = ChatTemplate(self.metadata("tokenizer.chat_template"), self.token_text(llama_cpp.llama_vocab_bos(self.vocab)), self.token_text(llama_cpp.llama_vocab_eos(self.vocab)))
        self.name = self.metadata("general.name") or self.path.stem
        after_reply = self.template.text_after_reply()
        # What a conversation's next prompt holds right after a reply (see Scheduler._close_out).
        self.after_reply_tokens = self.tokenize(after_reply, special=True) if after_reply else None
        self._piece_buf = ctypes.create_string_buffer(256)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        self.end_of_generation_tokens = [t for t in range(self.n_vocab) if llama_cpp.llama_vocab_is_eog(self.vocab, t)]
        log.info("model loaded: %s (gpu_offload=%s, KV cache of %d tokens (%d MiB) in %d sequences of up to %d tokens)",
                 self.name, self.gpu_offload, self.kv_cells, self.kv_cells * self.kv_bytes_per_token >> 20, self.n_seq, self.n_ctx_seq)

    def close(self) -> None:
        if self.ctx:
            llama_cpp.llama_free(self.ctx)
            self.ctx = None
        if self.model:
            llama_cpp.llama_model_free(self.model)
            self.model = None

    def _kv_bytes_per_token(self) -> int:
        """KV cache bytes one token takes (f16 keys and values, every layer)."""
        arch = self.metadata("general.architecture") or "llama"
        n_head = llama_cpp.llama_model_n_head(self.model)
        head_dim = llama_cpp.llama_model_n_embd(self.model) // max(1, n_head)
        k_dim = int(self.metadata(f"{arch}.attention.key_length") or head_dim)
        v_dim = int(self.metadata(f"{arch}.attention.value_length") or head_dim)
        return 2 * llama_cpp.llama_model_n_layer(self.model) * llama_cpp.llama_model_n_head_kv(self.model) * (k_dim + v_dim)

    def metadata(self, key: str) -> str | None:
        size = llama_cpp.llama_model_meta_val_str(self.model, key.encode(), None, 0)
        if size < 0:
            return None
        buf = ctypes.create_string_buffer(size + 1)
        llama_cpp.llama_model_meta_val_str(self.model, key.encode(), buf, size + 1)
        return buf.value.decode("utf-8", errors="replace")

    # -- text <-> tokens -----------------------------------------------------
    def tokenize(self, text: str, special: bool = False) -> list[int]:
        """Tokens of `text`; control-token names in it are parsed only when `special` is set."""
        data = text.encode("utf-8")
        capacity = len(data) + 16
        tokens = (llama_cpp.llama_token * capacity)()
        n = llama_cpp.llama_tokenize(self.vocab, data, len(data), tokens, capacity, False, special)
        if n < 0:
            capacity = -n
            tokens = (llama_cpp.llama_token * capacity)()
            n = llama_cpp.llama_tokenize(self.vocab, data, len(data), tokens, capacity, False, special)
        return list(tokens[:n])

    def tokenize_chat(self, messages: list[dict[str, str]]) -> tuple[str, list[int]]:
        """A conversation's prompt text and tokens: the chat template's markers become control
        tokens, the messages' text (user, system prompt, file passages) never does."""
        parts = self.template.render_parts(messages)
        tokens = [token for text, is_content in parts for token in self.token_cache.tokens(text, not is_content, self.tokenize)]
        return "".join(text for text, _ in parts), tokens

    def piece(self, token: int) -> bytes:
        n = llama_cpp.llama_token_to_piece(self.vocab, token, self._piece_buf, len(self._piece_buf), 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self.vocab, token, buf, -n, 0, False)
            return buf.raw[:n]
        return self._piece_buf.raw[:n]

    def token_text(self, token: int) -> str:
        if token < 0:
            return ""
        text = llama_cpp.llama_vocab_get_text(self.vocab, token)
        return text.decode("utf-8", errors="replace") if text else ""

    def is_eog(self, token: int) -> bool:
        return bool(llama_cpp.llama_vocab_is_eog(self.vocab, token))

    # -- sampling ------------------------------------------------------------
    def new_sampler(self, sampling: Sampling) -> ctypes.c_void_p:
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        if sampling.ignore_eos:
            llama_cpp.llama_sampler_chain_add(chain, self._end_of_generation_ban())
        if sampling.temperature <= 0:
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_greedy())
            return chain
        # top_k first: top_p alone sorts the whole vocabulary (4 ms per token here).
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_top_k(sampling.top_k))
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_top_p(sampling.top_p, 1))
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_temp(sampling.temperature))
        seed = llama_cpp.LLAMA_DEFAULT_SEED if sampling.seed is None else sampling.seed
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_dist(seed))
        return chain

    def _end_of_generation_ban(self) -> ctypes.c_void_p:
        """A logit bias that makes every end-of-generation token impossible (fixed-length replies)."""
        banned = self.end_of_generation_tokens
        biases = (llama_cpp.llama_logit_bias * len(banned))(*[llama_cpp.llama_logit_bias(t, float("-inf")) for t in banned])
        return llama_cpp.llama_sampler_init_logit_bias(self.n_vocab, len(banned), biases)

    def sample(self, sampler: ctypes.c_void_p, batch_index: int) -> int:
        return llama_cpp.llama_sampler_sample(sampler, self.ctx, batch_index)

    @staticmethod
    def free_sampler(sampler: ctypes.c_void_p) -> None:
        llama_cpp.llama_sampler_free(sampler)

    # -- KV cache per sequence -----------------------------------------------
    def seq_truncate(self, seq: int, keep: int) -> None:
        llama_cpp.llama_memory_seq_rm(self.memory, seq, keep, -1)

    def seq_copy_prefix(self, src: int, dst: int, end: int) -> None:
        """Make `dst` hold `src`'s positions 0..end-1. llama.cpp copies a whole stream (at the start
        of the next decode, so `src` must not be overwritten before it), then `dst` drops the rest."""
        llama_cpp.llama_memory_seq_cp(self.memory, src, dst, -1, -1)
        llama_cpp.llama_memory_seq_rm(self.memory, dst, end, -1)

    def seq_move(self, src: int, dst: int) -> None:
        """Move sequence `src` to `dst`, whose stream it replaces. As with a prefix copy, llama.cpp
        copies the stream at the start of the next decode."""
        llama_cpp.llama_memory_seq_cp(self.memory, src, dst, -1, -1)
        llama_cpp.llama_memory_seq_rm(self.memory, src, -1, -1)

    def seq_state(self, seq: int) -> bytes:
        size = llama_cpp.llama_state_seq_get_size(self.ctx, seq)
        buf = (ctypes.c_uint8 * size)()
        written = llama_cpp.llama_state_seq_get_data(self.ctx, buf, size, seq)
        return ctypes.string_at(buf, written)

    def load_seq_state(self, seq: int, data: bytes) -> bool:
        buf = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        return llama_cpp.llama_state_seq_set_data(self.ctx, buf, len(data), seq) > 0
