"""Ollama's API: `/api/*` jobs and model-store routes, NDJSON streams, `{"error": "..."}` errors."""
