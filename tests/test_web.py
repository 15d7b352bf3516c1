"""``cogframe web``: the generation behind the page, and the page itself in a real headless browser.

The browser test (``-m browser``, its own CI step) starts ``cogframe web`` in a subprocess, opens
the page in Debian's Chromium through Playwright (the system browser: nothing is downloaded),
types a prompt, clicks Generate and waits for a playable video; the screenshot goes to
``$COGFRAME_TEST_ARTIFACTS`` (default ``tests/artifacts/``). It skips, saying what is missing,
when Chromium, Playwright or Gradio is not installed.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from cogframe.cli.web_app import SR_STAGE, WebSettings, generate, options
from cogframe.core.io.video import read_video
from cogframe.errors import ConfigError

ARTIFACTS = Path(os.environ.get("COGFRAME_TEST_ARTIFACTS") or Path(__file__).parent / "artifacts")


def test_generate_runs_the_sample_recipe_with_the_page_settings(tmp_path):
    result = generate(WebSettings(prompt="a red circle moving left", seed=3, fps=2.0, rounds=1,
                                  sampler="top_p"), tmp_path)
    frames, fps = read_video(result.video)
    assert frames.shape[0] == 9 == result.frames and fps == 4.0 == result.fps  # 5 key frames at 2 fps, 1 round
    assert Path(result.contact_sheet).suffix == ".png" and Path(result.contact_sheet).is_file()
    assert {"load", "generate", "write", "total"} <= set(result.seconds)
    import json

    record = json.loads(Path(result.details).read_text())
    assert record["seed"] == 3 and record["sampling"]["token_sampler"]["name"] == "top_p"
    assert record["duration_prefix"] == "2.0s"


def test_page_settings_errors_name_the_fix(tmp_path):
    with pytest.raises(ConfigError, match="prompt is empty"):
        generate(WebSettings(prompt="  "), tmp_path)
    with pytest.raises(ConfigError, match="negative_prompt"):
        generate(WebSettings(prompt="a red circle moving left", guidance=3.0, rounds=0), tmp_path)
    with pytest.raises(ConfigError, match="frame rate|trained|rate"):
        generate(WebSettings(prompt="a red circle moving left", fps=3.0, rounds=0), tmp_path)
    opts = options()
    assert opts["rates"] == [0.25, 0.5, 1.0, 2.0, 4.0, 8.0] and "top_k" in opts["samplers"]
    assert "cluster" not in opts["samplers"]  # needs a clusters file the page cannot give
    if not opts["super_resolution"]:
        with pytest.raises(ConfigError, match=SR_STAGE):
            generate(WebSettings(prompt="a red circle moving left", super_resolution=True), tmp_path)


def test_web_command_is_listed_and_checks_its_port(cli):
    result = cli("web", "--help")
    assert result.code == 0 and "--port" in result.out
    result = cli("web", "--port", "70000")  # checked before Gradio is imported
    assert result.code == 2 and "--port must be in 1..65535" in result.err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_page(url: str, server: subprocess.Popen, log: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"cogframe web exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"cogframe web did not answer on {url} within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def _chromium() -> str | None:
    return next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser")) if p), None)


def _missing(reason: str) -> None:
    # CI sets COGFRAME_REQUIRE_BROWSER=1: there a missing browser is a failure, never a quiet skip.
    (pytest.fail if os.environ.get("COGFRAME_REQUIRE_BROWSER") == "1" else pytest.skip)(reason)


@pytest.mark.browser
def test_the_page_generates_a_video_in_a_real_browser(tmp_path):
    import importlib.util

    if importlib.util.find_spec("gradio") is None:
        _missing("Gradio is not installed: pip install '.[web]'")
    if importlib.util.find_spec("playwright") is None:
        _missing("Playwright is not installed: pip install '.[web,browser]'")
    from playwright import sync_api

    chromium = _chromium()
    if chromium is None:
        _missing("no Chromium on PATH: apt-get install -y chromium")
    port = _free_port()
    log = tmp_path / "web.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False", "COGFRAME_PLUGINS": ""}
    # rounds=1 (9 frames) keeps the wait short; the page's settings are what is under test.
    with open(log, "w") as out:
        server = subprocess.Popen([sys.executable, "-m", "cogframe", "web", "--port", str(port),
                                   "--out", str(tmp_path / "out"), "rounds=1"],
                                  stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        url = f"http://127.0.0.1:{port}/"
        _wait_for_page(url, server, log)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 1000})
                page.goto(url, wait_until="domcontentloaded")
                page.wait_for_selector("#prompt textarea", timeout=60_000)
                page.fill("#prompt textarea", "a green square moving up")
                page.click("#generate")
                page.wait_for_selector("#video video[src]", timeout=180_000)
                page.wait_for_selector("#sheet img[src]", timeout=30_000)
                page.wait_for_function("document.querySelector('#video video').readyState >= 2", timeout=30_000)
                video = page.evaluate("(() => { const v = document.querySelector('#video video');"
                                      " return {src: v.src, width: v.videoWidth, duration: v.duration}; })()")
                timings = page.inner_text("#timings")
                page.screenshot(path=str(ARTIFACTS / "web_demo.png"), full_page=True)
                assert video["src"].endswith(".mp4") and video["width"] == 128, video  # 32 px x display_scale 4
                assert "9 frames at 2 fps" in timings and "generating" in timings, timings

                # An error is a message in the page, not a dead page.
                page.fill("#prompt textarea", "")
                page.click("#generate")
                page.wait_for_selector("text=the prompt is empty", timeout=30_000)
                page.screenshot(path=str(ARTIFACTS / "web_demo_error.png"), full_page=True)
            finally:
                browser.close()
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
