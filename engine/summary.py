"""A net's table of layers: top shapes, parameter counts and multiply-accumulates.

Parameter counts are what pycaffe's `net.params` holds (BatchNorm's stored
statistics included), each shared blob counted once. Multiply-accumulates are
counted for one image (the first axis of the tops is the batch) and for the
layers that dominate compute: convolution, deconvolution and inner products.
"""

from dataclasses import dataclass, field


@dataclass
class LayerRow:
    name: str
    type: str
    top_shapes: list = field(default_factory=list)
    params: int = 0
    macs: int = 0


def _macs(layer, bottoms, tops):
    if not len(layer.blobs) or not tops or not tops[0].num_axes:
        return 0
    weights = layer.blobs[0].count
    batch = tops[0].shape[0] or 1
    if layer.type == "Convolution":
        axis = layer.param.convolution_param.axis
        channels = tops[0].shape[axis] or 1
        return tops[0].count // batch // channels * weights
    if layer.type == "Deconvolution":
        axis = layer.param.convolution_param.axis
        channels = bottoms[0].shape[axis] or 1
        return bottoms[0].count // batch // channels * weights
    if layer.type == "InnerProduct":
        return tops[0].count // batch * bottoms[0].count_range(bottoms[0].canonical_axis(
            layer.param.inner_product_param.axis))
    return 0


def summarize(net):
    """Rows for every layer, then (total params, total MACs per image)."""
    seen = set()
    rows = []
    for index, layer in enumerate(net.layers):
        bottoms, tops = net.bottom_blobs(index), net.top_blobs(index)
        params = 0
        for blob in layer.blobs:
            key = id(blob._data)
            if key not in seen:
                seen.add(key)
                params += blob.count
        rows.append(LayerRow(layer.name, layer.type, [t.shape for t in tops], params,
                             _macs(layer, bottoms, tops)))
    return rows, sum(r.params for r in rows), sum(r.macs for r in rows)


def format_shape(shape):
    return "x".join(str(d) for d in shape) if shape else "scalar"


def format_table(rows, total_params, total_macs):
    header = ("layer", "type", "top shapes", "params", "MACs/image")
    table = [header] + [(r.name, r.type, ", ".join(format_shape(s) for s in r.top_shapes),
                         f"{r.params:,}", f"{r.macs:,}") for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = []
    for n, row in enumerate(table):
        cells = [row[i].ljust(widths[i]) if i < 3 else row[i].rjust(widths[i]) for i in range(len(row))]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append(f"Total MACs per image: {total_macs:,}")
    lines.append(f"Total params: {total_params:,}")
    return "\n".join(lines)
