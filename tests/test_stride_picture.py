"""The stride picture: hand-checkable window counts, padding cells, odd sizes, the SVG."""

import re
import xml.etree.ElementTree as ET

import pytest

from resnet_lessons import conv_output_size
from resnet_lessons.stride_picture import MAX_DRAWN, stride_picture

SVG = "{http://www.w3.org/2000/svg}"


def _rects(picture, cls):
    root = ET.fromstring(picture.svg)
    return [r for r in root.iter(f"{SVG}rect") if cls in r.get("class", "").split()]


@pytest.mark.parametrize(("stride", "windows", "out"), [(1, 36, 6), (2, 9, 3), (3, 4, 2)])
def test_the_lectures_6x6_input_gives_36_9_and_4_windows(stride, windows, out):
    picture = stride_picture(6, stride)
    assert (picture.windows, picture.output_size) == (windows, out)
    assert len(_rects(picture, "window")) == windows
    assert len(_rects(picture, "highlighted")) == 1
    assert len(_rects(picture, "out")) == out * out
    root = ET.fromstring(picture.svg)
    assert root.get("data-windows") == str(windows)
    assert root.get("data-output") == str(out)
    # The 1x1 shortcut (padding 0, same stride) samples as many pixels: the paths agree.
    assert picture.shortcut_samples == windows == len(_rects(picture, "sampled"))


def test_padding_cells_surround_the_input():
    picture = stride_picture(6, 2)
    assert len(_rects(picture, "pad")) == 8 * 8 - 6 * 6  # padding 1 around 6x6
    assert len(_rects(picture, "pad")) + len(_rects(picture, "pixel")) >= 8 * 8
    no_padding = stride_picture(6, 1, padding=0)
    assert len(_rects(no_padding, "pad")) == 0
    assert no_padding.windows == 16  # 4x4 positions without padding


def test_an_odd_size_rounds_down_and_the_windows_stay_inside_the_padded_input():
    picture = stride_picture(7, 2)  # floor((7 + 2 - 3) / 2) + 1 = 4
    assert picture.output_size == 4 == conv_output_size(7, 3, 2, 1)
    assert picture.windows == 16
    cell = float(_rects(picture, "pad")[0].get("width"))
    limit = 9 * cell  # the padded input is 9 cells wide
    for rect in _rects(picture, "window"):
        assert float(rect.get("x")) + float(rect.get("width")) <= limit
        assert float(rect.get("y")) - 28 + float(rect.get("height")) <= limit


@pytest.mark.parametrize(("size", "stride"), [(s, t) for s in (1, 2, 5, 8, 13) for t in (1, 2, 4)])
def test_counts_follow_the_formula(size, stride):
    picture = stride_picture(size, stride)
    out = conv_output_size(size, 3, stride, 1)
    assert picture.windows == out * out == len(_rects(picture, "window"))
    assert str(picture).startswith(f"{size}x{size} input")


def test_large_inputs_are_summed_up_in_words_with_exact_counts():
    picture = stride_picture(MAX_DRAWN + 1, 2)
    assert picture.windows == conv_output_size(MAX_DRAWN + 1, 3, 2, 1) ** 2
    assert not _rects(picture, "window")
    assert "drawn for inputs up to" in picture.svg
    assert ET.fromstring(picture.svg).get("data-windows") == str(picture.windows)


def test_cells_are_large_enough_for_a_projector_and_bad_values_raise():
    assert float(_rects(stride_picture(6, 1), "pad")[0].get("width")) >= 20
    assert float(_rects(stride_picture(16, 1), "pad")[0].get("width")) >= 12
    assert "identity shortcut" in stride_picture(6, 1, use_1x1conv=False).svg
    with pytest.raises(ValueError, match="stride must be at least 1"):
        stride_picture(6, 0)
    with pytest.raises(ValueError, match="does not fit"):
        stride_picture(1, 1, padding=0)
    assert re.search(r"floor\(\(6 \+ 2\*1 - 3\) / 2\) \+ 1 = 3", stride_picture(6, 2).svg)
