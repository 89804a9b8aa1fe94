"""The zoo table for the README: input size, parameters and multiply-accumulates of each deploy net."""

from pathlib import Path

ZOO_TITLES = {"lenet": "LeNet (Caffe's MNIST example)"}


def deploy_stats(path):
    """(input shape, total params, MACs per image) of a deploy prototxt, from engine.summary."""
    from engine import summary
    from engine.net import TEST, Net

    net = Net(str(path), TEST)
    _, params, macs = summary.summarize(net)
    return net.blobs[net.inputs[0]].shape, params, macs


def _millions(count):
    return f"{count / 1e6:,.1f}M" if count >= 1e6 else f"{count:,}"


def zoo_table(names, root):
    """Markdown rows: LeNet first (when its deploy net exists), then the zoo nets in `names`."""
    import zoo

    rows = ["| net | follows | input (C x H x W) | parameters | MACs / image | train |",
            "|---|---|---|---:|---:|---|"]
    entries = [("lenet", ZOO_TITLES["lenet"])] + [(name, zoo.get(name).title) for name in names]
    for name, title in entries:
        path = Path(root) / "nets" / name / "deploy.prototxt"
        if not path.exists():
            continue
        shape, params, macs = deploy_stats(path)
        size = " x ".join(str(d) for d in shape[1:])
        rows.append(f"| {name} | {title} | {size} | {params:,} ({_millions(params)}) | {_millions(macs)} "
                    f"| `tools/train --solver solvers/{name}.prototxt` |")
    return "\n".join(rows)
