"""A list of loaded models in a modal: `u` asks which one to unload."""
from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, OptionList


class ModelPicker(ModalScreen[str | None]):
    BINDINGS = [Binding("escape", "dismiss_none", "close")]

    def __init__(self, title: str, models: list[str]) -> None:
        super().__init__()
        self.title_text = title
        self.models = models

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text)
            yield OptionList(*self.models)

    @on(OptionList.OptionSelected)
    def _selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self.models[event.option_index])

    def action_dismiss_none(self) -> None:
        self.dismiss(None)
