-- streamrec's DuckDB schema. External ids are strings; dense indices start at 0 and never change.
-- Each statement is idempotent so that opening an existing database re-runs this file harmlessly.

CREATE TABLE IF NOT EXISTS users (
    user_idx INTEGER PRIMARY KEY,
    user_id  VARCHAR UNIQUE NOT NULL
);

-- An item first seen in a rating has no title and no genres until a movies file names it.
CREATE TABLE IF NOT EXISTS items (
    item_idx INTEGER PRIMARY KEY,
    item_id  VARCHAR UNIQUE NOT NULL,
    title    VARCHAR,
    genres   VARCHAR[]
);

-- One row per (user_idx, item_idx): the writers keep it so, without a primary key, because
-- checking every batch through a 32M-entry index cost more than the rest of ingest together.
-- timestamp: seconds since the epoch. updated_seq: the ingest batch that wrote the row (0 for bulk loads).
CREATE TABLE IF NOT EXISTS ratings (
    user_idx    INTEGER NOT NULL,
    item_idx    INTEGER NOT NULL,
    rating      REAL NOT NULL,
    timestamp   BIGINT NOT NULL,
    updated_seq BIGINT NOT NULL
);

-- New values for pairs already in ratings, appended by the ingest consumer and folded into
-- ratings now and then. For a pair listed here, the row with the highest updated_seq is current.
CREATE TABLE IF NOT EXISTS rating_changes (
    user_idx    INTEGER NOT NULL,
    item_idx    INTEGER NOT NULL,
    rating      REAL NOT NULL,
    timestamp   BIGINT NOT NULL,
    updated_seq BIGINT NOT NULL
);

-- One row: a random id that every bulk load replaces. Snapshots record the id of the ratings they
-- were trained on, and a refresh completes a user's ratings from a snapshot (its training ratings
-- plus the ingest batches after its watermark) only while the id still matches. Bulk loads write
-- updated_seq 0, so a snapshot could not tell their rows from those it was trained on.
CREATE TABLE IF NOT EXISTS ratings_generation (
    id VARCHAR NOT NULL
);

-- One row per Redis stream: the last entry committed and the number of the batch that committed it.
CREATE TABLE IF NOT EXISTS ingest_progress (
    stream         VARCHAR PRIMARY KEY,
    last_stream_id VARCHAR,
    seq            BIGINT NOT NULL
);
