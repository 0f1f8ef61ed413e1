"""Names of every Redis key and queue streamrec uses; docs/ARCHITECTURE.md lists them for clients."""

EVENTS_STREAM = "streamrec:events"
DEAD_LETTER_STREAM = "streamrec:events:dead"
INGEST_GROUP = "streamrec-ingest"
EXPORT_REQUESTS = "streamrec:export:requests"
# Requests the ingest consumer has taken and not finished; put back when a consumer starts.
EXPORT_REQUESTS_SERVING = "streamrec:export:requests:serving"
SNAPSHOT_CURRENT = "streamrec:snapshot:current"
# The version whose lists were all written after it was published; lags CURRENT while that runs.
SNAPSHOT_LISTS_WRITTEN = "streamrec:snapshot:lists-written"

# RQ queue names. Refreshes get their own queue so a long retrain never delays them.
REFRESH_QUEUE = "streamrec-refresh"
RETRAIN_QUEUE = "streamrec-retrain"

# Refreshes waiting for a job, coalesced per user (worker/pending.py describes the layout).
REFRESH_PENDING = "streamrec:refresh:pending"
REFRESH_DUE = "streamrec:refresh:due"
REFRESH_SCHEDULED = "streamrec:refresh:scheduled"


def recs_key(user_id: str) -> str:
    """Sorted set of a user's top-N item ids, scored by ranking score."""
    return f"streamrec:recs:{user_id}"


def user_key(user_id: str) -> str:
    """Hash of a refolded user's state: version, seq, bias, factors, seen."""
    return f"streamrec:user:{user_id}"


def refresh_taken_key(job_id: str) -> str:
    """Hash of the pending refreshes one refresh job took and has not written yet."""
    return f"streamrec:refresh:taken:{job_id}"


def export_reply_key(token: str) -> str:
    """List on which the ingest consumer responds to one export request. It expires after a while."""
    return f"streamrec:export:reply:{token}"
# The ingest consumer that reads the events stream: JSON with host, database and pid, expiring.
INGEST_OWNER = "streamrec:ingest:owner"
