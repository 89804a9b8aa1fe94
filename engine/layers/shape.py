"""Layers that rearrange blobs without arithmetic: Concat, Slice, Flatten, Reshape, Tile.

Flatten and Reshape change only the shape: their top shares the bottom's data
and diff storage, as in Caffe, so forward and backward copy nothing. Concat
and Slice with a single top or bottom share storage the same way.
"""

from ..backend import get_array_module
from .base import Layer, register_layer


def _legacy_axis(layer, bottom, p, axis_field, legacy_field):
    """Axis from `axis` or its non-negative legacy alias (concat_dim, slice_dim)."""
    if p.HasField(legacy_field):
        layer.check(not p.HasField(axis_field),
                    f"Either {axis_field} or {legacy_field} should be specified; not both.")
        axis = getattr(p, legacy_field)
        layer.check(axis < bottom.num_axes, f"{legacy_field} out of range: {axis} for a {bottom.num_axes}-axis "
                                            f"blob {bottom.shape}")
        return axis
    return _axis(layer, bottom, getattr(p, axis_field))


def _axis(layer, blob, axis):
    """Caffe's CanonicalAxisIndex, failing with the layer's name."""
    try:
        return blob.canonical_axis(axis)
    except IndexError as exc:
        raise layer.error(str(exc)) from None


def _share(top, bottom):
    top.share_data(bottom)
    top.share_diff(bottom)


@register_layer
class ConcatLayer(Layer):
    type = "Concat"
    min_bottom_blobs = 1
    exact_num_top_blobs = 1

    def reshape(self, bottom, top):
        p = self.param.concat_param
        self.axis = _legacy_axis(self, bottom[0], p, "axis", "concat_dim")
        shape = list(bottom[0].shape)
        for index, blob in enumerate(bottom[1:], 1):
            self.check(blob.num_axes == bottom[0].num_axes,
                       f"All inputs must have the same #axes: bottom[{index}] {blob.shape} vs bottom[0] "
                       f"{bottom[0].shape}")
            for axis, (a, b) in enumerate(zip(blob.shape, bottom[0].shape)):
                self.check(axis == self.axis or a == b,
                           f"All inputs must have the same shape, except at concat_axis: bottom[{index}] "
                           f"{blob.shape} vs bottom[0] {bottom[0].shape} (concat axis {self.axis})")
            shape[self.axis] += blob.shape[self.axis]
        top[0].reshape(shape)
        if len(bottom) == 1:
            _share(top[0], bottom[0])

    def forward(self, bottom, top):
        if len(bottom) > 1:
            xp = get_array_module(top[0].data)
            xp.concatenate([b.data for b in bottom], axis=self.axis, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if len(bottom) == 1:
            return
        start = 0
        index = [slice(None)] * self.axis
        for blob, down in zip(bottom, propagate_down):
            size = blob.shape[self.axis]
            if down:
                blob.diff[...] = top[0].diff[tuple(index + [slice(start, start + size)])]
            start += size


@register_layer
class SliceLayer(Layer):
    type = "Slice"
    exact_num_bottom_blobs = 1
    min_top_blobs = 1

    def reshape(self, bottom, top):
        p = self.param.slice_param
        self.axis = _legacy_axis(self, bottom[0], p, "axis", "slice_dim")
        length = bottom[0].shape[self.axis]
        points = list(p.slice_point)
        if points:
            self.check(len(points) == len(top) - 1,
                       f"{len(points)} slice_point(s) given for {len(top)} tops: need one fewer than the tops")
            self.check(len(top) <= length, f"{len(top)} tops cannot slice an axis of size {length}")
            bounds = [0] + points + [length]
            for lo, hi in zip(bounds, bounds[1:]):
                self.check(hi > lo, f"slice points must increase and lie inside the axis (size {length}): "
                                    f"{points}")
        else:
            self.check(length % len(top) == 0,
                       f"Number of top blobs ({len(top)}) should evenly divide input slice axis ({length})")
            step = length // len(top)
            bounds = [i * step for i in range(len(top) + 1)]
        self.bounds = list(zip(bounds, bounds[1:]))
        for blob, (lo, hi) in zip(top, self.bounds):
            shape = list(bottom[0].shape)
            shape[self.axis] = hi - lo
            blob.reshape(shape)
        if len(top) == 1:
            _share(top[0], bottom[0])

    def _part(self, array, lo, hi):
        return array[(slice(None),) * self.axis + (slice(lo, hi),)]

    def forward(self, bottom, top):
        if len(top) == 1:
            return
        for blob, (lo, hi) in zip(top, self.bounds):
            blob.data[...] = self._part(bottom[0].data, lo, hi)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0] or len(top) == 1:
            return
        for blob, (lo, hi) in zip(top, self.bounds):
            self._part(bottom[0].diff, lo, hi)[...] = blob.diff


@register_layer
class FlattenLayer(Layer):
    """Merges axes axis..end_axis into one; the top shares the bottom's storage."""

    type = "Flatten"
    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        self.check(top[0] is not bottom[0], "Flatten layer does not allow in-place computation.")

    def reshape(self, bottom, top):
        p = self.param.flatten_param
        start = _axis(self, bottom[0], p.axis)
        end = _axis(self, bottom[0], p.end_axis)
        shape = bottom[0].shape
        top[0].reshape(shape[:start] + (bottom[0].count_range(start, end + 1),) + shape[end + 1:])
        _share(top[0], bottom[0])

    def forward(self, bottom, top):
        """The top already shares the bottom's data."""

    def backward(self, top, propagate_down, bottom):
        """The bottom already shares the top's diff."""


@register_layer
class ReshapeLayer(Layer):
    """Caffe's Reshape: `shape` replaces axes [axis, axis + num_axes) of the bottom.

    In `shape`, 0 copies the bottom's dimension at the same position and a
    single -1 is inferred from the count. The top shares the bottom's storage.
    """

    type = "Reshape"
    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        self.check(top[0] is not bottom[0], "Reshape layer does not allow in-place computation.")
        dims = list(self.param.reshape_param.shape.dim)
        self.copy_axes = [i for i, d in enumerate(dims) if d == 0]
        inferred = [i for i, d in enumerate(dims) if d == -1]
        self.check(len(inferred) <= 1, "new shape contains multiple -1 dims; at most a single (1) value of -1 "
                                       f"may be specified (shape {dims})")
        self.check(all(d >= -1 for d in dims), f"new shape dimensions must be -1, 0 or positive (shape {dims})")
        self.inferred_axis = inferred[0] if inferred else None
        self.constant_count = 1
        for d in dims:
            if d > 0:
                self.constant_count *= d

    def reshape(self, bottom, top):
        p = self.param.reshape_param
        dims = list(p.shape.dim)
        n = bottom[0].num_axes
        start = p.axis if p.axis >= 0 else n + p.axis + 1
        self.check(0 <= start <= n, f"axis {p.axis} out of range for {n}-D input blob")
        self.check(p.num_axes >= -1, "num_axes must be >= 0, or -1 for all")
        end = n if p.num_axes == -1 else start + p.num_axes
        self.check(end <= n, f"end_axis = axis + num_axes is out of range ({start} + {p.num_axes} > {n})")
        old = bottom[0].shape
        shape = list(old[:start]) + dims + list(old[end:])
        for i in self.copy_axes:
            self.check(start + i < n, "new shape contains a 0, but there was no corresponding bottom axis "
                                      f"to copy (position {i} from axis {start}, bottom {old})")
            shape[start + i] = old[start + i]
        if self.inferred_axis is not None:
            explicit = self.constant_count * bottom[0].count_range(0, start) * bottom[0].count_range(end)
            for i in self.copy_axes:
                explicit *= shape[start + i]
            self.check(explicit != 0 and bottom[0].count % explicit == 0,
                       f"bottom count ({bottom[0].count}) must be divisible by the product of the specified "
                       f"dimensions ({explicit})")
            shape[start + self.inferred_axis] = bottom[0].count // explicit
        count = 1
        for d in shape:
            count *= d
        self.check(count == bottom[0].count, f"output count must match input count: bottom {old} "
                                             f"({bottom[0].count}), top {tuple(shape)} ({count})")
        top[0].reshape(shape)
        _share(top[0], bottom[0])

    def forward(self, bottom, top):
        """The top already shares the bottom's data."""

    def backward(self, top, propagate_down, bottom):
        """The bottom already shares the top's diff."""


@register_layer
class TileLayer(Layer):
    """Repeats the block of axes axis.. `tiles` times along `axis`."""

    type = "Tile"
    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        self.check(top[0] is not bottom[0], "Tile layer does not allow in-place computation.")

    def reshape(self, bottom, top):
        p = self.param.tile_param
        self.axis = _axis(self, bottom[0], p.axis)
        self.check(p.HasField("tiles"), "Number of tiles must be specified")
        self.check(p.tiles > 0, f"Number of tiles must be positive, got {p.tiles}")
        self.tiles = p.tiles
        shape = list(bottom[0].shape)
        shape[self.axis] *= self.tiles
        top[0].reshape(shape)
        self.outer = bottom[0].count_range(0, self.axis)
        self.inner = bottom[0].count_range(self.axis)

    def forward(self, bottom, top):
        x = bottom[0].data.reshape(self.outer, 1, self.inner)
        top[0].data.reshape(self.outer, self.tiles, self.inner)[...] = x

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            dy = top[0].diff.reshape(self.outer, self.tiles, self.inner)
            bottom[0].diff.reshape(self.outer, self.inner)[...] = dy.sum(axis=1)
