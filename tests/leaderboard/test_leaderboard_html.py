"""The leaderboard page in a real headless browser (Chromium from Debian's packages, driven by Selenium): it
loads, a click on a header sorts the rows by that column, a second click reverses them; and the settings
column tells apart runs that differ only in their settings."""

from __future__ import annotations

import os
import shutil

import pytest

from lm_eval_moe.leaderboard.settings import settings_label, temperatures
from lm_eval_moe.leaderboard.table import COLUMNS, Row, to_html

#: CI sets this (it installs chromium and chromium-driver): there a missing browser fails instead of skipping
REQUIRE_BROWSER = "LM_EVAL_MOE_REQUIRE_BROWSER"


def _row(method: str, settings: str, accuracy: float | None, flops: float | None) -> Row:
    return Row(model="m", method=method, settings=settings, task="moe_gsm8k", metric="exact_match,extract_answer",
               accuracy=accuracy, stderr=None, precision=None, coverage=None, tokens=None, flops=flops,
               extra_flops=None, verifier_flops=None, avg_k=None, samples=10, source="x")


@pytest.fixture
def browser(tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        chromium = None
    if not (chromium and driver_path):
        message = "needs chromium, chromium-driver (apt) and selenium (pip)"
        if os.environ.get(REQUIRE_BROWSER):
            pytest.fail(message)
        pytest.skip(message)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    yield driver
    driver.quit()


def _column(driver, name: str) -> list[str]:
    index = COLUMNS.index(name)
    return [row.find_elements("tag name", "td")[index].text
            for row in driver.find_elements("css selector", "table.leaderboard tbody tr")]


def test_the_page_sorts_by_any_column_in_a_real_browser(browser, tmp_path):
    table = [_row("des", "des, K={1,2,3,4}, N=8, M=2, verifier=prm, T=0.8", 0.62, 3e9),
             _row("moe_hf", "k=1, T=0", 0.4, 1e9),
             _row("moe_hf", "k=2 (default), T=0", 0.55, 2e9),
             _row("hf", "T=0", None, None),
             _row("best_of_n", "best_of_n, k=2, N=8, verifier=prm, T=0.8", 0.6, 1.2e10)]
    page = tmp_path / "leaderboard.html"
    page.write_text(to_html(table, {}))
    browser.get(page.as_uri())
    headers = {header.text.rstrip(" ▲▼"): header for header in browser.find_elements("css selector", "table.leaderboard th")}
    assert list(headers) == list(COLUMNS[:-1])
    assert _column(browser, "accuracy") == ["0.6200", "0.4000", "0.5500", "", "0.6000"]  # as written

    headers["accuracy"].click()
    assert _column(browser, "accuracy") == ["0.4000", "0.5500", "0.6000", "0.6200", ""]  # empty cells last
    assert headers["accuracy"].get_attribute("aria-sort") == "ascending"
    headers["accuracy"].click()
    assert _column(browser, "accuracy") == ["0.6200", "0.6000", "0.5500", "0.4000", ""]
    headers["FLOPs"].click()  # 1.2e10 is the largest: numbers, not strings, are compared
    assert _column(browser, "FLOPs")[-2:] == ["1.200e+10", ""] and _column(browser, "method")[0] == "moe_hf"
    headers["settings"].click()
    assert _column(browser, "settings") == sorted((row.settings for row in table), key=str.casefold)
    assert headers["accuracy"].get_attribute("aria-sort") is None


def test_settings_tell_apart_runs_of_one_method():
    greedy = {"model_class": "moe_hf", "expert_count": [1, 1], "default_expert_count": [2, 2],
              "generation": [{"do_sample": False, "temperature": 0.0}]}
    labels = {settings_label({**greedy, "expert_count": [k, k]}, temperatures({**greedy}, {}, None)) for k in (1, 2, 4)}
    assert labels == {"k=1, T=0", "k=2 (default), T=0", "k=4, T=0"}
    des = {"model_class": "moe_des", "strategy": "des", "expert_counts": [1, 2, 3, 4], "expert_count": [2, 2],
           "budget": 16, "keep": 4, "beam_width": 4, "verifier": "prm", "generation": [{"temperature": 0.8}]}
    assert settings_label(des, temperatures(des, {}, None)) == "des, K={1,2,3,4}, N=16, M=4, verifier=prm, T=0.8"
    best_of_n = {**des, "strategy": "best_of_n"}  # N only: keep and K do not apply to it
    assert settings_label(best_of_n, [0.8]) == "best_of_n, k=2, N=16, verifier=prm, T=0.8"
    reroute = {"model_class": "moe_reroute", "expert_count": [2, 2], "default_expert_count": [2, 2], "steps": 5,
               "interval": 32, "lr": 0.05}
    assert settings_label(reroute, [0.0]) == "k=2 (default), reroute 5 steps/32 tokens, lr=0.05, T=0"
    stock = {"generation_kwargs": {"do_sample": True, "temperature": 0.6}}
    assert temperatures({}, stock, "temperature=0.2") == [0.2] and temperatures({}, stock, None) == [0.6]
    assert temperatures({}, {"generation_kwargs": {"do_sample": False}}, None) == [0.0]
