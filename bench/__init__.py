"""The rk benchmark suite (issue 8): every figure is a ratio against a baseline measured in the same run."""
