"""ShuffleNet's ShuffleChannel (farmingyard/ShuffleNet).

The channels, read as a (group, channels / group) grid, are transposed:
top channel j * group + i is bottom channel i * (channels / group) + j.
The backward is the inverse permutation.
"""

from .base import Layer, register_layer


@register_layer
class ShuffleChannelLayer(Layer):
    type = "ShuffleChannel"
    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        self.group = self.param.shuffle_channel_param.group
        self.check(self.group > 0, "group must be greater than 0")

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        self.check(len(shape) >= 2, f"needs a bottom with a channel axis (num, channels, ...); got {shape}")
        self.check(shape[1] % self.group == 0,
                   f"Wrong group size: {shape[1]} channels do not split into {self.group} groups")
        top[0].reshape(shape)

    @staticmethod
    def _permute(source, target, rows):
        """target = source with its channels read as a (rows, channels / rows) grid, transposed."""
        num, channels = source.shape[:2]
        grid = source.reshape(num, rows, channels // rows, -1).swapaxes(1, 2)
        target[...] = grid.reshape(target.shape)  # a copy: safe in place

    def forward(self, bottom, top):
        self._permute(bottom[0].data, top[0].data, self.group)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            channels = bottom[0].shape[1]
            self._permute(top[0].diff, bottom[0].diff, channels // self.group)
