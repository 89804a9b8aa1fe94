"""Input: the net's entry blobs, shaped by input_param; filled by the user."""

from .base import Layer, register_layer


@register_layer
class InputLayer(Layer):
    type = "Input"
    exact_num_bottom_blobs = 0
    min_top_blobs = 1

    def setup(self, bottom, top):
        shapes = self.param.input_param.shape
        self.check(len(shapes) in (0, 1, len(top)),
                   f"input_param must give 0, 1 or {len(top)} shapes (one per top), got {len(shapes)}")
        if shapes:
            for index, blob in enumerate(top):
                shape = shapes[0] if len(shapes) == 1 else shapes[index]
                blob.reshape(tuple(shape.dim))

    def reshape(self, bottom, top):
        """Shapes change only when the user reshapes the blobs."""

    def forward(self, bottom, top):
        """The user wrote the data already."""
