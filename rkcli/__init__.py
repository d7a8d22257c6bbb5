"""rk: a terminal-first local LLM service for Rockchip NPU boards, that also runs on any CPU."""

__version__ = "0.1.0"
