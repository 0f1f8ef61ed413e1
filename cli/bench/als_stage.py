"""ALS epoch timings, each configuration in its own process so peak RSS is its own.

Run as `python -m cli.bench.als_stage DIR FACTORS GENRES EPOCHS`: reads the arrays that
save_arrays wrote to DIR, trains, and prints one JSON object.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np

import als
from cli.bench.data import SyntheticData

ARRAY_NAMES = ("user_idx", "item_idx", "rating", "genre_indptr", "genre_indices")


def save_arrays(data: SyntheticData, directory: Path) -> None:
    """Write the ratings and genres as .npy files plus their sizes, for the child processes."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in ARRAY_NAMES:
        np.save(directory / f"{name}.npy", getattr(data, name))
    sizes = {"n_users": data.n_users, "n_items": data.n_items, "n_genres": data.n_genres}
    (directory / "sizes.json").write_text(json.dumps(sizes))


def time_epochs(directory: Path, factors: int, use_genres: bool, epochs: int) -> dict:
    """Train in a child process; return its seconds per epoch and peak RSS in MB.

    Raises RuntimeError with the child's error output when it fails.
    """
    command = [
        sys.executable, "-m", "cli.bench.als_stage", str(directory), str(factors),
        "1" if use_genres else "0", str(epochs),
    ]
    finished = subprocess.run(command, capture_output=True, text=True)
    if finished.returncode != 0:
        raise RuntimeError(f"ALS timing failed factors={factors}: {finished.stderr[-2000:]}")
    return json.loads(finished.stdout.strip().splitlines()[-1])


def _run_in_child(directory: Path, factors: int, use_genres: bool, epochs: int) -> dict:
    sizes = json.loads((directory / "sizes.json").read_text())
    arrays = {name: np.load(directory / f"{name}.npy") for name in ARRAY_NAMES}
    matrix = als.build_rating_matrix(
        arrays["user_idx"], arrays["item_idx"], arrays["rating"], sizes["n_users"], sizes["n_items"]
    )
    genres = als.ItemGenres(arrays["genre_indptr"], arrays["genre_indices"], sizes["n_genres"])
    n_ratings = int(arrays["rating"].shape[0])
    del arrays

    config = als.ALSConfig(factors=factors, epochs=epochs, use_genres=use_genres)
    seconds: list[float] = []
    losses: list[float] = []

    def on_epoch(stats: als.EpochStats) -> None:
        seconds.append(stats.seconds)
        losses.append(stats.loss)

    als.train(matrix, genres, config, callback=on_epoch)
    # The first epoch also loads the compiled kernels from numba's cache; leave it out.
    steady = seconds[1:] if len(seconds) > 1 else seconds
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "ratings": n_ratings,
        "factors": factors,
        "genres": use_genres,
        "seconds_per_epoch": round(float(np.median(steady)), 3),
        "first_epoch_seconds": round(seconds[0], 3),
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "final_loss": round(losses[-1], 1),
    }


if __name__ == "__main__":
    directory, factors, genres, epochs = sys.argv[1:5]
    result = _run_in_child(Path(directory), int(factors), genres == "1", int(epochs))
    print(json.dumps(result))
