"""Errors the domain raises; adapters translate them to HTTP and gRPC status codes."""
from __future__ import annotations


class DomainError(Exception):
    """A command was refused by a business rule."""


class IllegalTransition(DomainError):
    """The command is not allowed in the case's current state."""

    def __init__(self, action: str, current_state: str, allowed: list[str]):
        self.action = action
        self.current_state = current_state
        self.allowed = sorted(allowed)
        super().__init__(
            f"'{action}' is not allowed while the case is '{current_state}'; "
            f"allowed now: {', '.join(self.allowed) or 'nothing'}"
        )


class RuleViolation(DomainError):
    """The command is allowed in this state but its content breaks a rule."""


class IncompleteFile(RuleViolation):
    """Closing was refused: the case file (一案一卷) lacks the items listed in `missing`."""

    def __init__(self, missing: list[str]):
        self.missing = list(missing)
        super().__init__(f"the case file is incomplete; missing: {', '.join(self.missing)}")
