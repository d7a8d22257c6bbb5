"""HTTP routes (Ollama `/api/*`, OpenAI `/v1/*`) on aiohttp; translation lives in `rk.daemon.adapters`."""
