"""rk's line protocol: one JSON object per line each way, picked by the listener when a connection starts with `{`."""
