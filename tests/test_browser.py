"""The report in a real browser: headless Chromium (Debian's package; .ci/run installs it) loads
report.html from disk, and the page itself counts its images once they have loaded."""

import re
import shutil
import subprocess

import pytest
from fixtures import ladder

from harness.reporting import report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=10000",
]
PROBE = """<script>window.addEventListener('load', function () {
  var images = Array.from(document.images);
  var loaded = images.filter(function (i) { return i.complete && i.naturalWidth > 0; });
  var probe = document.createElement('div'); probe.id = 'probe';
  probe.textContent = 'images ' + loaded.length + '/' + images.length;
  document.body.appendChild(probe);
});</script>"""


def dump_dom(page: str, probe: str, tmp_path) -> subprocess.CompletedProcess:
    """The page with `probe` (a script) added, loaded from disk by headless Chromium: its DOM
    once the page's scripts have run."""
    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("</body>", probe + "</body>"))
    done = subprocess.run(
        [
            CHROMIUM,
            *FLAGS,
            f"--user-data-dir={tmp_path / 'profile'}",
            "--dump-dom",
            probed.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)")
def test_every_image_loads_and_no_page_text_says_none_or_nan(tmp_path):
    rows = ladder(energy=False)
    _, page = report.render({"cpu run": rows}, tmp_path)
    done = dump_dom(page.read_text(), PROBE, tmp_path)
    found = re.search(r'<div id="probe">images (\d+)/(\d+)</div>', done.stdout)
    assert found, done.stdout[-2000:]
    loaded, total = map(int, found.groups())
    assert total >= 5 and loaded == total  # tiers, dashboard, latency, memory, rate
    text = re.sub(
        r"<[^>]+>", " ", re.sub(r"<(script|style)>.*?</\1>", " ", done.stdout, flags=re.S)
    )
    assert not re.search(r"\b(None|nan|NaN|undefined)\b", text)
