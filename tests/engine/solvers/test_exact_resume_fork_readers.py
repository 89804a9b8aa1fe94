"""Exact resume for the forks' data layers: SegNet's DenseImageData, HED's ImageLabelmapData and SSD's
AnnotatedData. A tiny net over a generated dataset, snapshotted and stepped on, is restored into a fresh
solver and stepped as far: the weights and the last batch equal the first solver's, bit for bit. Every
random draw of each reader is in play (shuffles at the list's wrap, crops, flips; SSD's distortion,
expansion, batch samples, interpolation choice and noise). The same restore with that layer's reader
state taken out of the .resume file must end elsewhere, so each test can fail."""

import json
from pathlib import Path

import cv2
import numpy as np

from engine import caffe_pb2
from engine.data.db import open_writer

BEFORE, AFTER = 3, 4  # 2-item batches over 5 items: the lists wrap (and reshuffle) on both sides of the snapshot


def solver_in(folder, net_text):
    from engine.solvers import get_solver
    from engine.solvers.netsetup import read_solver_param

    (folder / "net.prototxt").write_text(net_text)
    (folder / "solver.prototxt").write_text(
        'net: "net.prototxt" base_lr: 0.01 momentum: 0.9 weight_decay: 0.0005 lr_policy: "fixed" '
        'max_iter: 100 snapshot_prefix: "snap/run" random_seed: 3 solver_mode: CPU\n')
    (folder / "snap").mkdir(exist_ok=True)
    return get_solver(read_solver_param("solver.prototxt"))


def stop_readers(*solvers):
    for solver in solvers:
        for layer in solver.net.layers:
            if hasattr(layer, "stop"):
                layer.stop()


def outcome(solver):
    return ([blob.data.copy() for blob in solver.net.learnable_params],
            [solver.net.blobs[name].data.copy() for name in ("data", "label")])


def same(first, second):
    return all(a.shape == b.shape and np.array_equal(a, b) for a, b in zip(first[0] + first[1], second[0] + second[1]))


def check_exact_resume(folder, monkeypatch, net_text):
    monkeypatch.chdir(folder)
    solver = solver_in(folder, net_text)
    fresh = blind = None
    try:
        solver.step(BEFORE)
        _, state = solver.snapshot()
        solver.step(AFTER)
        expected = outcome(solver)
        stop_readers(solver)  # one process opens an LMDB once
        fresh = solver_in(folder, net_text)
        fresh.restore(state)
        fresh.step(AFTER)
        got = outcome(fresh)
        stop_readers(fresh)
        for mine, theirs in zip(expected[0] + expected[1], got[0] + got[1]):
            np.testing.assert_array_equal(mine, theirs)

        path = Path(f"{state}.resume")
        sidecar = json.loads(path.read_text(encoding="utf-8"))
        assert list(sidecar["readers"]) == ["train/data"]
        sidecar["readers"] = {}
        path.write_text(json.dumps(sidecar), encoding="utf-8")
        blind = solver_in(folder, net_text)
        blind.restore(state)
        blind.step(AFTER)
        assert not same(expected, outcome(blind)), "the reader's state made no difference: the test cannot fail"
    finally:
        stop_readers(solver, *[s for s in (fresh, blind) if s is not None])


def pair_list(folder, label_values, count=5, size=(8, 10)):
    """`count` colour PNGs and one-channel label PNGs (values from `label_values`), listed in list.txt."""
    rng = np.random.default_rng(4)
    lines = []
    for index in range(count):
        cv2.imwrite(str(folder / f"img{index}.png"), rng.integers(0, 256, size + (3,), dtype=np.uint8))
        cv2.imwrite(str(folder / f"lab{index}.png"), rng.choice(label_values, size).astype(np.uint8))
        lines.append(f"img{index}.png lab{index}.png")
    (folder / "list.txt").write_text("\n".join(lines) + "\n")


def conv(num_output):
    return (f'layer {{ name: "score" type: "Convolution" bottom: "data" top: "score" convolution_param {{ '
            f'num_output: {num_output} kernel_size: 3 pad: 1 weight_filler {{ type: "gaussian" std: 0.1 }} }} }}')


def test_dense_image_data_resumes_its_shuffled_list_crops_and_flips(tmp_path, monkeypatch):
    pair_list(tmp_path, [0, 1, 2])
    check_exact_resume(tmp_path, monkeypatch, f"""
    layer {{ name: "data" type: "DenseImageData" top: "data" top: "label"
             transform_param {{ scale: 0.0039 }}
             dense_image_data_param {{ source: "{tmp_path}/list.txt" root_folder: "{tmp_path}/" batch_size: 2
                                      shuffle: true mirror: true crop_height: 6 crop_width: 7 }} }}
    {conv(3)}
    layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss" }}
    """)


def test_image_labelmap_data_resumes_its_shuffled_list_crops_and_flips(tmp_path, monkeypatch):
    pair_list(tmp_path, [0, 255])
    check_exact_resume(tmp_path, monkeypatch, f"""
    layer {{ name: "data" type: "ImageLabelmapData" top: "data" top: "label"
             transform_param {{ mirror: true crop_size: 6 mean_value: 100 scale: 0.0039 }}
             image_data_param {{ source: "{tmp_path}/list.txt" root_folder: "{tmp_path}/" batch_size: 2
                                 shuffle: true }} }}
    {conv(1)}
    layer {{ name: "loss" type: "SigmoidCrossEntropyLoss" bottom: "score" bottom: "label" top: "loss" }}
    """)


def annotated_db(path, count=5):
    """`count` 20 x 30 BGR images, each with two boxes, as AnnotatedDatum records in an LMDB."""
    rng = np.random.default_rng(6)
    with open_writer(str(path), "lmdb") as writer:
        for index in range(count):
            anno = caffe_pb2.AnnotatedDatum(type=caffe_pb2.AnnotatedDatum.BBOX)
            pixels = rng.integers(0, 256, (3, 20, 30), dtype=np.uint8)
            anno.datum.channels, anno.datum.height, anno.datum.width = pixels.shape
            anno.datum.data = pixels.tobytes()
            for label in (1, 2):
                group = anno.annotation_group.add(group_label=label)
                xmin, ymin = rng.uniform(0, 0.5, 2)
                box = group.annotation.add(instance_id=0).bbox
                box.xmin, box.ymin, box.xmax, box.ymax = xmin, ymin, xmin + 0.4, ymin + 0.4
            writer.put(f"{index:08d}", anno.SerializeToString())


def test_annotated_data_resumes_its_records_and_every_ssd_draw(tmp_path, monkeypatch):
    annotated_db(tmp_path / "db")
    sampler = ("batch_sampler {{ sampler {{ min_scale: 0.3 max_scale: 1 min_aspect_ratio: 0.5 max_aspect_ratio: 2 }} "
               "sample_constraint {{ min_jaccard_overlap: {} }} max_trials: 50 max_sample: 1 }}")
    check_exact_resume(tmp_path, monkeypatch, f"""
    layer {{ name: "data" type: "AnnotatedData" top: "data" top: "label"
             transform_param {{
               mirror: true mean_value: 104 mean_value: 117 mean_value: 123
               resize_param {{ prob: 1 resize_mode: WARP height: 12 width: 12
                               interp_mode: LINEAR interp_mode: NEAREST interp_mode: AREA }}
               distort_param {{ brightness_prob: 0.5 brightness_delta: 32 contrast_prob: 0.5 contrast_lower: 0.5
                                contrast_upper: 1.5 hue_prob: 0.5 hue_delta: 18 saturation_prob: 0.5
                                saturation_lower: 0.5 saturation_upper: 1.5 random_order_prob: 0.5 }}
               expand_param {{ prob: 0.5 max_expand_ratio: 3 }}
               noise_param {{ saltpepper: true saltpepper_param {{ fraction: 0.05 value: 0 }} }}
               emit_constraint {{ emit_type: CENTER }} }}
             data_param {{ source: "{tmp_path}/db" batch_size: 2 backend: LMDB }}
             annotated_data_param {{ {sampler.format(0.1)} {sampler.format(0.5)} {sampler.format(0.9)} }} }}
    {conv(2)}
    layer {{ name: "loss" type: "Reduction" bottom: "score" top: "loss" loss_weight: 1
             reduction_param {{ operation: SUMSQ coeff: 0.0001 }} }}
    """)
