"""The report in a real headless browser (Debian's chromium driven by selenium): it loads cleanly and draws its charts."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from tests.campaign.files.checks import legato

SCREENSHOT = os.environ.get("LEGATO_REPORT_SCREENSHOT")
"""Where to save a screenshot of the sample campaign's report (the README's picture); none when unset."""


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless chromium with a fresh profile; its console log is read by the tests."""
    binary = shutil.which("chromium")
    driver_path = shutil.which("chromedriver")
    assert binary and driver_path, "chromium and chromedriver are installed by scripts/install-chromium.sh"
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                     "--disable-component-update", "--no-first-run", "--disable-sync", "--window-size=1280,2400",
                     f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    yield driver
    driver.quit()


def open_report(browser, folder: Path, page: Path) -> None:
    done = legato("report", folder.name, "-o", str(page), cwd=folder.parent)
    assert done.returncode == 0, done.stderr
    browser.get(page.as_uri())
    assert browser.execute_script("return document.readyState") == "complete"


def console_errors(browser) -> list[dict]:
    return [entry for entry in browser.get_log("browser") if entry["level"] in ("SEVERE", "ERROR")]


def test_campaign_report_loads_draws_and_names_failures(browser, campaign, tmp_path):
    open_report(browser, campaign, tmp_path / "report.html")
    assert console_errors(browser) == []
    charts = browser.find_elements(By.CSS_SELECTOR, "figure.chart")
    assert len(charts) >= 6
    for chart in charts:
        size = chart.find_element(By.TAG_NAME, "svg").size
        assert size["width"] > 200 and size["height"] > 100, chart.get_attribute("data-title")
        drawn = browser.execute_script("return arguments[0].querySelectorAll('path, rect, image, use').length", chart)
        assert drawn > 5, chart.get_attribute("data-title")
    failures = browser.find_element(By.ID, "failures")
    assert failures.is_displayed()
    assert "exit code 3" in failures.text and "PARAM1 too small" in failures.text
    assert "rows failed" in browser.find_element(By.ID, "summary").text
    if SCREENSHOT:
        browser.set_window_size(1100, 1500)
        browser.save_screenshot(SCREENSHOT)


def test_study_report_loads_and_draws(browser, study, tmp_path):
    open_report(browser, study, tmp_path / "study.html")
    assert console_errors(browser) == []
    titles = [chart.get_attribute("data-title") for chart in browser.find_elements(By.CSS_SELECTOR, "figure.chart")]
    assert "instance durations" in titles and "failures by reason" in titles
    assert "PARAM1 too small" in browser.find_element(By.ID, "failures").text
