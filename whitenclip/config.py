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

MAX_CAPTION_CHARS = 16384
"""Characters of a caption kept before tokenising: longer captions are cut here, with a one-line note
naming the file and row. Text models keep at most 77 (CLIP) to 512 (BERT-size ``hf:``/``st:``) tokens,
which ordinary text fits in a few thousand characters; a 40 MB caption no longer costs gigabytes in
the tokenizer."""

MAX_TOKENIZER_FILE_BYTES = 64 << 20
"""Largest tokenizer file of an ``hf:``/``st:`` model folder read (``tokenizer.json``, ``vocab.*``,
``merges.txt``, sentencepiece ``*.model``, ``tokenizer_config.json``...): 64 MiB, twice the largest
public vocabularies (Gemma / SigLIP 2's 256k-token ``tokenizer.json`` is ~34 MB). Larger files are
refused before loading (one line, exit 2): a 400 MB one took 9 GB of memory."""

MAX_CONFIG_FILE_BYTES = 16 << 20
"""Largest other JSON file of a model folder read (``config.json``, ``preprocessor_config.json``,
``modules.json``...): 16 MiB (real ones are kilobytes)."""
