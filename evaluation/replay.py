"""Streaming evaluation: replay test ratings in time order through the worker's refresh maths.

Every test rating is first predicted (and checked against the user's current top-N list) with
what the system knows at that moment, and only then applied. Three ways of keeping up are
compared:

- static: the model trained on the training part, never updated; a user unknown to it gets
  the fallback prediction global_mean + c_n and the non-personalised list;
- incremental: after each rating the user is folded in again from all their ratings so far,
  by worker.refresh.refold_users, exactly as a refresh job does;
- incremental_retrain: the same, plus a full retrain on everything seen so far every
  `retrain_every` ratings (the worker's periodic retrain), after which folded states are reset.

Items that are neither in the training ratings nor in the movies file stay unknown for the
whole replay (predicted by fallback, never listed), because a retrain here keeps the item table.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

import als
from evaluation.protocol import RELEVANT_MIN_RATING
from evaluation.run import EvaluationData, item_rating_count, train_on
from store.ratings_data import RatingsData, unicode_array
from worker.lists import top_n_lists
from worker.refresh import refold_users

log = logging.getLogger(__name__)

MODES = ("static", "incremental", "incremental_retrain")

# Ratings per simulated ingest batch; every rating of a batch is predicted before any is applied.
DEFAULT_BATCH_SIZE = 10


@dataclass
class _UserState:
    """State of one user during the replay."""

    bias: float
    factors: np.ndarray | None  # None means u_m = 0
    top_items: np.ndarray  # item_idx of the user's current top-N list
    ratings: dict[int, float] = field(default_factory=dict)  # item_idx -> stars, train and replayed


@dataclass
class _Tally:
    """Running sums of one mode's prequential metrics."""

    squared_error: float = 0.0
    absolute_error: float = 0.0
    rows: int = 0
    relevant: int = 0
    hits: int = 0
    retrains: int = 0

    def result(self) -> dict[str, float]:
        return {
            "rmse": math.sqrt(self.squared_error / self.rows) if self.rows else float("nan"),
            "mae": self.absolute_error / self.rows if self.rows else float("nan"),
            "hits_at_10": self.hits / self.relevant if self.relevant else float("nan"),
            "ratings": self.rows,
            "relevant_ratings": self.relevant,
            "retrains": self.retrains,
        }


class _Replayer:
    """One mode's model, user states and tally."""

    def __init__(
        self, train: RatingsData, model: als.ALSModel, config: als.ALSConfig, top_n: int,
        rating_min: float, rating_max: float,
    ) -> None:
        self.config = config
        self.top_n = top_n
        self.rating_min, self.rating_max = rating_min, rating_max
        self.tally = _Tally()
        self._use(train, model)

    def _use(self, train: RatingsData, model: als.ALSModel) -> None:
        """Serve `model`, trained on `train`: every user starts from their trained row again."""
        self.train = train
        self.model = model
        self.counts = item_rating_count(train)
        self.user_index = {user_id: idx for idx, user_id in enumerate(train.user_ids.tolist())}
        self.train_indptr = np.searchsorted(train.user_idx, np.arange(train.n_users + 1))
        self.states: dict[str, _UserState] = {}

    def state(self, user_id: str) -> _UserState:
        """The user's state, built from the trained row (or nothing) on first use."""
        state = self.states.get(user_id)
        if state is not None:
            return state
        idx = self.user_index.get(user_id)
        if idx is None:
            bias, factors, ratings = 0.0, None, {}
        else:
            rows = slice(self.train_indptr[idx], self.train_indptr[idx + 1])
            bias, factors = float(self.model.user_bias[idx]), np.asarray(self.model.user_factors[idx])
            ratings = dict(zip(self.train.item_idx[rows].tolist(), self.train.rating[rows].tolist()))
        state = _UserState(bias, factors, self._top_items(bias, factors, ratings), ratings)
        self.states[user_id] = state
        return state

    def _top_items(self, bias: float, factors: np.ndarray | None, ratings: dict[int, float]) -> np.ndarray:
        seen = np.array(sorted(ratings), dtype=np.int32)
        user_factors = np.zeros((1, self.model.factors), np.float32) if factors is None else factors[np.newaxis]
        list_idx, _ = top_n_lists(
            np.array([bias], np.float32), user_factors, self.model.item_bias, self.model.item_factors,
            [seen], self.top_n, item_rating_count=self.counts,
            support_weight=als.support_weights(
                self.config.support_weight, self.config.support_half_count, [len(seen)]
            ),
        )
        return list_idx[0][list_idx[0] >= 0]

    def predict_and_score(self, user_id: str, item_idx: int, rating: float) -> None:
        """Add one test rating's error and top-N hit to the tally, before it is applied."""
        state = self.state(user_id)
        prediction = self.model.global_mean + state.bias
        if item_idx >= 0:
            prediction += float(self.model.item_bias[item_idx])
            if state.factors is not None:
                prediction += float(np.dot(state.factors, self.model.item_factors[item_idx]))
        error = min(max(prediction, self.rating_min), self.rating_max) - rating
        self.tally.squared_error += error * error
        self.tally.absolute_error += abs(error)
        self.tally.rows += 1
        if rating >= RELEVANT_MIN_RATING:
            self.tally.relevant += 1
            self.tally.hits += int(item_idx >= 0 and bool((state.top_items == item_idx).any()))

    def apply(self, batch: list[tuple[str, int, float]], refold: bool) -> None:
        """Record a batch of ratings; with refold, fold every touched user in again in one call.

        This is what one refresh job does with the users of one ingest batch.
        """
        touched: dict[str, _UserState] = {}
        for user_id, item_idx, rating in batch:
            state = self.state(user_id)
            if item_idx >= 0:
                state.ratings[item_idx] = rating
                touched[user_id] = state
        if not refold or not touched:
            return
        item_rows, rating_rows = [], []
        for state in touched.values():
            items = np.array(sorted(state.ratings), dtype=np.int32)
            item_rows.append(items)
            rating_rows.append(np.array([state.ratings[i] for i in items.tolist()], dtype=np.float32))
        refolded = refold_users(self.model, self.config, self.counts, item_rows, rating_rows, self.top_n)
        for row, state in enumerate(touched.values()):
            state.bias = float(refolded.biases[row])
            state.factors = refolded.factors[row]
            listed = refolded.list_idx[row]
            state.top_items = listed[listed >= 0]

    def retrain(self, replayed: list[tuple[str, int, float, int]]) -> None:
        """Train on the training part plus every rating replayed so far, then serve that model."""
        data = _with_replayed(self.train, replayed)
        self._use(data, train_on(data, self.config))
        self.tally.retrains += 1


def replay(
    data: EvaluationData,
    config: als.ALSConfig,
    rating_min: float,
    rating_max: float,
    *,
    retrain_every: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    top_n: int = 10,
    progress: bool = True,
) -> dict:
    """Replay the test ratings in timestamp order and return each mode's prequential metrics.

    Ratings arrive in batches of batch_size consecutive ratings, like the ingest consumer's
    batches: every rating of a batch is predicted before any of them is applied. retrain_every
    (ratings, rounded up to whole batches) defaults to a fifth of the test ratings. Returns
    {mode: {rmse, mae, hits_at_10, ratings, relevant_ratings, retrains}} plus retrain_every and
    batch_size, where hits_at_10 is the share of test ratings >= 4.0 whose item was in the
    user's top-N list just before the rating arrived. Raises ValueError for retrain_every or
    batch_size below 1.
    """
    n_rows = len(data.test_rating)
    if retrain_every is None:
        retrain_every = max(1, math.ceil(n_rows / 5))
    if retrain_every < 1:
        raise ValueError(f"retrain_every: must be >= 1, got {retrain_every}")
    if batch_size < 1:
        raise ValueError(f"batch_size: must be >= 1, got {batch_size}")

    model = train_on(data.train, config)
    replayers = {
        mode: _Replayer(data.train, model, config, top_n, rating_min, rating_max) for mode in MODES
    }
    order = np.argsort(data.test_timestamp, kind="stable")
    replayed: list[tuple[str, int, float, int]] = []
    since_retrain = 0
    with tqdm(total=n_rows, desc="replay", unit="rating", disable=not progress) as bar:
        for start in range(0, n_rows, batch_size):
            rows = order[start:start + batch_size].tolist()
            batch = [
                (str(data.test_user_ids[row]), int(data.test_item_idx[row]), float(data.test_rating[row]))
                for row in rows
            ]
            for mode, replayer in replayers.items():
                for user_id, item_idx, rating in batch:
                    replayer.predict_and_score(user_id, item_idx, rating)
                replayer.apply(batch, refold=mode != "static")
            replayed.extend(
                (user_id, item_idx, rating, int(data.test_timestamp[row]))
                for (user_id, item_idx, rating), row in zip(batch, rows)
            )
            bar.update(len(rows))

            since_retrain += len(rows)
            if since_retrain >= retrain_every and start + batch_size < n_rows:
                replayers["incremental_retrain"].retrain(replayed)
                since_retrain = 0
                log.info("replay retrained ratings_replayed=%d", len(replayed))

    result: dict = {mode: replayer.tally.result() for mode, replayer in replayers.items()}
    result["retrain_every"] = retrain_every
    result["batch_size"] = batch_size
    log.info(
        "replay finished static_rmse=%.4f incremental_rmse=%.4f incremental_retrain_rmse=%.4f",
        result["static"]["rmse"], result["incremental"]["rmse"], result["incremental_retrain"]["rmse"],
    )
    return result


def _with_replayed(train: RatingsData, replayed: list[tuple[str, int, float, int]]) -> RatingsData:
    """The training data plus the replayed ratings of known items; new users get new indices.

    A replayed rating replaces a training rating of the same user and item.
    """
    user_ids = train.user_ids.tolist()
    index = {user_id: idx for idx, user_id in enumerate(user_ids)}
    extra_users, extra_items, extra_ratings, extra_times = [], [], [], []
    for user_id, item_idx, rating, timestamp in replayed:
        if item_idx < 0:
            continue
        if user_id not in index:
            index[user_id] = len(user_ids)
            user_ids.append(user_id)
        extra_users.append(index[user_id])
        extra_items.append(item_idx)
        extra_ratings.append(rating)
        extra_times.append(timestamp)

    user_idx = np.concatenate([train.user_idx, np.asarray(extra_users, np.int32)])
    item_idx = np.concatenate([train.item_idx, np.asarray(extra_items, np.int32)])
    rating = np.concatenate([train.rating, np.asarray(extra_ratings, np.float32)])
    timestamp = np.concatenate([train.timestamp, np.asarray(extra_times, np.int64)])

    # Sort by (user, item, position) and keep the last row of each pair: the latest rating.
    position = np.arange(len(user_idx))
    order = np.lexsort((position, item_idx, user_idx))
    user_idx, item_idx = user_idx[order], item_idx[order]
    last = np.ones(len(order), bool)
    last[:-1] = (user_idx[1:] != user_idx[:-1]) | (item_idx[1:] != item_idx[:-1])
    keep = order[last]
    return dataclasses.replace(
        train,
        user_idx=user_idx[last], item_idx=item_idx[last],
        rating=rating[keep], timestamp=timestamp[keep],
        user_ids=unicode_array(np.asarray(user_ids, dtype=object).astype(str)),
    )
