"""Result models of the query module: ranked items and how each ranking was personalised."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# Origin of a ranking's user vector.
UserSource = Literal["refolded", "snapshot", "ratings", "none"]


class Recommendation(BaseModel):
    """One ranked item."""

    model_config = ConfigDict(frozen=True)

    item_id: str
    title: str
    genres: list[str]
    score: float = Field(
        description="Ranking score, higher is better. For recommendations it is b_m + c_n + u_m.v_n "
        "(unclipped, without the global mean); for similar items the cosine similarity."
    )


class Recommendations(BaseModel):
    """A ranked list for one query and how it was personalised. Iterating yields the items."""

    model_config = ConfigDict(frozen=True)

    items: list[Recommendation]
    personalised: bool = Field(
        description="False when nothing was known about the user, so items are ranked by item "
        "bias alone (the same list for everyone)."
    )
    source: UserSource = Field(
        description="refolded: the user's state in Redis; snapshot: the user's trained row; "
        "ratings: folded in from the ratings given; none: not personalised."
    )
    version: int = Field(description="Snapshot version the ranking was computed from.")
    ignored_item_ids: list[str] = Field(
        default_factory=list,
        description="Rated item ids the snapshot does not contain, left out of the fold-in.",
    )

    def __iter__(self) -> Iterator[Recommendation]:  # type: ignore[override]
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, position: int) -> Recommendation:
        return self.items[position]

    @property
    def item_ids(self) -> list[str]:
        """The ranked item ids, best first."""
        return [item.item_id for item in self.items]
