"""One exception base for the project, with a retry policy on every error."""

from __future__ import annotations


class StreamwiseError(Exception):
    """Base of every error Streamwise raises on purpose.

    ``retriable`` tells the caller whether trying the same thing again later may succeed
    (a broker or Redis that is down) or never will (bad input, a forged blob).
    """

    retriable: bool = False


class SpecError(StreamwiseError):
    """The application spec (features, label, model) is invalid."""


class ValidationFailed(StreamwiseError):
    """Input does not match the application's schema; ``errors`` say where."""

    def __init__(self, errors: list[dict[str, object]]) -> None:
        super().__init__(f"{len(errors)} validation error(s)")
        self.errors = errors


class BlobRefused(StreamwiseError):
    """A model blob failed signature, key or library-version checks."""


class BackendUnavailable(StreamwiseError):
    """Kafka, Redis or the SQL registry cannot be reached right now."""

    retriable = True
