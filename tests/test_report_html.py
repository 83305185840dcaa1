import base64
import io
import re

import numpy as np
import pytest
from PIL import Image

from aelab.report import Report


def _png(w=8, h=6):
    buf = io.BytesIO()
    Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_report_renders_sections_tables_and_figures():
    r = Report("Study <1>")
    r.section("Ablation").paragraph("a & b").table(
        [{"run": "aug", "acc": 0.61275}], ["run", "acc"], table_id="t1"
    )
    r.section("Images").figure(_png(), "grid")
    page = r.render()
    assert page.startswith("<!DOCTYPE html>")
    assert "Study &lt;1&gt;" in page and "a &amp; b" in page
    assert "<td>0.6128</td>" in page and 'id="t1"' in page
    uris = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(uris) == 1
    img = Image.open(io.BytesIO(base64.b64decode(uris[0])))
    assert img.size == (8, 6)
    assert page.count("<section") == 2 and 'href="#s2"' in page


def test_figure_rejects_non_png():
    with pytest.raises(ValueError, match="PNG"):
        Report("x").figure(b"GIF89a", "no")


def test_paragraph_link_is_escaped():
    page = Report("x").paragraph("All of them:", link=("a<b.txt", 'run/"w".txt')).render()
    assert '<p>All of them: <a href="run/&quot;w&quot;.txt">a&lt;b.txt</a></p>' in page
