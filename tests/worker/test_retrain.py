"""Full retrains on tiny data sets: what gets published, and what never does."""

from __future__ import annotations

import numpy as np
import pytest

import als
from api.recommender import Recommender
from store import keys
from store.errors import SnapshotError
from store.snapshots import SnapshotStore
from worker.retrain import run_retrain

THREE_RATINGS = [("u1", "1", 4.0, 1000), ("u1", "2", 3.0, 1001), ("u2", "1", 5.0, 1002)]


@pytest.mark.parametrize(
    "overrides",
    [
        {"factors": 10, "epochs": 5},
        {"factors": 3, "reg_factors": 1e-9, "reg_bias": 1e-9, "reg_genre": 1e-9, "epochs": 5},
    ],
    ids=["factors_exceed_items", "tiny_regularisation"],
)
def test_retrain_tiny_data_publishes_finite(tiny_catalogue, redis_client, overrides):
    catalogue = tiny_catalogue(THREE_RATINGS)
    result = run_retrain(catalogue.settings, redis_client, als.ALSConfig(**overrides))

    snapshot = SnapshotStore(catalogue.settings.snapshots_dir).open(result["version"], verify=True)
    for name in ("user_factors", "user_bias", "item_factors", "item_bias", "genre_factors"):
        assert np.isfinite(getattr(snapshot, name)).all(), name
    assert np.isfinite(snapshot.global_mean)
    assert redis_client.zcard(keys.recs_key("u1")) > 0


def test_retrain_never_publishes_non_finite(tiny_catalogue, redis_client, monkeypatch):
    catalogue = tiny_catalogue(THREE_RATINGS)
    real_train = als.train

    def poisoned_train(*args, **kwargs):
        model = real_train(*args, **kwargs)
        model.item_factors[0, 0] = np.nan
        return model

    monkeypatch.setattr(als, "train", poisoned_train)
    with pytest.raises(SnapshotError, match="item_factors"):
        run_retrain(catalogue.settings, redis_client, als.ALSConfig(factors=2, epochs=2))
    assert SnapshotStore(catalogue.settings.snapshots_dir).versions() == []
    assert not redis_client.exists(keys.recs_key("u1"))


def test_all_five_star_data_keeps_settings_scale(tiny_catalogue, redis_client):
    rows = [(f"u{u}", str(i), 5.0, 1000 + 10 * u + i) for u in range(4) for i in (1, 2, 3)]
    catalogue = tiny_catalogue(rows)
    result = run_retrain(catalogue.settings, redis_client, als.ALSConfig(factors=2, epochs=3))

    snapshot = SnapshotStore(catalogue.settings.snapshots_dir).open(result["version"])
    assert snapshot.rating_min == 0.5
    assert snapshot.rating_max == 5.0
    recommender = Recommender(catalogue.settings, redis_client)
    prediction = recommender.predict("u0", "4")
    assert 0.5 <= prediction <= 5.0
    assert recommender.predict("u0", "1") == 5.0


def test_unrated_catalogue_movie_ranked_by_genres(tiny_catalogue, redis_client):
    rows = [(f"u{u}", str(i), 4.0 + 0.5 * (i == 1), 1000 + 10 * u + i) for u in range(6) for i in (1, 2, 3)]
    catalogue = tiny_catalogue(rows)
    result = run_retrain(catalogue.settings, redis_client, als.ALSConfig(factors=4, epochs=5))

    snapshot = SnapshotStore(catalogue.settings.snapshots_dir).open(result["version"])
    cold = snapshot.item_index("4")
    assert snapshot.item_rating_count[cold] == 0
    assert snapshot.item_bias[cold] == 0.0
    genres = als.ItemGenres(
        np.asarray(snapshot.item_genres_indptr), np.asarray(snapshot.item_genres_indices),
        len(snapshot.genre_names),
    )
    prior = als.item_prior(np.asarray(snapshot.genre_factors), genres)
    np.testing.assert_allclose(snapshot.item_factors[cold], prior[cold], atol=1e-6)
    assert np.abs(prior[cold]).sum() > 0

    recommendations = Recommender(catalogue.settings, redis_client).recommend("u0", n=5)
    assert "4" in [r.item_id for r in recommendations]


def test_training_rmse_matches_clipped_predict(tiny_catalogue):
    from worker import retrain

    rows = [(f"u{u}", str(i), float(1 + (u * i) % 5), 1000 + u * 10 + i) for u in range(7) for i in (1, 2, 3)]
    catalogue = tiny_catalogue(rows)
    from store.database import Database

    with Database(catalogue.settings.database_path, read_only=True) as database:
        data = database.ratings_arrays()
    model = retrain.train_model(data, als.ALSConfig(factors=2, epochs=2), lambda stage, fields: None)
    expected = als.rmse(np.clip(als.predict(model, data.user_idx, data.item_idx), 0.5, 5.0), data.rating)

    assert retrain.training_rmse(model, data, catalogue.settings) == pytest.approx(expected, rel=1e-9)


def test_export_read_by_a_retrain_is_removed(tiny_catalogue, monkeypatch, tmp_path):
    from store.database import Database, export_items_path
    from store.errors import DatabaseLockedError
    from worker import retrain

    catalogue = tiny_catalogue([("1", "1", 4.0, 1000), ("2", "2", 3.5, 1001)])
    export = tmp_path / "exports" / "ratings-00000001.parquet"
    with Database(catalogue.settings.database_path) as database:
        database.export_ratings(export)
        generation = database.ratings_generation()

    class LockedDatabase:
        def __init__(self, *args, **kwargs):
            raise DatabaseLockedError("held by the ingest consumer")

    monkeypatch.setattr(retrain, "Database", LockedDatabase)
    monkeypatch.setattr(retrain, "request_export", lambda connection, timeout: (export, 1, generation))

    data = retrain.load_ratings(catalogue.settings, connection=object())

    assert data.nnz == 2
    assert data.generation == generation
    assert not export.exists()
    assert not export_items_path(export).exists()
