"""Split: hands one blob to several consumers and sums their gradients.

The net inserts these itself (netgraph.insert_splits); users rarely write one.
"""

from .base import Layer, register_layer


@register_layer
class SplitLayer(Layer):
    type = "Split"
    exact_num_bottom_blobs = 1
    min_top_blobs = 1

    def reshape(self, bottom, top):
        for blob in top:
            blob.reshape(bottom[0].shape)
            # Every top reads the bottom's values; only diffs are separate.
            blob.share_data(bottom[0])

    def forward(self, bottom, top):
        """Tops share the bottom's data; nothing to copy."""

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        diff = bottom[0].diff
        diff[...] = top[0].diff
        for blob in top[1:]:
            diff += blob.diff
