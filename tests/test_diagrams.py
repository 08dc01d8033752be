"""save_figures: the PNGs in img/ are drawn from the code, readable, and reproducible."""

import matplotlib
import matplotlib.image
import pytest

from resnet_lessons.diagrams import (
    FIGURES,
    residual_block_figure,
    resnet18_stages_figure,
    save_figures,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _texts(fig) -> str:
    return "\n".join(t.get_text() for ax in fig.axes for t in ax.texts + [ax.title])


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    out = tmp_path_factory.mktemp("img") / "new" / "dir"  # created by save_figures
    return out, save_figures(out)


def test_writes_every_figure_as_a_readable_png(saved):
    out, paths = saved
    assert sorted(p.name for p in paths) == sorted(FIGURES)
    for path in paths:
        assert path.parent == out
        assert path.read_bytes()[:8] == PNG_SIGNATURE
        height, width, _ = matplotlib.image.imread(path).shape
        assert 800 <= width <= 2500 and 400 <= height <= 1500, (path.name, width, height)


def test_same_code_gives_the_same_bytes(saved, tmp_path):
    _, first = saved
    second = save_figures(tmp_path)
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name


def test_global_matplotlib_state_is_untouched(tmp_path):
    before = dict(matplotlib.rcParams)
    backend = matplotlib.get_backend()
    save_figures(tmp_path)
    assert dict(matplotlib.rcParams) == before
    assert matplotlib.get_backend() == backend


def test_stage_diagram_shows_the_traced_resnet18_shapes():
    text = _texts(resnet18_stages_figure())
    for shape in ("1 x 224 x 224", "64 x 56 x 56", "128 x 28 x 28", "256 x 14 x 14"):
        assert shape in text
    assert "512 x 7 x 7" in text and "512 x 1 x 1" in text
    assert "512 -> 10" in text
    # only the first block of stages 2-4 is strided: the label must not read as if both were
    assert text.count("first block:\nstride 2\n+ 1x1 conv") == 3 and "size kept" in text


def test_block_figure_shows_both_shortcuts_and_their_shapes():
    text = _texts(residual_block_figure())
    assert "identity" in text and "1x1 conv\nstride 2" in text
    assert "3x3 conv, stride 2" in text
    assert "(4, 3, 6, 6)" in text and "(4, 6, 3, 3)" in text
