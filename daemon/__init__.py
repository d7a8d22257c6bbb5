"""The rk daemon: listeners, protocol adapters, the FIFO scheduler, runners, backends and models."""
