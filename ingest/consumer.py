"""The ingest consumer: stream batches into DuckDB, then enqueue refreshes of the touched users.

Delivery guarantees, given that a crash can happen between any two steps:

- Invalid entries are copied to the dead-letter stream and acknowledged in one MULTI, so each is
  dead-lettered once.
- Valid entries are committed together with the stream id of the last one, and acknowledged
  after the commit. On start the consumer re-reads its own pending entries first. The database
  already contains those at or below the committed stream id, so they are only acknowledged
  and their users refreshed. Replaying would be harmless anyway, because the upsert keeps the
  newest rating.
- Only re-read pending entries are compared with the committed stream id. Entries delivered for
  the first time are always applied, so a stream recreated with lower ids (after a Redis restart
  without persistence, or after one entry was added with an id in the future) loses nothing.
  The committed stream id is cleared before the consumer group is created again, so pending
  entries of such a stream are not taken for committed ones either.
- Refresh jobs are enqueued before the acknowledgement, so a crash between the two repeats the
  refresh rather than losing it.

Inside run(), the refresh enqueue and the acknowledgement of a batch go to a second thread, so
Redis runs the pending-refresh script while this thread reads and writes the next batch. At
most one batch is in flight: the next one waits for it before handing over its own, and so do
a request taken from the request list and a read of pending entries. A Redis error in that
thread reaches the loop at such a wait, or at the next process_once() once the thread has
finished, and the entries it left unacknowledged are read again as pending entries.

Also inside run(), a batch of new entries is followed at once by the next read, sent ahead on
its own connection (ingest/group_reader.py), so Redis builds that reply while this batch is
processed. A stop request ends the loop only after the entries of such a read are processed.
"""

from __future__ import annotations

import bisect
import gc
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import redis

from ingest.entries import EntryFields, EventColumns, validate_entries
from ingest.events import stream_id_key
from ingest.group_reader import Entry, GroupReader
from ingest.packed import send_packed
from ingest.ownership import StreamOwnership
from ingest.refresh_rows import RefreshRows
from ingest.requests import EnqueueRefresh, restart_requests, serve_requests
from ingest.trim import TRIM_INTERVAL_SECONDS, stream_groups, trim_events
from store.database import AppliedBatch, Database
from store.keys import DEAD_LETTER_STREAM, EVENTS_STREAM, INGEST_GROUP
from store.user_rows import UserRows
from store.settings import Settings

log = logging.getLogger(__name__)

# Backoff after a Redis connection error: first delay, growth factor and ceiling, in seconds.
RETRY_FIRST_DELAY = 0.1
RETRY_FACTOR = 2.0
RETRY_MAX_DELAY = 5.0

# Entries a batch needs before the next read is sent ahead of processing it. Redis builds the
# reply to a read of fewer in about a millisecond.
READ_AHEAD_MIN_ENTRIES = 1000

# Seconds between two INFO lines summing up the batches committed.
SUMMARY_INTERVAL = 30.0

# Dead-lettered events logged one by one per batch. The rest of the batch gets one line with
# their count, so a client that sends thousands of invalid events does not flood the log.
DEAD_LETTER_LOG_LIMIT = 10

# The error Redis sends, in place of NOGROUP, to an XREADGROUP blocked on a stream that is then
# deleted (seen with Redis 7.0.15).
STREAM_DELETED_ERROR = "UNBLOCKED the stream key no longer exists"


class IngestConsumer:
    """Reads the events stream as one consumer of the ingest group and owns the database."""

    def __init__(
        self,
        settings: Settings,
        connection: redis.Redis,
        database: Database,
        enqueue_refresh: EnqueueRefresh,
        *,
        consumer_name: str = "ingest-1",
        stream: str = EVENTS_STREAM,
        group: str = INGEST_GROUP,
    ) -> None:
        self.settings = settings
        self.connection = connection
        self.database = database
        self.enqueue_refresh = enqueue_refresh
        # Only the pending refreshes take entries relative to a snapshot (RefreshEnqueuer).
        self._refresh_rows = RefreshRows(
            database, settings.snapshots_dir, deltas=getattr(enqueue_refresh, "accepts_deltas", False)
        )
        self.consumer_name = consumer_name
        self.stream = stream
        self.group = group
        self._reader = GroupReader(connection, stream, group, consumer_name)
        # Set while run() runs: after a batch of new entries, the next read is sent before the
        # batch is processed (see ingest/group_reader.py).
        self._read_ahead = False

        self._ownership = StreamOwnership(connection, database.path)
        self._group_ready = False
        self._requests_restarted = False
        self._read_pending = True  # this consumer's unacknowledged entries come first
        self._totals = {"events": 0, "written": 0, "dead": 0, "batches": 0}
        self._last_summary = time.monotonic()
        self._last_trim: float | None = None
        # Set while run() runs: the thread that enqueues refreshes and acknowledges batches.
        self._publisher: ThreadPoolExecutor | None = None
        self._in_flight: Future | None = None

    # -- loop ----------------------------------------------------------------------------------

    def run(self, stop_event: threading.Event | None = None) -> None:
        """Process batches until `stop_event` is set, retrying Redis connection errors with backoff."""
        stop_event = stop_event or threading.Event()
        log.info(
            "ingest consumer started consumer=%s group=%s stream=%s",
            self.consumer_name,
            self.group,
            self.stream,
        )
        self._publisher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-publish")
        self._read_ahead = True
        try:
            self._loop(stop_event)
        finally:
            self._read_ahead = False
            self._reader.drop_ahead()
            try:
                self._wait_in_flight()
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                log.warning("last batch left unacknowledged, read again at the next start error=%s", exc)
            self._publisher.shutdown()
            self._publisher = None
        self._log_summary(force=True)
        try:
            self._ownership.release()
        except redis.RedisError:
            log.warning("stream claim not released; it expires by itself", exc_info=True)
        log.info("ingest consumer stopped consumer=%s", self.consumer_name)

    def _loop(self, stop_event: threading.Event) -> None:
        delay = 0.0
        # A read sent ahead before the stop request has delivered its entries: they are
        # processed before the loop ends, so a stopped consumer leaves nothing pending.
        while not stop_event.is_set() or self._reader.ahead:
            if stop_event.is_set():
                self._read_ahead = False
            try:
                self.process_once()
                delay = 0.0
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                delay = RETRY_FIRST_DELAY if delay == 0.0 else min(delay * RETRY_FACTOR, RETRY_MAX_DELAY)
                log.warning(
                    "redis unavailable, retrying error=%s delay_seconds=%.1f consumer=%s",
                    exc,
                    delay,
                    self.consumer_name,
                )
                # A batch read before the error may be unacknowledged: read pending entries again.
                self._read_pending = True
                self._reader.drop_ahead()
                # A request taken before the error may be stuck in the serving list, when Redis
                # was down to put it back too.
                self._requests_restarted = False
                try:
                    self._wait_in_flight()
                except (redis.ConnectionError, redis.TimeoutError):
                    pass  # the same outage, logged above
                stop_event.wait(delay)

    def process_once(self) -> int:
        """Serve pending requests, then read and process one batch; return the entries handled.

        Raises ConsumerConflictError when a consumer with another database reads the stream.
        """
        self._ownership.renew()
        self._ensure_group()
        if not self._requests_restarted:
            # Only this consumer serves requests, and it serves none right now, so whatever the
            # serving list contains was left by a stopped consumer or by a Redis outage.
            restart_requests(self.connection)
            self._requests_restarted = True
        # A finished batch is collected here too, so its Redis error reaches the loop even while
        # no new batch arrives. Its entries would otherwise stay unacknowledged until one does.
        if self._in_flight is not None and self._in_flight.done():
            self._wait_in_flight()
        # Requests read the database and enqueue refreshes as batches do, so a taken request
        # waits for the batch in flight. A look at the list before taking one missed requests
        # pushed in between, and the batch's entries could then replace a refold's of equal seq.
        serve_requests(
            self.connection, self.database, self.settings.exports_dir, self.enqueue_refresh,
            rows=self._refresh_rows, before_serving=self._wait_in_flight,
        )

        # A batch allocates a few objects per entry and frees them all at its end, none of them
        # in reference cycles. Collecting cycles meanwhile only rescans them, which cost about a
        # sixth of the consumer's time with batches of 50,000.
        collecting = gc.isenabled()
        gc.disable()
        try:
            entries, pending = self._read_batch()
            if entries:
                self._process_batch(entries, pending=pending)
        finally:
            if collecting:
                gc.enable()
        self._log_summary()
        self._trim_events()
        return len(entries)

    # -- reading -------------------------------------------------------------------------------

    def _ensure_group(self) -> None:
        if self._group_ready:
            return
        if not self._group_exists():
            # The new group delivers the stream again from id 0, and entries a killed consumer
            # read from it come back as pending entries. Their ids can lie below the committed
            # id of the stream before it was deleted, so that id must not mark them as committed.
            self.database.forget_stream_position(self.stream)
        try:
            self.connection.xgroup_create(self.stream, self.group, id="0", mkstream=True)
            log.info("consumer group created group=%s stream=%s", self.group, self.stream)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    def _claim_pending(self) -> None:
        """Take over the entries other consumers of the group left pending.

        Only one consumer runs per database, because DuckDB lets one process open the file. So
        another name with pending entries is a consumer that stopped, for example one killed
        before it committed a batch and then started again under another --consumer name. Its
        entries must be applied before any later entry. Otherwise the committed id of the later
        entries would mark them as committed, and they would be acknowledged without being stored.
        """
        cursor = "0-0"
        while True:
            # redis-py 8.2 returns only the ids for JUSTID, without the cursor, so the entries come too.
            reply = self.connection.xautoclaim(
                self.stream, self.group, self.consumer_name, 0, start_id=cursor, count=1000
            )
            cursor, claimed = _text(reply[0]), reply[1]
            if claimed:
                log.info("pending entries taken over entries=%d consumer=%s", len(claimed), self.consumer_name)
            if cursor == "0-0":
                return

    def _group_exists(self) -> bool:
        groups = stream_groups(self.connection, self.stream)
        return any(_text(info["name"]) == self.group for info in groups)

    def _read_batch(self) -> tuple[list[Entry], bool]:
        """Read this consumer's pending entries while any remain, then new entries.

        Returns the entries and whether they are pending ones, delivered before.
        """
        count = self.settings.ingest_batch_size
        try:
            if self._read_pending:
                # Entries of the batch in flight stay pending until it acknowledges them, and
                # would be read and refreshed a second time.
                self._wait_in_flight()
                self._claim_pending()
                entries = self._reader.read("0", count, block=None)
                if entries:
                    return entries, True
                self._read_pending = False
            # Redis reads BLOCK 0 as "wait forever", so a setting of 0 means no wait at all.
            block = self.settings.ingest_block_ms or None
            entries = self._reader.read(">", count, block=block)
            # A small batch means the consumer keeps up with the stream. A read sent ahead would
            # then return the next event alone, and batches of one event each cost more per event.
            if self._read_ahead and len(entries) >= min(READ_AHEAD_MIN_ENTRIES, count):
                self._reader.send_ahead(count, block=block)
            return entries, False
        except redis.ResponseError as exc:
            # A blocked read, such as one sent ahead, gets STREAM_DELETED_ERROR instead of NOGROUP.
            if "NOGROUP" not in str(exc) and STREAM_DELETED_ERROR not in str(exc):
                raise
            # The stream or group was deleted while we ran; create them again on the next call.
            log.warning("consumer group missing, creating it again group=%s", self.group)
            self._group_ready = False
            return [], False

    # -- one batch -----------------------------------------------------------------------------

    def _process_batch(self, entries: Sequence[Entry], *, pending: bool = False) -> None:
        """Apply one batch. `pending` is True for entries delivered before and re-read after a restart."""
        progress = self.database.ingest_progress(self.stream) if pending else None
        committed_key = stream_id_key(progress[0]) if progress and progress[0] else None

        already_committed: list[bytes] = []
        present: list[Entry] = []
        for stream_id, fields in entries:
            if fields:
                present.append((stream_id, fields))
            else:
                # The entry was trimmed from the stream after delivery; nothing is left to apply.
                log.warning("event missing from stream, acknowledging stream_id=%s", _text(stream_id))
                already_committed.append(stream_id)

        # Pending entries at or below the committed id were written before a crash that came ahead
        # of their acknowledgement. They are only acknowledged, and their users refreshed. Redis
        # returns pending entries in stream id order, so the committed ones are a prefix.
        split = 0
        if committed_key is not None:
            split = bisect.bisect_right(
                present, committed_key, key=lambda entry: stream_id_key(_text(entry[0]))
            )
        recovered, fresh = present[:split], present[split:]
        already_committed.extend(stream_id for stream_id, _ in recovered)

        rating_min, rating_max = self.settings.rating_min, self.settings.rating_max
        valid, invalid = validate_entries(fresh, rating_min, rating_max)
        recovered_valid, _ = validate_entries(recovered, rating_min, rating_max)
        recovered_users = recovered_valid.user_ids.tolist()
        dead = [(fresh[position][0], fresh[position][1], reason) for position, reason in invalid]
        if len(valid) == len(fresh):
            valid_ids = [stream_id for stream_id, _ in fresh]
        else:
            valid_ids = [fresh[position][0] for position in valid.positions.tolist()]

        self._dead_letter(dead)

        seq = self.database.current_seq()
        touched: list[str] = []
        if valid:
            try:
                batches = [self._apply(valid, valid_ids)]
            except (redis.ConnectionError, redis.TimeoutError):
                raise
            except Exception as exc:
                batches, rejected = self._apply_one_by_one(valid, valid_ids, fresh, exc)
                valid_ids = [stream_id for stream_id in valid_ids if stream_id not in rejected]
                dead.extend(rejected.values())
            for batch in batches:
                seq = batch.seq
                touched.extend(batch.user_ids)
                self._totals["written"] += batch.written
        if already_committed:
            log.info(
                "committed entries acknowledged after restart entries=%d users=%d",
                len(already_committed),
                len(set(recovered_users)),
            )

        users = list(dict.fromkeys(touched + recovered_users))
        # Read here, because the next batch changes the rating index.
        user_ratings = self._refresh_rows(users) if users else None
        ack_ids = valid_ids + already_committed
        if self._publisher is None:
            self._publish(user_ratings, seq, ack_ids)
        else:
            self._wait_in_flight()
            self._in_flight = self._publisher.submit(self._publish, user_ratings, seq, ack_ids)

        self._totals["events"] += len(entries)
        self._totals["dead"] += len(dead)
        self._totals["batches"] += 1

    def _apply(self, columns: EventColumns, stream_ids: list[bytes]) -> AppliedBatch:
        batch = self.database.apply_rating_columns(
            columns.user_ids, columns.item_ids, columns.ratings, columns.timestamps,
            stream=self.stream, last_stream_id=_text(stream_ids[-1]),
        )
        log.debug(
            "batch committed seq=%d events=%d written=%d stale=%d new_users=%d new_items=%d",
            batch.seq, batch.received, batch.written, batch.stale, batch.new_users, batch.new_items,
        )
        return batch

    def _apply_one_by_one(
        self, valid: EventColumns, valid_ids: list[bytes], fresh: Sequence[Entry], error: Exception
    ) -> tuple[list[AppliedBatch], dict[bytes, tuple[bytes, EntryFields, str]]]:
        """Apply a batch the database rejected event by event, and dead-letter the events it rejects.

        Validation should keep such events out, so this is a backstop: one event the database
        cannot take must not block every event behind it. When every event fails, the database
        itself is at fault, and the original error is raised with nothing acknowledged.
        """
        log.warning("batch rejected by database, applying events one by one events=%d error=%s",
                    len(valid), error)
        batches: list[AppliedBatch] = []
        rejected: dict[bytes, tuple[bytes, EntryFields, str]] = {}
        for row, stream_id in enumerate(valid_ids):
            try:
                batches.append(self._apply(valid.take(slice(row, row + 1)), [stream_id]))
            except (redis.ConnectionError, redis.TimeoutError):
                raise
            except Exception as exc:
                fields = fresh[valid.positions[row]][1]
                rejected[stream_id] = (stream_id, fields, f"database rejected the event: {exc}")
        if not batches:
            raise error
        self._dead_letter(list(rejected.values()))
        return batches, rejected

    def _dead_letter(self, dead: Sequence[tuple[bytes, EntryFields, str]]) -> None:
        """Copy invalid entries to the dead-letter stream and acknowledge them, atomically."""
        if not dead:
            return
        with self.connection.pipeline(transaction=True) as pipe:
            for stream_id, fields, reason in dead:
                pipe.execute_command(
                    "XADD", DEAD_LETTER_STREAM, "MAXLEN", self.settings.dead_letter_max_entries, "*",
                    *_dead_letter_fields(fields, reason, stream_id),
                )
            pipe.xack(self.stream, self.group, *[stream_id for stream_id, _, _ in dead])
            pipe.execute()
        for stream_id, _, reason in dead[:DEAD_LETTER_LOG_LIMIT]:
            log.info("event dead-lettered reason=%s stream_id=%s", reason, _text(stream_id))
        if len(dead) > DEAD_LETTER_LOG_LIMIT:
            log.info(
                "events dead-lettered count=%d not_logged=%d",
                len(dead), len(dead) - DEAD_LETTER_LOG_LIMIT,
            )

    def _wait_in_flight(self) -> None:
        """Wait for the batch handed to the publishing thread; raise its Redis error, if any."""
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is not None:
            in_flight.result()

    def _publish(self, user_ratings: UserRows | None, seq: int, ack_ids: list[bytes]) -> None:
        """Enqueue the refreshes of a committed batch, then acknowledge its entries."""
        if user_ratings is not None:
            self._enqueue_refresh(user_ratings, seq)
        if ack_ids:
            send_packed(self.connection, [("XACK", self.stream, self.group, *ack_ids)])

    def _enqueue_refresh(self, user_ratings: UserRows, seq: int) -> None:
        try:
            self.enqueue_refresh(user_ratings, seq)
        except (redis.ConnectionError, redis.TimeoutError):
            raise  # the batch stays unacknowledged and is recovered after the retry
        except Exception:
            # The ratings are committed; only these users' refolds are lost until the next retrain.
            log.error(
                "refresh enqueue failed users=%d seq=%d", len(user_ratings), seq, exc_info=True
            )

    def _trim_events(self) -> None:
        """Trim acknowledged events older than settings.events_keep_seconds, every few seconds."""
        now = time.monotonic()
        if self._last_trim is not None and now - self._last_trim < TRIM_INTERVAL_SECONDS:
            return
        self._last_trim = now
        # Stream ids carry the Redis server's clock, so the age is measured on that clock too.
        seconds, microseconds = self.connection.time()
        try:
            trim_events(
                self.connection, self.stream, self.settings.events_keep_seconds,
                seconds * 1000 + microseconds // 1000, group=self.group,
            )
        except redis.ResponseError as exc:
            log.warning("events stream not trimmed stream=%s error=%s", self.stream, exc)

    def _log_summary(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_summary < SUMMARY_INTERVAL:
            return
        if self._totals["batches"]:
            log.info(
                "ingest progress events=%d written=%d dead=%d batches=%d seconds=%.0f",
                self._totals["events"],
                self._totals["written"],
                self._totals["dead"],
                self._totals["batches"],
                now - self._last_summary,
            )
        self._totals = dict.fromkeys(self._totals, 0)
        self._last_summary = now


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


# Fields a dead-letter entry adds to the event's own. An event field of the same name, or one
# whose name starts with original_, gets one more original_ in front. Taking one original_ off
# every name that starts with it then gives back the event's fields exactly.
DEAD_LETTER_FIELDS = ("reason", "stream_id")
_DEAD_LETTER_RAW_NAMES = tuple(name.encode() for name in DEAD_LETTER_FIELDS)
_ORIGINAL_PREFIX = b"original_"


def _dead_letter_fields(fields: EntryFields, reason: str, stream_id: bytes) -> list:
    """Return the flat field list of a dead-letter entry: every field of the event, in order and
    repeated names included, then `reason` and `stream_id`."""
    pairs = fields.items() if isinstance(fields, dict) else zip(fields[0::2], fields[1::2])
    flat: list = []
    for name, value in pairs:
        # Names are compared as bytes because an event's field name need not be UTF-8.
        raw_name = name.encode() if isinstance(name, str) else name
        if raw_name in _DEAD_LETTER_RAW_NAMES or raw_name.startswith(_ORIGINAL_PREFIX):
            name = _ORIGINAL_PREFIX + raw_name
        flat += [name, value]
    return [*flat, "reason", reason, "stream_id", _text(stream_id)]
