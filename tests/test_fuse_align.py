"""Time alignment (nearest, mean pooling), fill policies and grids on hand-made timestamps."""

from __future__ import annotations

import numpy as np
import pytest

from fuse.data.align import Grid, align_mean, align_nearest
from fuse.data.fill import apply_fill, fill_hold, fill_nearest, fill_zero
from fuse.data.grid import FrameClock, GridNotes, GridSpec, fixed_grid, frame_grid, reference_clock
from fuse.errors import DataError


def rows(values, times, mask=None):
    data = np.asarray(values, np.float16).reshape(len(values), -1)
    t = np.asarray(times, np.float64)
    m = np.ones(len(t), bool) if mask is None else np.asarray(mask, bool)
    return data, t, m


def test_grid_edges_are_midpoints():
    g = Grid.from_times(np.array([0.0, 1.0, 3.0]))
    np.testing.assert_allclose(g.edges, [-0.5, 0.5, 2.0, 4.0])


def test_nearest_on_irregular_timestamps():
    data, t, m = rows([10, 11, 12, 13, 14], [0.0, 0.1, 0.25, 0.7, 0.71])
    grid = Grid.from_times(np.array([0.0, 0.05, 0.2, 0.5, 0.704, 1.0]))
    out = align_nearest(data, t, m, grid)
    # 0.05 is a tie between rows 0 and 1 -> the earlier; 0.2 -> 0.25; 0.5 -> 0.7; 0.704 -> 0.7
    np.testing.assert_array_equal(out.values[:, 0], [10, 10, 12, 13, 13, 14])
    # 0.5 lies in a gap (0.2 s from the nearest row) and 1.0 past the last row: more than half
    # the median row step (0.125 / 2) from any row, so both are invalid
    np.testing.assert_array_equal(out.valid, [True, True, True, False, True, False])


def test_nearest_carries_the_row_mask():
    data, t, m = rows([1, 2, 3], [0.0, 1.0, 2.0], [True, False, True])
    out = align_nearest(data, t, m, Grid.from_times(np.array([0.1, 0.9, 2.1])))
    np.testing.assert_array_equal(out.valid, [True, False, True])


def test_mean_pools_valid_rows_inside_each_step():
    data, t, m = rows([1, 2, 3, 4, 5, 6], [0.0, 0.02, 0.04, 0.06, 0.08, 0.10],
                      [True, True, False, True, True, True])
    out = align_mean(data, t, m, Grid.from_times(np.array([0.0, 0.05, 0.10])))
    # edges -0.025 | 0.025 | 0.075 | 0.125: {1, 2}, {4} (3 is invalid), {5, 6}
    np.testing.assert_allclose(out.values[:, 0], [1.5, 4.0, 5.5])
    assert out.valid.all()


def test_mean_step_with_only_invalid_rows_is_invalid_and_empty_step_takes_nearest():
    data, t, m = rows([1, 2, 3], [0.0, 1.0, 2.0], [True, False, True])
    grid = Grid.from_times(np.array([0.0, 0.5, 1.0, 1.5, 2.0]))  # edges every 0.5 around
    out = align_mean(data, t, m, grid)
    # step 0.5 covers [0.25, 0.75): no row at all -> nearest row (0.0 and 1.0 tie: 0.0)
    # step 1.0 covers [0.75, 1.25): only the invalid row -> invalid
    np.testing.assert_allclose(out.values[[0, 1, 3, 4], 0], [1, 1, 2, 3])
    np.testing.assert_array_equal(out.valid, [True, True, False, False, True])


def test_mean_of_a_fast_feature_on_a_slower_grid():
    # 100 Hz rows whose value is their time; 25 Hz grid -> each step's mean is its centre
    t = np.arange(200) / 100
    data = t.astype(np.float16)[:, None]
    grid = fixed_grid(0.0, 1.99, GridSpec("rate", 25.0))
    out = align_mean(data, t, np.ones(200, bool), grid)
    np.testing.assert_allclose(out.values[:, 0], grid.times, atol=0.01)


def test_alignment_follows_timestamps_not_row_positions():
    data, t, m = rows([1, 2, 3, 4], [0.0, 1.0, 2.0, 3.0])
    grid = Grid.from_times(np.array([0.0, 1.0, 2.0, 3.0]))
    shifted = align_nearest(data, t + 2.0, m, grid)  # same rows, starting 2 s later
    np.testing.assert_array_equal(shifted.values[:, 0], [1, 1, 1, 2])
    # steps before the feature's span (first row at 2 s, half a row step = 0.5 s) are invalid
    np.testing.assert_array_equal(shifted.valid, [False, False, True, True])


def test_fill_policies():
    valid = np.array([False, True, False, False, True, False])
    times = np.arange(6.0)
    np.testing.assert_array_equal(fill_nearest(valid, times), [1, 1, 1, 4, 4, 4])
    np.testing.assert_array_equal(fill_hold(valid, times), [1, 1, 1, 1, 4, 4])
    np.testing.assert_array_equal(fill_zero(valid, times), [-1, 1, -1, -1, 4, -1])


def test_fill_nearest_uses_time_not_index():
    valid = np.array([True, False, False, False, True])
    times = np.array([0.0, 1.0, 1.1, 3.0, 3.05])
    np.testing.assert_array_equal(fill_nearest(valid, times), [0, 0, 0, 4, 4])


@pytest.mark.parametrize(("policy", "expected"), [
    ("nearest", [5, 5, 5, 7, 7]), ("hold", [5, 5, 5, 5, 7]), ("zero", [0, 5, 0, 0, 7])])
def test_apply_fill_in_place(policy, expected):
    values = np.array([[9.0], [5.0], [9.0], [9.0], [7.0]])
    apply_fill(values, np.array([False, True, False, False, True]), np.arange(5.0), policy)
    np.testing.assert_array_equal(values[:, 0], expected)


def test_fill_with_no_valid_step_gives_zeros():
    values = np.ones((3, 2))
    apply_fill(values, np.zeros(3, bool), np.arange(3.0), "nearest")
    assert not values.any()


def test_reference_clock_from_frame_attributes():
    t = np.array([0.0, 0.04, 0.08, 0.12])  # one row per frame of a 25 fps video
    clock = reference_clock("v", {"frame_rows": "all", "source_frames": 4}, t)
    assert clock.known and len(clock.times) == 4
    np.testing.assert_allclose(clock.extended(6), [0.0, 0.04, 0.08, 0.12, 0.16, 0.20])
    # images on an fps clock: rows only where an image exists, frames counted from index / fps
    images = reference_clock("v", {"frame_rows": "images", "source_fps": 25.0},
                             np.array([0.04, 0.12]))
    assert not images.known and images.open_end
    np.testing.assert_allclose(images.times, [0.0, 0.04, 0.08, 0.12])
    # labels.fps: frame k at k / fps, as many frames as the video has (or as the rows span)
    np.testing.assert_allclose(reference_clock("v", {"source_frames": 4}, t, fps=30.0).times,
                               np.arange(4) / 30)
    assert len(reference_clock("v", {}, t, fps=30.0).times) == 5  # up to 0.12 s at 30 fps
    with pytest.raises(DataError, match="not one per video frame"):  # rows with a gap
        reference_clock("v", {}, np.array([0.0, 0.04, 0.08, 0.4, 0.44]))
    with pytest.raises(DataError, match="sampled"):
        reference_clock("v", {"frame_rows": "sampled"}, t)


def test_labels_are_placed_by_frame_index_and_past_end_lines_are_named():
    clock = FrameClock(np.arange(5) / 25, True, "test")
    notes = GridNotes()
    values = np.arange(7, dtype=np.float32)[:, None]
    placed = frame_grid("v", clock, np.arange(7), values, np.ones((7, 1), bool), 5, notes)
    assert len(placed.grid) == 5 and placed.y[:, 0].tolist() == [0, 1, 2, 3, 4]
    assert notes.past_end == ["v (2 of 7 lines)"]
    # sparse labels keep their frames; the other frames are unlabelled steps
    placed = frame_grid("v", clock, np.array([1, 3]), values[:2], np.ones((2, 1), bool), 5,
                        notes)
    assert placed.ok[:, 0].tolist() == [False, True, False, True, False]
    assert placed.y[3, 0] == 1
    with pytest.raises(DataError, match="label frames"):
        bad = GridNotes()
        frame_grid("v", clock, np.arange(20), np.zeros((20, 1)), np.ones((20, 1), bool), 5, bad)
        bad.report()


def test_fixed_grids():
    g = fixed_grid(0.0, 9.9, GridSpec.parse("steps:4", "video"))
    np.testing.assert_allclose(g.edges[:-1], [0.0, 2.475, 4.95, 7.425])
    assert len(fixed_grid(0.0, 11.9, GridSpec.parse("rate:2", "video"))) == 24
    assert GridSpec.parse("auto", "video") == GridSpec("steps", 32)
    with pytest.raises(ValueError):
        GridSpec.parse("steps:2.5", "video")


def test_mean_includes_the_last_valid_row_when_later_steps_are_empty():
    """A step that holds the feature's last valid row (and the steps after it hold none)."""
    data = np.arange(6, dtype=np.float16)[:, None]
    t = np.arange(6, dtype=np.float64)
    grid = Grid(np.array([1.0, 4.0, 7.0]), np.array([-0.5, 2.5, 5.5, 8.5]))
    out = align_mean(data, t, np.ones(6, bool), grid)
    np.testing.assert_allclose(out.values.ravel()[:2], [1.0, 4.0])
    mask = np.array([1, 1, 1, 1, 1, 0], bool)  # the last row invalid: rows 2-4 make step 2
    grid = Grid(np.array([0.5, 3.0, 6.0]), np.array([-0.5, 1.5, 4.5, 7.5]))
    out = align_mean(data, t, mask, grid)
    np.testing.assert_allclose(out.values.ravel()[:2], [0.5, 3.0])
