"""Streaming output parsers: answer text, reasoning and tool calls out of a model's decoded text."""
from rk.daemon.parsers.base import OutputParser, PlainParser, coalesce
from rk.daemon.parsers.registry import parser_for
from rk.daemon.parsers.thinking import ThinkingParser
from rk.daemon.parsers.tools import HermesParser, Llama3Parser, MistralParser, ToolParser

__all__ = ["HermesParser", "Llama3Parser", "MistralParser", "OutputParser", "PlainParser", "ThinkingParser",
           "ToolParser", "coalesce", "parser_for"]
