"""Widgets of the `rk top` dashboard, one per module."""
