"""The blob memory budget: nets too big for the machine are refused from their shapes, with the
size they need, before the allocation that would not fit; ENGINE_MEMORY_LIMIT overrides it."""

import pytest

import engine
from engine import memory
from engine.blob import Blob
from engine.errors import CaffeError, MemoryLimitError
from engine.net import Net

NET = """
name: "big"
layer {{ name: "data" type: "Input" top: "x" input_param {{ shape {{ dim: 4 dim: {width} }} }} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "x" top: "y" inner_product_param {{ num_output: {outputs} }} }}
"""


def write(tmp_path, width=6, outputs=3):
    path = tmp_path / "net.prototxt"
    path.write_text(NET.format(width=width, outputs=outputs))
    return str(path)


@pytest.mark.parametrize("text, expected", [("123456", 123456), ("512K", 512 << 10), ("8G", 8 << 30),
                                            ("1.5t", int(1.5 * (1 << 40))), ("64MiB", 64 << 20),
                                            ("none", None)])
def test_parse_size(text, expected):
    assert memory.parse_size(text) == expected


@pytest.mark.parametrize("text", ["lots", "-1G", "0"])
def test_bad_limit_is_refused(text):
    with pytest.raises(MemoryLimitError, match="ENGINE_MEMORY_LIMIT"):
        memory.parse_size(text)


def test_huge_dimension_is_refused_before_allocating(tmp_path, monkeypatch):
    monkeypatch.delenv(memory.ENV, raising=False)
    path = write(tmp_path, width=2147483648)
    with pytest.raises(MemoryLimitError) as info:
        Net(path, engine.TEST)
    message = str(info.value)
    assert message.startswith(f"{path}:3: layer 'data' (Input): a blob of shape 4 x 2147483648 needs 64.0 GiB")
    assert "this machine's memory" in message and "ENGINE_MEMORY_LIMIT" in message
    assert "\n" not in message


def test_limit_counts_the_whole_net(tmp_path, monkeypatch):
    # Each blob alone fits 1 MiB; the layer's weights (3 x 20000) on top of its input do not.
    monkeypatch.setenv(memory.ENV, "1M")
    with pytest.raises(CaffeError, match=r"layer 'ip' \(InnerProduct\): .*with the net's blobs so far that is "
                                         r".*more than the 1\.0 MiB limit \(ENGINE_MEMORY_LIMIT\)"):
        Net(write(tmp_path, width=20000), engine.TEST)
    monkeypatch.setenv(memory.ENV, "10M")
    net = Net(write(tmp_path, width=20000), engine.TEST)
    assert net.params["ip"][0].shape == (3, 20000)


def test_env_var_overrides_and_none_turns_it_off(monkeypatch):
    monkeypatch.setenv(memory.ENV, "1K")
    with pytest.raises(MemoryLimitError, match="1.0 KiB limit"):
        Blob((1000,))
    monkeypatch.setenv(memory.ENV, "none")
    assert Blob((1000,)).count == 1000


def test_reshape_to_a_huge_shape_is_refused(monkeypatch):
    monkeypatch.setenv(memory.ENV, "1M")
    blob = Blob((10,))
    with pytest.raises(MemoryLimitError, match="shape 1000 x 1000"):
        blob.reshape((1000, 1000))
