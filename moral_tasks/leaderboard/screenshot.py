"""A full-page PNG of the leaderboard page as headless Chromium shows it in a 1280 px wide window.

Uses Playwright (the ``test`` extra) driving the system Chromium (Debian:
``apt-get install chromium``; or ``$CHROMIUM``), so nothing is downloaded.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

WIDTH, HEIGHT = 1280, 900
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


class ScreenshotError(RuntimeError):
    pass


def chromium_path() -> str | None:
    return os.environ.get("CHROMIUM") or next(
        (found for name in ("chromium", "chromium-browser", "google-chrome") if (found := shutil.which(name))), None)


def launch(playwright):
    executable = chromium_path()
    if executable is None:
        raise ScreenshotError("no Chromium found (apt-get install chromium, or set $CHROMIUM)")
    return playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)


def screenshot(page_path: Path, png: Path, width: int = WIDTH) -> None:
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        raise ScreenshotError("the screenshot needs playwright (pip install 'moral-ambiguity[test]')") from None
    png.parent.mkdir(parents=True, exist_ok=True)
    try:
        with sync_playwright() as p:
            browser = launch(p)
            try:
                page = browser.new_page(viewport={"width": width, "height": HEIGHT})
                page.goto(Path(page_path).resolve().as_uri())
                page.wait_for_load_state("load")
                page.screenshot(path=str(png), full_page=True)
            finally:
                browser.close()
    except Error as exc:
        raise ScreenshotError(f"Chromium could not render {page_path}: {str(exc).splitlines()[0]}") from None
