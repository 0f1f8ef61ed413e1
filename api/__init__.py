"""The query module: recommendations from the current snapshot and per-user data in Redis."""

from api.recommender import Recommender
from api.results import Recommendation, Recommendations

__all__ = ["Recommendation", "Recommendations", "Recommender"]
