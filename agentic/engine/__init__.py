"""The inference engine: one llama.cpp context, one thread, continuous batching across sessions."""
