"""Read MovieLens ratings and movies files with DuckDB's CSV reader and bulk-load them.

Two layouts are understood:

- ml-latest / ml-latest-small / ml-20m and later: `ratings.csv` (userId,movieId,rating,timestamp)
  and `movies.csv` (movieId,title,genres), UTF-8 with a header row. Titles are quoted when they
  contain commas, and a quote inside a title is doubled.
- ml-1m / ml-10m: `ratings.dat` (UserID::MovieID::Rating::Timestamp) and `movies.dat`
  (MovieID::Title::Genres), no header and no quoting. They are read as UTF-8, or as Latin-1 when
  the bytes are not valid UTF-8.
- ml-100k: `u.data` (user, item, rating, timestamp separated by tabs) and `u.item` (fields
  separated by "|": id, title, release date, video release date, IMDb URL, then 19 genre flags).

Genres are separated by "|"; "(no genres listed)" means none. Timestamps are seconds since the epoch.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np

from store.database import Database, sql_literal
from store.errors import DataFileError
from store.ratings_data import RatingsData, unicode_array

log = logging.getLogger(__name__)

RATINGS_CSV_HEADER = "userId,movieId,rating,timestamp"
MOVIES_CSV_HEADER = "movieId,title,genres"
NO_GENRES = "(no genres listed)"
DAT_DELIMITER = "::"

UNQUOTED_DELIMITERS = {"dat": DAT_DELIMITER, "tab": "\t", "flags": "|"}

# ml-100k's u.item marks genres with 0/1 flags in this column order; "unknown" counts as no genre.
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
)


@dataclass(frozen=True)
class RatingsFile:
    """Ratings as read from a file, one array element per row, in file order."""

    user_ids: np.ndarray  # unicode external ids
    item_ids: np.ndarray  # unicode external ids
    rating: np.ndarray  # float32 stars
    timestamp: np.ndarray  # int64 seconds since the epoch

    def __len__(self) -> int:
        return int(self.rating.shape[0])


@dataclass(frozen=True)
class MoviesFile:
    """Movies as read from a file, in file order, with genres as CSR rows into sorted names."""

    item_ids: np.ndarray  # unicode external ids
    titles: np.ndarray  # unicode
    genre_names: np.ndarray  # unicode, sorted
    genres_indptr: np.ndarray  # int64 (n_movies + 1,)
    genres_indices: np.ndarray  # int32 indices into genre_names

    def __len__(self) -> int:
        return int(self.item_ids.shape[0])

    @property
    def genres(self) -> list[list[str]]:
        """Return each movie's genre names, in file order."""
        names = self.genre_names.tolist()
        indices = self.genres_indices.tolist()
        bounds = self.genres_indptr.tolist()
        return [[names[k] for k in indices[start:stop]] for start, stop in zip(bounds[:-1], bounds[1:])]


@dataclass(frozen=True)
class LoadSummary:
    """Counts of rows a bulk load read and changed."""

    ratings_read: int
    movies_read: int
    ratings_written: int  # inserted, or replaced an older stored rating
    ratings_stale: int  # an equal or newer rating was already stored
    new_users: int
    new_items: int  # items created from movies plus items that only ratings name
    items_without_movie: int  # items created by a rating for a movie the movies file lacks


def find_movielens_files(directory: str | Path) -> tuple[Path, Path]:
    """Return (ratings file, movies file) of a MovieLens directory.

    Raises DataFileError naming the directory when neither the .csv nor the .dat pair is there.
    """
    directory = Path(directory)
    pairs = (("ratings.csv", "movies.csv"), ("ratings.dat", "movies.dat"), ("u.data", "u.item"))
    for ratings_name, movies_name in pairs:
        ratings_path, movies_path = directory / ratings_name, directory / movies_name
        if ratings_path.is_file() and movies_path.is_file():
            return ratings_path, movies_path
    raise DataFileError(
        f"{directory}: no MovieLens files found; expected ratings.csv and movies.csv "
        "(ml-latest, ml-20m and later), ratings.dat and movies.dat (ml-1m, ml-10m) "
        "or u.data and u.item (ml-100k)"
    )


def load_movielens(
    db: Database,
    directory: str | Path,
    *,
    rating_min: float = 0.5,
    rating_max: float = 5.0,
) -> LoadSummary:
    """Bulk-load the ratings and movies files of a MovieLens directory; see load_ratings_and_movies."""
    ratings_path, movies_path = find_movielens_files(directory)
    return load_ratings_and_movies(
        db, ratings_path, movies_path, rating_min=rating_min, rating_max=rating_max
    )


def load_ratings_and_movies(
    db: Database,
    ratings_path: str | Path,
    movies_path: str | Path | None = None,
    *,
    rating_min: float = 0.5,
    rating_max: float = 5.0,
) -> LoadSummary:
    """Bulk-load a ratings file and optionally a movies file into the database in one transaction.

    Movies come first so that item indices follow the movies file. Ratings use the same upsert
    rule as the ingest consumer with updated_seq 0, so loading the same files twice changes
    nothing. Raises DataFileError naming the file on an unknown layout or an invalid row.
    """
    started = time.perf_counter()
    log.info("bulk load started ratings=%s movies=%s", ratings_path, movies_path)

    with db.transaction():
        movies_read = new_movies = 0
        if movies_path is not None:
            movies_read = stage_movies_file(db.connection, movies_path, "movies_file")
            new_movies, _ = db.merge_items("SELECT pos, item_id, title, genres FROM movies_file")
            db.connection.execute("DROP TABLE movies_file")
        ratings_read = stage_ratings_file(
            db.connection, ratings_path, "ratings_file", rating_min, rating_max
        )
        batch = db.merge_ratings(
            "SELECT pos, user_id, item_id, rating, timestamp FROM ratings_file", seq=0
        )
        db.connection.execute("DROP TABLE ratings_file")

    summary = LoadSummary(
        ratings_read=ratings_read,
        movies_read=movies_read,
        ratings_written=batch.written,
        ratings_stale=batch.stale,
        new_users=batch.new_users,
        new_items=new_movies + batch.new_items,
        items_without_movie=batch.new_items,
    )
    log.info(
        "bulk load finished ratings=%d written=%d stale=%d new_users=%d new_items=%d "
        "items_without_movie=%d seconds=%.2f",
        summary.ratings_read,
        summary.ratings_written,
        summary.ratings_stale,
        summary.new_users,
        summary.new_items,
        summary.items_without_movie,
        time.perf_counter() - started,
    )
    return summary


def read_ratings_file(
    path: str | Path, *, rating_min: float = 0.5, rating_max: float = 5.0
) -> RatingsFile:
    """Read a ratings file (.csv or .dat layout) into arrays, without a database file.

    Raises DataFileError naming the file on an unknown layout or an invalid row.
    """
    with duckdb.connect(":memory:") as con:
        stage_ratings_file(con, path, "ratings_file", rating_min, rating_max)
        columns = con.execute(
            "SELECT user_id, item_id, rating, timestamp FROM ratings_file ORDER BY pos"
        ).fetchnumpy()
    return RatingsFile(
        user_ids=unicode_array(columns["user_id"]),
        item_ids=unicode_array(columns["item_id"]),
        rating=np.asarray(columns["rating"], dtype=np.float32),
        timestamp=np.asarray(columns["timestamp"], dtype=np.int64),
    )


def read_movies_file(path: str | Path) -> MoviesFile:
    """Read a movies file (.csv or .dat layout), without a database file.

    Raises DataFileError naming the file on an unknown layout or an invalid row.
    """
    with duckdb.connect(":memory:") as con:
        stage_movies_file(con, path, "movies_file")
        movies = con.execute(
            "SELECT item_id, coalesce(title, '') AS title FROM movies_file ORDER BY pos"
        ).fetchnumpy()
        genre_names = con.execute(
            "SELECT DISTINCT unnest(genres) AS genre FROM movies_file ORDER BY genre"
        ).fetchnumpy()["genre"]
        # Row number of each movie and rank of each genre name give the CSR coordinates.
        pairs = con.execute(
            """
            WITH numbered AS (SELECT row_number() OVER (ORDER BY pos) - 1 AS row, genres FROM movies_file),
                 pairs AS (SELECT DISTINCT row, unnest(genres) AS genre FROM numbered),
                 names AS (SELECT genre, row_number() OVER (ORDER BY genre) - 1 AS genre_idx
                           FROM (SELECT DISTINCT genre FROM pairs))
            SELECT p.row, n.genre_idx FROM pairs p JOIN names n ON n.genre = p.genre
            ORDER BY p.row, n.genre_idx
            """
        ).fetchnumpy()

    n_movies = movies["item_id"].shape[0]
    counts = np.bincount(pairs["row"].astype(np.int64), minlength=n_movies)
    indptr = np.zeros(n_movies + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    return MoviesFile(
        item_ids=unicode_array(movies["item_id"]),
        titles=unicode_array(movies["title"]),
        genre_names=unicode_array(genre_names),
        genres_indptr=indptr,
        genres_indices=pairs["genre_idx"].astype(np.int32),
    )


def read_ratings_data(
    ratings_path: str | Path,
    movies_path: str | Path | None = None,
    *,
    rating_min: float = 0.5,
    rating_max: float = 5.0,
) -> RatingsData:
    """Read ratings (and optionally movies) files into dense-index arrays through an in-memory database.

    Duplicate (user, item) rows keep the newest timestamp, as a database load would.
    """
    with Database(":memory:") as db:
        load_ratings_and_movies(
            db, ratings_path, movies_path, rating_min=rating_min, rating_max=rating_max
        )
        return db.ratings_arrays()


# -- staging: one temp table per file, validated ------------------------------------------------


def stage_ratings_file(
    con: duckdb.DuckDBPyConnection,
    path: str | Path,
    table: str,
    rating_min: float,
    rating_max: float,
) -> int:
    """Create temp table `table` (pos, user_id, item_id, rating, timestamp) from a ratings file.

    pos is the 1-based data row. Returns the number of rows. Raises DataFileError naming the file
    and the first bad line when a value is missing, a rating is outside [rating_min, rating_max]
    or a timestamp is negative.
    """
    path = Path(path)
    layout = _detect_layout(path, RATINGS_CSV_HEADER, n_dat_fields=4)
    if layout == "flags":
        raise DataFileError(f"{path}: unknown layout; u.item is a movies file, not ratings")
    columns = "{'user_id': 'VARCHAR', 'item_id': 'VARCHAR', 'rating': 'DOUBLE', 'timestamp': 'BIGINT'}"
    _create_from_file(
        con, path, layout, table, columns, "user_id, item_id, rating::REAL AS rating, timestamp"
    )

    header_lines = 1 if layout == "csv" else 0
    bad = con.execute(
        f"""
        SELECT pos, user_id, item_id, rating, timestamp FROM {table}
        WHERE user_id IS NULL OR user_id = '' OR item_id IS NULL OR item_id = ''
           OR rating IS NULL OR isnan(rating) OR rating < $1 OR rating > $2
           OR timestamp IS NULL OR timestamp < 0
        ORDER BY pos LIMIT 1
        """,
        [rating_min, rating_max],
    ).fetchall()
    if bad:
        pos, user_id, item_id, rating, timestamp = bad[0]
        line = pos + header_lines
        if not user_id:
            problem = f"userId: missing, got {user_id!r}"
        elif not item_id:
            problem = f"movieId: missing, got {item_id!r}"
        elif timestamp is None or timestamp < 0:
            problem = f"timestamp: must be seconds since the epoch (>= 0), got {timestamp}"
        else:
            problem = f"rating: must be between {rating_min} and {rating_max}, got {rating}"
        raise DataFileError(f"{path}: line {line}: {problem}")

    return int(con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0])


def stage_movies_file(con: duckdb.DuckDBPyConnection, path: str | Path, table: str) -> int:
    """Create temp table `table` (pos, item_id, title, genres VARCHAR[]) from a movies file.

    "(no genres listed)" and an empty genres field become an empty list. Returns the row count.
    Raises DataFileError naming the file on an unknown layout, an unreadable row or a missing id.
    """
    path = Path(path)
    layout = _detect_layout(path, MOVIES_CSV_HEADER, n_dat_fields=3)
    if layout == "tab":
        raise DataFileError(f"{path}: unknown layout; a movies file cannot be tab-separated")

    if layout == "flags":
        flag_names = [f"genre_{index}" for index in range(len(ML100K_GENRES))]
        columns = (
            "{'item_id': 'VARCHAR', 'title': 'VARCHAR', 'release_date': 'VARCHAR', "
            "'video_release_date': 'VARCHAR', 'imdb_url': 'VARCHAR', "
            + ", ".join(f"'{name}': 'VARCHAR'" for name in flag_names)
            + "}"
        )
        # Index 0 is "unknown", which means no genre.
        flagged = ", ".join(
            f"CASE WHEN {name} = '1' THEN {sql_literal(genre)} END"
            for name, genre in zip(flag_names[1:], ML100K_GENRES[1:])
        )
        genres_sql = f"list_filter([{flagged}], lambda genre: genre IS NOT NULL)::VARCHAR[] AS genres"
    else:
        columns = "{'item_id': 'VARCHAR', 'title': 'VARCHAR', 'genres': 'VARCHAR'}"
        genres_sql = f"""list_filter(string_split(coalesce(genres, ''), '|'),
                        lambda genre: genre <> '' AND genre <> {sql_literal(NO_GENRES)}) AS genres"""
    _create_from_file(con, path, layout, table, columns, f"item_id, title, {genres_sql}")

    missing = con.execute(
        f"SELECT min(pos) FROM {table} WHERE item_id IS NULL OR item_id = ''"
    ).fetchall()[0][0]
    if missing is not None:
        line = missing + (1 if layout == "csv" else 0)
        raise DataFileError(f"{path}: line {line}: movieId: missing")

    return int(con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0])


def _detect_layout(path: Path, csv_header: str, n_dat_fields: int) -> str:
    """Return "csv" or "dat" after checking the file's first line against that layout."""
    if not path.is_file():
        raise DataFileError(f"{path}: file not found")
    with path.open("rb") as handle:
        first_line = handle.readline().decode("latin-1").lstrip("\ufeff\xef\xbb\xbf").rstrip("\r\n")

    if path.suffix == ".csv" and first_line == csv_header:
        return "csv"
    if path.suffix == ".dat" and len(first_line.split(DAT_DELIMITER)) == n_dat_fields:
        return "dat"
    if path.name == "u.data" and len(first_line.split("\t")) == 4:
        return "tab"
    if path.name == "u.item" and len(first_line.split("|")) == 5 + len(ML100K_GENRES):
        return "flags"
    raise DataFileError(
        f"{path}: unknown layout, first line {first_line[:80]!r}; expected a .csv file with the "
        f"header {csv_header!r}, a .dat file with {n_dat_fields} fields separated by '::', "
        "or ml-100k's u.data or u.item"
    )


def _create_from_file(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    layout: str,
    table: str,
    columns: str,
    select_list: str,
) -> None:
    """Create a temp table numbering the file's data rows as pos (1-based, file order)."""
    if layout == "csv":
        reader = (
            f"read_csv({sql_literal(path)}, header = true, delim = ',', quote = '\"', escape = '\"', "
            f"auto_detect = false, columns = {columns})"
        )
    else:
        # The other layouts have no quoting, and titles may contain '"'.
        delimiter = UNQUOTED_DELIMITERS[layout]
        encoding = _unquoted_encoding(path, delimiter, columns)
        reader = _unquoted_reader(path, delimiter, encoding, columns)

    # NOTE: pos relies on DuckDB keeping file order (preserve_insertion_order, on by default).
    try:
        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE {table} AS
            SELECT row_number() OVER () AS pos, {select_list} FROM {reader}
            """
        )
    except duckdb.Error as exc:
        raise DataFileError(f"{path}: invalid row: {_first_paragraph(str(exc))}") from exc


def _unquoted_reader(path: Path, delimiter: str, encoding: str, columns: str) -> str:
    return (
        f"read_csv({sql_literal(path)}, header = false, delim = {sql_literal(delimiter)}, "
        f"quote = '', escape = '', encoding = '{encoding}', auto_detect = false, "
        f"columns = {columns})"
    )


def _unquoted_encoding(path: Path, delimiter: str, columns: str) -> str:
    """Return "utf-8" when DuckDB reads the whole file as UTF-8, else "latin-1".

    The probe runs on its own connection because a failed read would abort the caller's
    transaction. It parses the file once more.
    """
    # Reading every column forces the reader to decode all text, which count(*) alone skips.
    reader = _unquoted_reader(path, delimiter, "utf-8", columns)
    probe = f"SELECT max(length(CAST(COLUMNS(*) AS VARCHAR))) FROM {reader}"
    with duckdb.connect(":memory:") as con:
        try:
            con.execute(probe).fetchall()
        except duckdb.Error as exc:
            if "not utf-8 encoded" in str(exc):
                log.info("file is not UTF-8, reading it as Latin-1 path=%s", path)
                return "latin-1"
    # Other errors show up, with the file named, in the real read.
    return "utf-8"


def _first_paragraph(message: str) -> str:
    """Keep the lines of a DuckDB CSV error before its list of reader options."""
    return " ".join(message.split("\n\n", 1)[0].split())
