"""MathJax without a network: the web book's pages load it from the site itself.

Sphinx's default MathJax comes from a CDN, so a page read offline shows raw TeX. The
PyPI package ``sphinx-mathjax-offline`` ships MathJax 3; this copies one file of it, the
self-contained TeX-to-SVG bundle (``tex-svg-full.js``, about 2 MB: no fonts to fetch, no
extension loaded later), into ``_static/mathjax/`` and points ``mathjax_path`` at it.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

BUNDLE = "tex-svg-full.js"


def mathjax_bundle() -> Path:
    """Where ``sphinx-mathjax-offline`` put the bundle; a clear error when it is missing."""
    spec = importlib.util.find_spec("sphinx-mathjax-offline")
    path = Path(spec.origin).parent / "static" / "mathjax" / BUNDLE if spec else None
    if path is None or not path.is_file():
        raise RuntimeError(
            f"MathJax's {BUNDLE} was not found (looked in the sphinx-mathjax-offline package: "
            f"{path}); install the web book's tools with: pip install -e '.[book]'"
        )
    return path


def copy_bundle(app, exception) -> None:
    if exception is None and app.builder.format == "html":
        target = Path(app.outdir) / "_static" / "mathjax"
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy2(mathjax_bundle(), target / BUNDLE)


def setup(app):
    mathjax_bundle()  # fail at the start of a build, not after it
    app.config.mathjax_path = f"mathjax/{BUNDLE}"  # relative: under the site's _static/
    app.connect("build-finished", copy_bundle)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
