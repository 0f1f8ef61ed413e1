"""A small hand-built snapshot for tests: 4 users, 6 items, 3 genres, 2 factors."""

from __future__ import annotations

import numpy as np

from store.snapshots import SnapshotData

GENRES = ["Action", "Comedy", "Drama"]

# item_id, title, genres, item_bias, item_factors
ITEMS = [
    ("10", "Alpha (2001)", ["Action"], 0.30, [1.0, 0.0]),
    ("20", "Bravo (2002)", ["Comedy"], 0.10, [0.0, 1.0]),
    ("30", "Charlie (2003)", ["Action", "Drama"], -0.20, [0.8, 0.6]),
    ("40", "Delta (2004)", ["Drama"], 0.50, [-1.0, 0.0]),
    ("50", "Echo (2005)", [], 0.00, [0.0, 0.0]),
    ("60", "Foxtrot (2006)", ["Comedy", "Drama"], 0.10, [0.0, -1.0]),
]

# user_id, user_bias, user_factors, item_idx rated in training (sorted)
USERS = [
    ("alice", 0.20, [2.0, 0.0], [0, 3]),
    ("bob", -0.10, [0.0, 2.0], [1]),
    ("carol", 0.00, [1.0, 1.0], []),
    ("dave", 0.40, [-1.0, 0.5], [0, 1, 2, 3, 4, 5]),
]


def make_snapshot_data(**changes: object) -> SnapshotData:
    """Build the small snapshot; keyword arguments replace fields."""
    item_genre_rows = [[GENRES.index(name) for name in genres] for _, _, genres, _, _ in ITEMS]
    seen_rows = [seen for _, _, _, seen in USERS]
    values = dict(
        user_factors=np.array([u[2] for u in USERS], dtype=np.float32),
        user_bias=np.array([u[1] for u in USERS], dtype=np.float32),
        item_factors=np.array([i[4] for i in ITEMS], dtype=np.float32),
        item_bias=np.array([i[3] for i in ITEMS], dtype=np.float32),
        genre_factors=np.array([[0.5, 0.0], [0.0, 0.5], [-0.2, 0.1]], dtype=np.float32),
        user_ids=np.array([u[0] for u in USERS]),
        item_ids=np.array([i[0] for i in ITEMS]),
        item_titles=np.array([i[1] for i in ITEMS]),
        genre_names=np.array(GENRES),
        item_genres_indptr=np.cumsum([0] + [len(row) for row in item_genre_rows]),
        item_genres_indices=np.array([g for row in item_genre_rows for g in row], dtype=np.int32),
        seen_indptr=np.cumsum([0] + [len(row) for row in seen_rows]),
        seen_indices=np.array([n for row in seen_rows for n in row], dtype=np.int32),
        item_rating_count=np.array([2, 2, 1, 2, 1, 1], dtype=np.int32),
        global_mean=3.5,
        rating_min=0.5,
        rating_max=5.0,
        watermark=0,
        hyperparameters={"factors": 2, "reg_factors": 0.1, "reg_bias": 1.0, "reg_genre": 0.1,
                         "epochs": 5, "use_genres": True, "seed": 1},
        metrics={"rmse": 0.9},
    )
    values.update(changes)
    return SnapshotData(**values)
