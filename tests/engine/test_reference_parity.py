"""Parity with BVLC Caffe: every case in caffe-reference/layers and nets."""

import pytest
from reference import cases, run_case

CASES = cases("layers") + cases("nets")


@pytest.mark.parametrize("folder", CASES, ids=[f"{c.parent.name}/{c.name}" for c in CASES])
def test_matches_caffe(folder, mode):
    problems = run_case(folder)
    assert not problems, "\n".join(problems)
