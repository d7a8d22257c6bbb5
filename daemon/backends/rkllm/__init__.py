"""The `rkllm` backend: the RKLLM NPU runtime (librkllmrt.so) through ctypes."""
