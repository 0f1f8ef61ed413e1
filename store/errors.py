"""Exceptions raised by streamrec; each message names the value at fault and what to do next."""


class StreamrecError(Exception):
    """Base class of every error streamrec raises on purpose."""


class InvalidEventError(StreamrecError, ValueError):
    """A rating event failed validation (bad field, out-of-range rating)."""


class DataFileError(StreamrecError, ValueError):
    """A MovieLens or ratings file is missing, has an unknown layout or contains invalid rows."""


class DatabaseLockedError(StreamrecError):
    """The DuckDB file is held by another process (normally the ingest consumer)."""


class SnapshotError(StreamrecError):
    """A snapshot is missing, incomplete, or fails verification."""


class SnapshotNotFoundError(SnapshotError):
    """No snapshot version is published yet, or the requested version does not exist."""


class TrainingError(StreamrecError):
    """Training produced non-finite values or a solve failed."""


class ExportTimeoutError(StreamrecError):
    """The ingest consumer did not respond to an export request in time."""


class UnknownItemError(StreamrecError, KeyError):
    """An item id is not in the snapshot being served."""

    def __str__(self) -> str:
        # KeyError.__str__ wraps the message in quotes, which reads badly in an error line.
        return str(self.args[0]) if self.args else ""


class InvalidQueryError(StreamrecError, ValueError):
    """A query parameter is invalid: an unknown genre, a rating off the scale, a bad count."""


class ExportFailedError(StreamrecError):
    """The ingest consumer responded to an export request with an error."""


class ConsumerConflictError(StreamrecError):
    """Another ingest consumer, with another database, already reads the events stream."""
