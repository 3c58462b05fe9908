"""TensorPreprocess.output_size against torchvision's Resize, as a property test.

Kept apart from test_decode.py so that file imports without hypothesis: the lent GPU machine's
image has none, and ``benchmarks/gpu_check.sh`` runs test_decode.py's ``gpu`` tests there.
"""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from whitenclip.encoders import TensorPreprocess


@settings(max_examples=100, deadline=None, derandomize=True)
@given(h=st.integers(1, 3000), w=st.integers(1, 3000), size=st.sampled_from([32, 224, 336]),
       max_size=st.sampled_from([None, 400]))
def test_output_size_is_torchvision_resize(h, w, size, max_size):
    from torchvision.transforms import functional as F

    if max_size is not None and max_size <= size:
        return
    p = TensorPreprocess(size, (size, size), (0.0,) * 3, (1.0,) * 3, max_size=max_size)
    expect = F.resize(torch.zeros(1, h, w), [size], max_size=max_size, antialias=False).shape[-2:]
    assert p.output_size(h, w) == tuple(expect)
