"""Per-session uploads: safe names, type checks, streamed storage, text extraction, passage search."""
