"""The HTML leaderboard: one self-contained page with its plots as inline PNG images."""

from __future__ import annotations

import base64
import html
import re
from html.parser import HTMLParser

from cl_bayes.report.tables import CALIBRATION_LEGEND, LEGEND
from tests.report.sample_records import calibrated_seeds, generate, make_record, three_seeds

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class PageParser(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.images.append(dict(attrs)["src"])


def test_html_is_self_contained_with_base64_png_plots(tmp_path):
    records = [
        *three_seeds("p"),
        *three_seeds("q"),
        make_record("c0", 0.5, scenario="class"),
        make_record("f", status="failed"),
    ]
    _, page = generate(tmp_path, *records)
    parser = PageParser()
    parser.feed(page)
    parser.close()
    # Two tables with 2 + 1 groups: 3 heatmaps + 2 x (average accuracy, forgetting).
    assert len(parser.images) >= 3 + 2 * 2
    for src in parser.images:
        prefix = "data:image/png;base64,"
        assert src.startswith(prefix)
        assert base64.b64decode(src[len(prefix) :], validate=True).startswith(PNG_SIGNATURE)
    assert parser.tags.count("table") == 3  # two leaderboards and the failed runs
    assert "style" in parser.tags
    assert "script" not in parser.tags and "link" not in parser.tags
    assert "94.00 ± 4.00" in page


def captions(page: str) -> list[str]:
    return re.findall(r"<figcaption>(.*?)</figcaption>", page)


def test_calibrated_groups_get_an_ece_plot_and_a_reliability_diagram_each(tmp_path):
    records = [*three_seeds("p"), *calibrated_seeds("cal"), make_record("c0", scenario="class")]
    _, page = generate(tmp_path, *records)
    shown = captions(page)
    assert shown.count("ECE after each task (band: ± std)") == 1  # the task-incremental table
    # The calibrated group's diagram, after the accuracy matrices; none for the older groups.
    reliability = [c for c in shown if c.startswith("Reliability diagram")]
    assert reliability == ["Reliability diagram: vcl · cal"]
    assert shown.index(reliability[0]) > shown.index("Mean accuracy matrix: vcl · cal")
    assert page.count("<h3>Calibration</h3>") == 1
    assert html.escape(CALIBRATION_LEGEND) in page
    # And the table of ECE and entropy after each task, with the calibrated group's row only.
    assert page.count("<h3>After each task</h3>") == 1
    assert "<td>3.00 · 15.00</td>" in page and "<td>0.200 · 0.400</td>" in page


def test_records_without_calibration_get_no_calibration_figures(tmp_path):
    _, page = generate(tmp_path, *three_seeds("p"), make_record("c0", scenario="class"))
    assert not any("ECE" in c or "Reliability" in c for c in captions(page))
    assert "Calibration" not in page and "ECE" not in page
    assert f"<p>{html.escape(LEGEND)}</p>" in page
