"""The zoo table for the README: input size, parameters and multiply-accumulates of each deploy net."""

from pathlib import Path

ZOO_TITLES = {"lenet": "LeNet (Caffe's MNIST example)"}


def deploy_stats(path):
    """(input shape, params, learned params, MACs per image) of a deploy prototxt, from engine.summary.

    engine.summary counts every parameter blob, BatchNorm's running
    statistics included; the learned count leaves those out, as papers do.
    """
    from engine import formats, summary
    from engine.net import TEST, Net

    param = formats.read_net(str(path))
    param.layer[0].input_param.shape[0].dim[0] = 1  # sizes per image; a batch of one is cheaper to build
    net = Net(param, TEST)
    _, params, macs = summary.summarize(net)
    learned = sum(blob.count for name, blobs in net.params.items() if net.layer_dict[name].type != "BatchNorm"
                  for blob in blobs)
    return net.blobs[net.inputs[0]].shape, params, learned, macs


def _count(count):
    return f"{count:,} ({count / 1e6:.1f}M)" if count >= 1e6 else f"{count:,}"


def _macs(count):
    if count >= 1e9:
        return f"{count / 1e9:.2f}G"
    return f"{count / 1e6:.1f}M"


def zoo_table(names, root):
    """Markdown rows: LeNet first (when its deploy net exists), then the zoo nets in `names`."""
    from engine import zoo

    rows = ["| net | follows | input (C x H x W) | parameters | learned | MACs / image | train |",
            "|---|---|---|---:|---:|---:|---|"]
    entries = [("lenet", ZOO_TITLES["lenet"])] + [(name, zoo.get(name).title) for name in names]
    for name, title in entries:
        path = Path(root) / "nets" / name / "deploy.prototxt"
        if not path.exists():
            continue
        shape, params, learned, macs = deploy_stats(path)
        size = " x ".join(str(d) for d in shape[1:])
        rows.append(f"| {name} | {title} | {size} | {_count(params)} | {_count(learned)} | {_macs(macs)} "
                    f"| `tools/train --solver solvers/{name}.prototxt` |")
    return "\n".join(rows)
