"""`streamrec recommend` and `streamrec similar`: top-N tables for people, JSON for scripts."""

from __future__ import annotations

import argparse
import json
import sys

from api.recommender import Recommendation, Recommender
from cli.connect import DEFAULT_REDIS_URL, parse_stars
from store.settings import Settings


def add_parsers(subparsers) -> None:
    recommend = subparsers.add_parser(
        "recommend",
        help="top-N recommendations for a user, or for a visitor given by --rate",
    )
    recommend.add_argument("user_id", nargs="?", help="external user id")
    recommend.add_argument("-n", type=int, default=10, help="number of items (default 10)")
    recommend.add_argument(
        "--rate", action="append", default=[], metavar="ITEM_ID=STARS",
        help="a visitor's rating; repeat for several (no USER_ID then)",
    )
    recommend.add_argument("--genre", action="append", default=None, help="keep items of this genre")
    recommend.add_argument("--json", action="store_true", help="print a JSON list")
    recommend.set_defaults(handler=run_recommend)

    similar = subparsers.add_parser("similar", help="items most similar to ITEM_ID")
    similar.add_argument("item_id")
    similar.add_argument("-n", type=int, default=10)
    similar.add_argument("--json", action="store_true", help="print a JSON list")
    similar.set_defaults(handler=run_similar)


def parse_rate(values: list[str]) -> dict[str, float]:
    ratings: dict[str, float] = {}
    for value in values:
        item_id, sep, stars = value.partition("=")
        if not sep or not item_id:
            raise ValueError(f"--rate: expected ITEM_ID=STARS, got {value!r}")
        ratings[item_id] = parse_stars(stars)
    return ratings


def open_recommender(settings: Settings) -> Recommender:
    """Return a Recommender that overlays refolded users from Redis when a server responds."""
    import redis

    url = settings.redis_url or DEFAULT_REDIS_URL
    connection = redis.Redis.from_url(url, socket_connect_timeout=1)
    try:
        connection.ping()
    except redis.ConnectionError:
        connection = None
    return Recommender(settings, connection)


def print_items(items: list[Recommendation], as_json: bool) -> None:
    if as_json:
        print(json.dumps([
            {"item_id": r.item_id, "title": r.title, "genres": list(r.genres), "score": float(r.score)}
            for r in items
        ], indent=2))
        return
    print(f"{'#':>3}  {'item':>8}  {'score':>7}  {'title':<50}  genres")
    for rank, r in enumerate(items, start=1):
        title = (r.title or "")[:50]
        print(f"{rank:>3}  {r.item_id:>8}  {r.score:7.3f}  {title:<50}  {'|'.join(r.genres)}")


def run_recommend(args: argparse.Namespace, settings: Settings) -> int:
    if bool(args.user_id) == bool(args.rate):
        raise ValueError("give either USER_ID or at least one --rate ITEM_ID=STARS")
    recommender = open_recommender(settings)
    if args.user_id:
        items = recommender.recommend(args.user_id, n=args.n, genres=args.genre)
        if not items.personalised:
            print(f"note: user {args.user_id!r} not found in version {items.version} or Redis; "
                  "showing the non-personalised ranking", file=sys.stderr)
    else:
        items = recommender.recommend_for_ratings(parse_rate(args.rate), n=args.n, genres=args.genre)
        if items.ignored_item_ids:
            print(f"note: items not in version {items.version}, ignored: "
                  f"{', '.join(items.ignored_item_ids)}", file=sys.stderr)
    print_items(items, args.json)
    return 0


def run_similar(args: argparse.Namespace, settings: Settings) -> int:
    recommender = open_recommender(settings)
    print_items(recommender.similar_items(args.item_id, n=args.n), args.json)
    return 0
