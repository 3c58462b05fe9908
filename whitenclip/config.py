"""Sizes that trade memory for speed, in one place (every module reads them from here).

Each is a default: commands expose the ones a user may want to change (``--chunk-rows``,
``--shard-items``).
"""

CHUNK_ROWS = 16384
"""Rows read from an embeddings file and processed per chunk (fit, score, moments)."""

DIAGNOSTICS_CHUNK_ROWS = 8192
"""Rows per chunk in the Gaussianity report's passes over X (it holds a few (chunk, d) copies)."""

MARDIA_BLOCK = 1024
"""Rows per block of the (block, n) products in Mardia's skewness."""

SHARD_ITEMS = {"text": 4096, "image": 1024}
"""Input items per store shard written by ``embed`` (``--shard-items`` overrides)."""

CALIBRATION_ROWS = 5000
"""m, reference rows sampled for the conformal p-value (see whitening.DEFAULT_CALIBRATION_ROWS)."""

PIECE_ROWS = 1 << 20
"""Rows per piece of the sharded engine (one task): about 1M, 3 GB of float32 rows at d = 768."""

ENCODED_CHUNK_ITEMS = 4096
"""Raw items embedded per chunk when a command streams raw inputs without a store."""
