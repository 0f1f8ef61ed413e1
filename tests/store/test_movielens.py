"""store.movielens on small hand-written files and on the shipped ml-latest-small."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from store.database import Database
from store.errors import DataFileError
from store.movielens import (
    find_movielens_files,
    load_movielens,
    load_ratings_and_movies,
    read_movies_file,
    read_ratings_data,
    read_ratings_file,
)

MOVIES_CSV = """movieId,title,genres
1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy
11,"American President, The (1995)",Comedy|Drama|Romance
7789,"11'09""01 - September 11 (2002)",Drama
5,Amélie (2001),Comedy|Romance
6,Unknown Film (2010),(no genres listed)
7,Hamlet (2000),Drama
8,Hamlet (2000),Drama
9,Everest (1998),Documentary|IMAX
"""

RATINGS_CSV = """userId,movieId,rating,timestamp
1,1,4.0,964982703
1,7789,3.5,964982704
2,11,5.0,964982705
2,999,2.0,964982706
3,7,1.0,964982707
3,8,0.5,964982708
"""


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


@pytest.fixture
def small_dir(tmp_path: Path) -> Path:
    write(tmp_path / "movies.csv", MOVIES_CSV)
    write(tmp_path / "ratings.csv", RATINGS_CSV)
    return tmp_path


@pytest.fixture
def db(tmp_path: Path) -> Database:
    with Database(tmp_path / "db" / "streamrec.duckdb") as database:
        yield database


def item_rows(db: Database) -> dict[str, tuple]:
    rows = db.connection.execute("SELECT item_id, item_idx, title, genres FROM items").fetchall()
    return {item_id: (item_idx, title, genres) for item_id, item_idx, title, genres in rows}


def test_titles_survive_quoting(small_dir: Path, db: Database):
    load_movielens(db, small_dir)
    items = item_rows(db)

    assert items["7789"][1] == "11'09\"01 - September 11 (2002)"
    assert items["11"][1] == "American President, The (1995)"
    assert items["5"][1] == "Amélie (2001)"


def test_genres_parsed(small_dir: Path, db: Database):
    load_movielens(db, small_dir)
    items = item_rows(db)

    assert items["1"][2] == ["Adventure", "Animation", "Children", "Comedy", "Fantasy"]
    assert items["6"][2] == []
    assert items["9"][2] == ["Documentary", "IMAX"]
    assert "IMAX" in db.ratings_arrays().genre_names.tolist()
    assert "(no genres listed)" not in db.ratings_arrays().genre_names.tolist()


def test_duplicate_titles_stay_two_items(small_dir: Path, db: Database):
    load_movielens(db, small_dir)
    items = item_rows(db)

    assert items["7"][1] == items["8"][1] == "Hamlet (2000)"
    assert items["7"][0] != items["8"][0]


def test_rating_for_unknown_movie_kept(small_dir: Path, db: Database):
    summary = load_movielens(db, small_dir)
    items = item_rows(db)

    assert summary.items_without_movie == 1
    assert items["999"][1:] == (None, [])
    assert items["999"][0] == 8  # appended after the eight movies
    assert db.user_ratings(["2"])["2"][0].tolist() == ["11", "999"]


def test_item_indices_follow_movies_file(small_dir: Path, db: Database):
    load_movielens(db, small_dir)
    order = db.connection.execute("SELECT item_id FROM items ORDER BY item_idx").fetchnumpy()["item_id"]
    assert order.tolist() == ["1", "11", "7789", "5", "6", "7", "8", "9", "999"]


def test_timestamps_are_epoch_seconds(small_dir: Path, db: Database):
    load_movielens(db, small_dir)
    data = db.ratings_arrays()
    first = int(data.timestamp[0])
    assert first == 964982703
    assert datetime.fromtimestamp(first, tz=timezone.utc) == datetime(2000, 7, 30, 18, 45, 3, tzinfo=timezone.utc)


def test_reload_is_idempotent(small_dir: Path, db: Database):
    first = load_movielens(db, small_dir)
    before = db.ratings_arrays()
    second = load_movielens(db, small_dir)
    after = db.ratings_arrays()

    assert first.ratings_written == 6
    assert second.ratings_written == 0
    assert second.ratings_stale == 6
    assert second.new_users == 0
    assert second.new_items == 0
    assert db.counts() == (3, 9, 6)
    np.testing.assert_array_equal(before.rating, after.rating)
    np.testing.assert_array_equal(before.item_ids, after.item_ids)


def test_reload_applies_newer_ratings(small_dir: Path, db: Database, tmp_path: Path):
    load_movielens(db, small_dir)
    newer = tmp_path / "newer"
    newer.mkdir()
    write(newer / "movies.csv", "movieId,title,genres\n999,Found Later (2020),Horror\n")
    write(newer / "ratings.csv", "userId,movieId,rating,timestamp\n1,1,1.0,964982800\n1,7789,5.0,1\n")

    summary = load_movielens(db, newer)

    assert summary.ratings_written == 1
    assert summary.ratings_stale == 1
    ratings = dict(zip(*(array.tolist() for array in db.user_ratings(["1"])["1"])))
    assert ratings == {"1": 1.0, "7789": 3.5}
    assert item_rows(db)["999"] == (8, "Found Later (2020)", ["Horror"])


def test_duplicate_rows_keep_newest(tmp_path: Path, db: Database):
    path = write(
        tmp_path / "ratings.csv",
        "userId,movieId,rating,timestamp\n1,1,4.0,200\n1,1,2.0,100\n1,2,1.0,50\n1,2,3.0,50\n",
    )
    load_ratings_and_movies(db, path)
    ratings = dict(zip(*(array.tolist() for array in db.user_ratings(["1"])["1"])))
    assert ratings == {"1": 4.0, "2": 3.0}


def test_whole_ml_latest_small(movielens_dir: Path, db: Database):
    summary = load_movielens(db, movielens_dir)
    data = db.ratings_arrays()
    items = item_rows(db)

    assert summary.ratings_read == 100_836
    assert summary.movies_read == 9_742
    assert db.counts() == (610, 9_742, 100_836)
    assert summary.items_without_movie == 0  # every rated movie of this release is in movies.csv
    assert data.nnz == 100_836
    assert data.n_users == 610
    assert data.n_items == 9_742
    assert items["7789"][1] == "11'09\"01 - September 11 (2002)"
    assert len(data.genre_names) == 19
    assert "IMAX" in data.genre_names.tolist()
    assert float(data.rating.min()) == 0.5
    assert float(data.rating.max()) == 5.0
    unrated = data.n_items - np.unique(data.item_idx).shape[0]
    assert unrated == 18  # movies listed in movies.csv that nobody rated


def test_dat_layout_latin1(tmp_path: Path, db: Database):
    write(tmp_path / "movies.dat", '1::Toy Story (1995)::Animation|Comedy\n2::Café "Noir": A, B (1999)::Drama\n', "latin-1")
    write(tmp_path / "ratings.dat", "1::1::5::978300760\n1::2::3::978302109\n2::2::4::978301968\n", "latin-1")

    summary = load_movielens(db, tmp_path)
    items = item_rows(db)

    assert summary.ratings_read == 3
    assert items["2"][1] == 'Café "Noir": A, B (1999)'
    assert items["1"][2] == ["Animation", "Comedy"]
    assert db.user_ratings(["2"])["2"][1].tolist() == [4.0]


def test_dat_layout_utf8(tmp_path: Path):
    path = write(tmp_path / "movies.dat", "1::Amélie (2001)::Comedy|Romance\n")
    movies = read_movies_file(path)
    assert movies.titles.tolist() == ["Amélie (2001)"]


def test_ml100k_layout(tmp_path: Path, db: Database):
    flags = ["0"] * 19
    toy_flags = flags.copy()
    toy_flags[3] = toy_flags[4] = toy_flags[5] = "1"  # Animation, Children's, Comedy
    unknown_flags = flags.copy()
    unknown_flags[0] = "1"
    write(
        tmp_path / "u.item",
        "|".join(["1", "Toy Story (1995)", "01-Jan-1995", "", "http://x"] + toy_flags) + "\n"
        + "|".join(["2", 'Café "Noir" (1996)', "", "", ""] + unknown_flags) + "\n",
        "latin-1",
    )
    write(tmp_path / "u.data", "196\t1\t3\t881250949\n186\t2\t5\t891717742\n")

    summary = load_movielens(db, tmp_path)
    items = item_rows(db)

    assert summary.ratings_read == 2
    assert items["1"][1:] == ("Toy Story (1995)", ["Animation", "Children's", "Comedy"])
    assert items["2"][1:] == ('Café "Noir" (1996)', [])
    assert db.user_ratings(["186"])["186"][1].tolist() == [5.0]


def test_unknown_header_names_file(tmp_path: Path):
    path = write(tmp_path / "ratings.csv", "user,item,stars\n1,2,3\n")
    with pytest.raises(DataFileError) as caught:
        read_ratings_file(path)
    assert str(path) in str(caught.value)
    assert "userId,movieId,rating,timestamp" in str(caught.value)


def test_unknown_directory_layout(tmp_path: Path):
    write(tmp_path / "ratings.txt", "1\t2\t3\t4\n")
    with pytest.raises(DataFileError, match="no MovieLens files found"):
        find_movielens_files(tmp_path)


def test_rating_out_of_scale_names_line(tmp_path: Path):
    path = write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,1\n1,2,7,1\n")
    with pytest.raises(DataFileError) as caught:
        read_ratings_file(path)
    assert f"{path}: line 3: rating: must be between 0.5 and 5.0, got 7.0" == str(caught.value)


def test_malformed_row_names_file(tmp_path: Path):
    path = write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,1,four,1\n")
    with pytest.raises(DataFileError) as caught:
        read_ratings_file(path)
    assert str(path) in str(caught.value)


def test_negative_timestamp_rejected(tmp_path: Path):
    path = write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,-5\n")
    with pytest.raises(DataFileError, match="line 2: timestamp"):
        read_ratings_file(path)


def test_read_ratings_file_arrays(splits_dir: Path):
    rows = read_ratings_file(splits_dir / "ml-latest-small.random80.test.csv")

    assert len(rows) == 20_168
    assert rows.rating.dtype == np.float32
    assert rows.timestamp.dtype == np.int64
    assert rows.user_ids[0] == "1"
    assert rows.item_ids[0] == "1"
    assert rows.timestamp[0] == 964982703


def test_read_movies_file_genres(movielens_dir: Path):
    movies = read_movies_file(movielens_dir / "movies.csv")

    assert len(movies) == 9_742
    assert movies.item_ids[0] == "1"
    assert movies.genres[0] == ["Adventure", "Animation", "Children", "Comedy", "Fantasy"]
    position = movies.item_ids.tolist().index("7789")
    assert movies.titles[position] == "11'09\"01 - September 11 (2002)"
    assert movies.genres_indptr[-1] == movies.genres_indices.shape[0]


def test_read_ratings_data_without_database(splits_dir: Path, movielens_dir: Path):
    data = read_ratings_data(
        splits_dir / "ml-latest-small.random80.train.csv", movielens_dir / "movies.csv"
    )
    assert data.nnz == 100_836 - 20_168
    assert data.n_items == 9_742
    assert data.watermark == 0
