"""The typed co-culture benchmark's protocols (``bench/typed_cocultures.py``): what they score must be what
they say, on synthetic fields (the real ones are in ``../shared``)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.fixture(scope="module")
def bench():
    name = "typed_cocultures_bench"
    sys.path.insert(0, str(BENCH))  # for its _common
    try:
        spec = importlib.util.spec_from_file_location(name, BENCH / "typed_cocultures.py")
        module = sys.modules[name] = importlib.util.module_from_spec(spec)  # its dataclasses look it up
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCH))
        sys.modules.pop(name, None)


def field(bench, name, type_name, offset, seed):
    """A confluent field of round cells on a grid (manual masks), each with a round nucleus at its centre."""
    rng = np.random.default_rng(seed)
    shape = (160, 200)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    manual = np.zeros(shape, np.int32)
    nuclei = np.zeros(shape, np.int32)
    label = 0
    for cy in range(offset + 14, shape[0] - 14, 30):
        for cx in range(offset + 14, shape[1] - 14, 30):
            label += 1
            manual[(yy - cy) ** 2 + (xx - cx) ** 2 <= 13 ** 2] = label
            nuclei[(yy - cy) ** 2 + (xx - cx) ** 2 <= 5 ** 2] = label
    phase = (1000 + 300 * (manual > 0) + rng.normal(0, 10, shape)).astype(np.float32)
    stain = (100 + 900 * (nuclei > 0) + rng.normal(0, 5, shape)).astype(np.float32)
    return bench.Field(name, type_name, phase, stain, nuclei, manual > 0, manual.copy(), manual)


@pytest.mark.parametrize("pattern", ["half", "islands", "scatter", "minority"])
def test_whole_cell_mosaics_paste_every_scored_cell_whole(bench, pattern):
    a, b = field(bench, "a", "A", 0, 1), field(bench, "b", "B", 15, 2)  # b's cells overlap a's
    coculture = bench.compose_whole(a, b, pattern, "matched", np.random.default_rng(3))
    assert coculture.body_kept is None  # every scored cell is whole
    types = set(coculture.truth_types.values())
    assert "B" in types and (pattern == "minority" or "A" in types)  # a minority may lose all its cells here
    matched_b = bench._match(b.phase, b.foreground, a.phase, a.foreground)
    pasted = np.zeros(a.phase.shape, bool)
    for t, type_name in coculture.truth_types.items():
        source, phase = (a, a.phase) if type_name == "A" else (b, matched_b)
        nucleus = coculture.truth == t
        cell = source.manual == np.bincount(source.manual[nucleus]).argmax()
        assert not (pasted & cell).any()  # no two scored cells share a pixel
        pasted |= cell
        # the whole cell, nucleus included, is its field's, pixel for pixel
        np.testing.assert_array_equal(coculture.phase[cell], phase[cell])
        np.testing.assert_array_equal(coculture.stain[cell], source.stain[cell])
        assert nucleus.sum() == (source.nuclei == source.nuclei[nucleus][0]).sum()
    # nuclei shown but not scored (the cut ones) are marked to be left out of the counts
    shown = ((coculture.stain > 500) & (coculture.truth == 0))
    assert not (shown & ~coculture.ignore).any()
