"""Output parsers: turn a model's raw text stream into text, thinking and tool calls, per model family."""
