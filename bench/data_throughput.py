#!/usr/bin/env python3
"""Images per second through the Data layer and its transform, CaffeNet style.

Builds two small LMDBs in a temporary folder, 256 x 256 colour images as
encoded JPEG Datum records and as raw Datum records, and times a TRAIN-phase
Data layer reading them with CaffeNet's transform (random 227 crop, mirror,
mean file). Prints one row per kind of record.

    python3 bench/data_throughput.py [--images 256] [--batch 64] [--batches 20]
                                     [--net-rate IMAGES_PER_S]

The same run also times CaffeNet's training step (batch 16, 227 x 227, the
zoo's net made trainable as in cpu_train_step.py) to get the images per second
training consumes; `keeps_up` says whether the data layer can feed it (see
`compare_with_net`). `--net-rate` gives that rate instead of measuring it.
"""

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from engine import caffe_pb2, formats  # noqa: E402
from engine.blob import Blob  # noqa: E402
from engine.data.datum import array_to_datum, encoded_datum  # noqa: E402
from engine.data.db import open_writer  # noqa: E402
from engine.layers import layer_class  # noqa: E402

SIZE, CROP = 256, 227


def make_db(path, count, encoded, rng):
    with open_writer(path, "lmdb") as writer:
        for index in range(count):
            # Smooth random images compress like photographs, unlike white noise.
            small = rng.integers(0, 256, (SIZE // 8, SIZE // 8, 3), dtype=np.uint8)
            rgb = np.asarray(Image.fromarray(small).resize((SIZE, SIZE), Image.BILINEAR))
            if encoded:
                buffer = io.BytesIO()
                Image.fromarray(rgb).save(buffer, "JPEG", quality=90)
                datum = encoded_datum(buffer.getvalue(), index % 1000)
            else:
                datum = array_to_datum(np.ascontiguousarray(rgb[..., ::-1].transpose(2, 0, 1)), index % 1000)
            writer.put(f"{index:08d}", datum.SerializeToString())


def time_layer(db, mean_file, batch, batches):
    """Images per second over `batches` forwards, after one warm-up batch."""
    text = (f'name: "data" type: "Data" top: "data" top: "label" phase: TRAIN '
            f'transform_param {{ crop_size: {CROP} mirror: true mean_file: "{mean_file}" }} '
            f'data_param {{ source: "{db}" batch_size: {batch} backend: LMDB }}')
    param = formats.parse_text(text, caffe_pb2.LayerParameter())
    layer = layer_class("Data")(param)
    top = [Blob(), Blob()]
    layer.set_up([], top)
    try:
        layer.run_forward([], top)
        start = time.perf_counter()
        for _ in range(batches):
            layer.run_forward([], top)
        elapsed = time.perf_counter() - start
    finally:
        layer.stop()
    return batch * batches / elapsed


def compare_with_net(images_per_s, net_images_per_s):
    """(ratio, keeps_up): how many times faster the data layer is than the net consumes."""
    ratio = images_per_s / net_images_per_s
    return ratio, ratio >= 1.0


def caffenet_images_per_s(batch=16, steps=3):
    """Images/s a CaffeNet SGD training step (forward, backward, update) consumes here."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import engine
    from bench_nets import init_weights, make_inputs, training_param

    param, _ = training_param("caffenet")
    net = engine.Net(param, engine.TRAIN)
    init_weights(net)
    net.forward(**make_inputs(net, param))

    def step():
        net.clear_param_diffs()
        net.forward_backward()
        for blob in net.learnable_params:  # a plain SGD update at a small rate
            blob.data[...] -= np.float32(1e-4) * blob.diff

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - start)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256, help="records per database")
    parser.add_argument("--batch", type=int, default=64, help="batch size")
    parser.add_argument("--batches", type=int, default=20, help="timed batches")
    parser.add_argument("--net-rate", type=float, default=None,
                        help="images/s a net (CaffeNet) consumes, for the keeps_up column")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="data-bench-") as folder:
        folder = Path(folder)
        mean = np.full((1, 3, SIZE, SIZE), 110, dtype=np.float32)
        formats.write_binary(folder / "mean.binaryproto", formats.array_to_blobproto(mean))
        rows = []
        for name, encoded in (("encoded JPEG", True), ("raw Datum", False)):
            db = folder / name.replace(" ", "_")
            make_db(db, args.images, encoded, rng)
            rows.append((name, time_layer(db, folder / "mean.binaryproto", args.batch, args.batches)))
    header = f"{'records':<14}{'images/s':>10}"
    if not args.net_rate:
        args.net_rate = caffenet_images_per_s()
        print(f"CaffeNet training (batch 16, 227x227) consumes {args.net_rate:.1f} images/s here")
    if args.net_rate:
        header += f"{'x net':>8}{'keeps_up':>10}"
    print(f"256x256 -> {CROP} random crop, mirror, mean file; batch {args.batch}")
    print(header)
    for name, rate in rows:
        line = f"{name:<14}{rate:>10.0f}"
        if args.net_rate:
            ratio, keeps_up = compare_with_net(rate, args.net_rate)
            line += f"{ratio:>8.2f}{str(keeps_up):>10}"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
