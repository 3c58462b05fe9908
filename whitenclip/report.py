"""Deprecated: the Gaussianity report's rendering moved to :mod:`whitenclip.render.gaussianity`."""

from whitenclip.render.gaussianity import make_figures, render_terminal, write_html_report  # noqa: F401
