"""Screenshot of a run's report for the README: Debian's chromium driven by Playwright (no browser download).

usage: .venv/bin/python scripts/report-screenshot.py runs/demo docs/figures/report-screenshot.png
"""

import shutil
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

run, out = Path(sys.argv[1]), Path(sys.argv[2])
chromium = shutil.which("chromium")
if chromium is None:
    sys.exit("chromium not found: make setup installs Debian's chromium")
with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
    page = browser.new_page(viewport={"width": 1100, "height": 1400})
    page.goto((run / "report" / "index.html").resolve().as_uri())
    page.evaluate("document.getElementById('sweep').scrollIntoView()")
    page.screenshot(path=str(out))
    browser.close()
print(f"wrote {out}")
