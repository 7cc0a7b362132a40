"""Sessions: their data model, the SQLite store, and the expiry lifecycle."""
