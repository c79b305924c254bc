"""The demo page in a real headless browser (Debian's chromium through Playwright), on the
artifacts of a tiny whole-pipeline run: ask, sample a held-out question, read the results."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from gemma_pipeline.inference.server import free_port, stop, wait_for_http

CHROMIUM = "/usr/bin/chromium"
#: Screenshots a person looks at; CI keeps the folder.
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
QUESTION = "Which planet is known as the red planet?"


@pytest.fixture(scope="module")
def demo_url(tiny_run, tmp_path_factory):
    """`gemma-pipeline demo` on a free port of 127.0.0.1; stopped after the module."""
    assert Path(CHROMIUM).is_file(), (
        "the browser test needs Debian's chromium: apt-get install chromium"
    )
    port = free_port()
    log = tmp_path_factory.mktemp("demo-log") / "demo.log"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "KEDRO_ENV": "tiny"}
    with log.open("w") as stderr:
        process = subprocess.Popen(
            ["gemma-pipeline", "demo", "--port", str(port)],
            cwd=tiny_run,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        try:
            wait_for_http(process, url, timeout_s=180)
        except RuntimeError as error:
            raise AssertionError(f"{error}\n{log.read_text()[-3000:]}") from error
        yield url
    finally:
        stop(process)
    assert process.poll() is not None


@pytest.fixture(scope="module")
def page(demo_url):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(demo_url)
        yield page
        browser.close()


def _wait_for_status(page, selector: str, text: str, timeout_s: float = 120) -> str:
    page.wait_for_function(
        "([selector, text]) => (document.querySelector(selector)?.innerText || '').includes(text)",
        arg=[selector, text],
        timeout=timeout_s * 1000,
    )
    return page.locator(selector).inner_text()


def test_the_header_names_the_base_the_adapter_and_the_metrics_run(page, tiny_run):
    version = (sorted((tiny_run / "data/06_models/adapter").iterdir()))[-1].name
    header = page.locator("#header").inner_text()
    assert "Base" in header and "gemma3-spm" in header
    assert f"adapter {version}" in header
    assert f"evaluation {version}" in header


def test_bad_questions_get_a_message_and_the_app_keeps_serving(page):
    page.locator("#question textarea").fill("   ")
    page.locator("#ask-button").click()
    assert "The prompt is empty" in _wait_for_status(page, "#ask-status", "⚠️")
    page.locator("#question textarea").fill("planet " * 2000)
    page.locator("#ask-button").click()
    assert "this page takes up to 1024" in _wait_for_status(page, "#ask-status", "takes up to")


def test_a_free_question_is_answered_by_both_models(page, tiny_run):
    from gemma_pipeline.app.session import SideBySide
    from gemma_pipeline.inference.project import Project

    page.locator("#question textarea").fill(QUESTION)
    page.locator("#ask-button").click()
    _wait_for_status(page, "#ask-status", "Done")
    base = page.locator("#base-answer textarea").input_value()
    finetuned = page.locator("#finetuned-answer textarea").input_value()
    page.screenshot(path=ARTIFACTS / "demo-ask.png", full_page=True)
    expected = list(SideBySide.load(Project.load(tiny_run, "tiny")).answer_both(QUESTION, 128))[-1]
    assert (base, finetuned) == expected
    assert base and finetuned and base != finetuned


def test_a_held_out_question_shows_each_models_option_probabilities(page):
    page.get_by_role("tab", name="Held-out question").click()
    for draw in (1, 2, 3):  # each draw complete and consistent
        page.locator("#sample-button").click()
        _wait_for_status(page, "#heldout-status", f"Question {draw} · right:")
        rows = page.locator("#heldout tr.option")
        n = rows.count()
        assert n >= 2
        correct = [rows.nth(i).get_attribute("data-correct") == "true" for i in range(n)]
        assert correct.count(True) == 1
        marked = page.locator("#heldout tr.option.correct")
        assert marked.count() == 1 and "✓ correct" in marked.inner_text()
        for model in ("base", "finetuned"):
            cells = page.locator(f'#heldout td.p[data-model="{model}"]')
            p = [float(cells.nth(i).get_attribute("data-p")) for i in range(n)]
            assert sum(p) == pytest.approx(1.0, abs=1e-3)
            verdict = page.locator(f'#heldout .verdict[data-model="{model}"]')
            chosen = "ABCDEFGHIJ".index(verdict.inner_text().split("chose ")[1][0])
            assert p[chosen] == pytest.approx(max(p), abs=1e-6)  # the most likely letter
            assert verdict.get_attribute("data-correct") == str(correct[chosen]).lower()
        right = page.locator("#heldout-status").inner_text().split("right: ")[1]
        verdicts = page.locator('#heldout .verdict[data-correct="true"]')
        assert right.count(",") + 1 == verdicts.count() or (
            right == "neither." and not verdicts.count()
        )
    page.screenshot(path=ARTIFACTS / "demo-heldout.png", full_page=True)


def test_the_results_tab_shows_the_runs_table_and_plot(page):
    page.get_by_role("tab", name="Results").click()
    table = page.locator("#results-table")
    table.wait_for(timeout=30000)
    text = table.inner_text()
    assert "letter_acc" in text and "mmlu" in text and "mathqa" in text
    assert page.locator("#per-subject img").count() == 1
    page.screenshot(path=ARTIFACTS / "demo-results.png", full_page=True)
    assert shutil.disk_usage(ARTIFACTS).free > 0
