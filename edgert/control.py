"""The control socket's client, kept under its old name: see `edgert.supervisor.control`."""

from .supervisor.control import ControlError, format_status, now_note, request

__all__ = ["ControlError", "request", "format_status", "now_note"]
