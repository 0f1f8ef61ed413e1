"""`streamrec bench`: timings of every stage on synthetic data of the MovieLens-32M shape."""
