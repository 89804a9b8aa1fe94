"""Winograd F(2x2, 3x3) and F(2x2, 5x5): moved into the engine (engine/winograd.py), which Convolution now uses.

Kept so that bench scripts importing `winograd` (conv_layout_timing.py) run unchanged.
"""

from engine.winograd import (WinogradConvolution, filter_transform, filter_transform_adjoint,  # noqa: F401
                             output_transform, output_transform_adjoint, supported)
