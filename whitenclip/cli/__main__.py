"""``python -m whitenclip.cli``: the console script, run from the source tree."""

from __future__ import annotations

from whitenclip.cli.base import main

if __name__ == "__main__":
    main()
