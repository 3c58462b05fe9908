"""whitenclip command line: parse arguments, call the library, render. Nothing else.

Data goes to stdout, logs and progress to stderr. Exit codes: 0 ok, 1 runtime failure,
2 usage or bad input (one-line message naming the file and row; ``--debug`` for a traceback).

The app and its shared manners are in :mod:`whitenclip.cli.base`, the shared options in
:mod:`~whitenclip.cli.options` and :mod:`~whitenclip.cli.reading`, each family of commands in a module
of its own; this module registers the commands on the app, in the order ``whitenclip --help`` lists them.
"""

from __future__ import annotations

from whitenclip.cli.base import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, MAX_SKIP_WARNINGS, app, main, out_of_memory_hint
from whitenclip.cli.comparison import compare
from whitenclip.cli.embedding import embed
from whitenclip.cli.fitting import fit, import_wclip_cmd, merge_moments_cmd, moments
from whitenclip.cli.information import entropy, mi
from whitenclip.cli.reports import gaussianity_report_cmd, info
from whitenclip.cli.scoring import score
from whitenclip.cli.simulation import simulate

# The commands, in the order `whitenclip --help` lists them (typer keeps the order of registration).
app.command()(fit)
app.command()(embed)
app.command()(score)
app.command()(info)
app.command("import-wclip")(import_wclip_cmd)
app.command("gaussianity-report")(gaussianity_report_cmd)
app.command()(moments)
app.command("merge-moments")(merge_moments_cmd)
app.command()(entropy)
app.command()(mi)
app.command()(simulate)
app.command()(compare)

__all__ = [
    "EXIT_FAILURE", "EXIT_OK", "EXIT_USAGE", "MAX_SKIP_WARNINGS", "app", "compare", "embed", "entropy", "fit",
    "gaussianity_report_cmd", "import_wclip_cmd", "info", "main", "merge_moments_cmd", "mi", "moments",
    "out_of_memory_hint", "score", "simulate",
]
