"""End to end in a real headless Chromium: `monalisa serve`, the page, a short run watched live.

Debian's chromium (/usr/bin/chromium, installed by .ci/run) is driven by
Playwright; Playwright's own browser download is never used. Set
MONALISA_SCREENSHOTS=DIR to keep the screenshots (the README's comes from here:
MONALISA_SCREENSHOTS=docs).
"""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
# Headless as root in a container, and no calls home (this machine's network refuses them).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update"]

if not CHROMIUM.exists():
    pytest.skip("Debian's chromium is not installed (apt-get install chromium chromium-driver; .ci/run does)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")


@pytest.fixture
def server(tmp_path):
    script = Path(sys.executable).parent / "monalisa"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "monalisa.cli"]
    process = subprocess.Popen([*command, "serve", "--port", "0", "--runs", str(tmp_path / "runs"), "--jobs", "2"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = process.stdout.readline()  # "monalisa lab at http://127.0.0.1:PORT/ ..."
    match = re.search(r"http://\S+/", line)
    if not match:
        process.kill()
        raise AssertionError(f"serve printed {line!r}; stderr: {process.stderr.read()}")
    yield match.group(0), tmp_path / "runs"
    process.send_signal(signal.SIGINT)  # as Ctrl-C: the server pauses its runs and exits
    try:
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()


@pytest.fixture
def browser():
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def keep_screenshot(page, name: str) -> None:
    folder = os.environ.get("MONALISA_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / name))


def test_pick_an_image_start_a_run_and_watch_it_learn(server, browser, tmp_path):
    url, runs = server
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url)

    astronaut = page.locator('[data-testid="gallery"] [data-image="astronaut"]')
    astronaut.click()
    sync_api.expect(astronaut).to_have_attribute("aria-pressed", "true")
    assert "image=astronaut" in page.url  # the set-up lives in the URL
    page.select_option("#preset", "quick")
    page.fill("#size", "48")
    page.fill("#epochs", "40")
    page.locator("#epochs").dispatch_event("change")
    page.click("#start")

    panel = page.locator('[data-testid="panel"]').first
    sync_api.expect(panel).to_be_visible(timeout=30_000)
    reconstruction = panel.locator('img[data-testid="reconstruction"]')
    psnr = panel.locator('[data-testid="psnr"]')
    sync_api.expect(psnr).to_have_text(re.compile(r"\d+\.\d+ dB"), timeout=60_000)
    first = reconstruction.screenshot()
    first_src = reconstruction.get_attribute("src")
    # The reconstruction changes as the network learns: new frames, new pixels.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        page.wait_for_timeout(500)
        if reconstruction.get_attribute("src") != first_src and reconstruction.screenshot() != first:
            break
    else:
        raise AssertionError("the reconstruction never changed")
    sync_api.expect(panel.locator('[data-testid="status"]')).to_have_text(re.compile("complete", re.I),
                                                                          timeout=120_000)
    final_psnr = float(psnr.inner_text().split()[0])
    assert final_psnr > 10  # the astronaut at 48 px after 40 epochs of the original recipe: ~15 dB

    # The run is on disk as an ordinary run directory, with the figure the page showed.
    (run_dir,) = [p for p in runs.iterdir() if not p.name.startswith(".")]
    rows = (run_dir / "metrics.csv").read_text().splitlines()
    assert len(rows) == 1 + 40
    assert float(rows[-1].split(",")[-1]) == pytest.approx(final_psnr, abs=0.01)

    # Reloading the page finds the run again.
    page.reload()
    sync_api.expect(page.locator(f'[data-testid="panel"][data-run="{run_dir.name}"]')).to_be_visible(timeout=15_000)
    assert not errors, errors


def test_the_page_fits_a_phone(server, browser):
    url, _ = server
    page = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True)
    page.goto(url)
    sync_api.expect(page.locator('[data-testid="gallery"] [data-image="astronaut"]')).to_be_visible()
    page.wait_for_timeout(500)
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page is {overflow} px wider than the phone"
    keep_screenshot(page, "lab-phone.png")


def test_a_bad_recipe_is_explained_next_to_its_field(server, browser):
    url, runs = server
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(url)
    sync_api.expect(page.locator('[data-testid="gallery"] [data-image="astronaut"]')).to_be_visible()
    page.fill("#arch", "4y300")
    page.locator("#arch").dispatch_event("change")
    page.click("#start")
    message = page.locator('[data-error-for="arch"]')
    sync_api.expect(message).to_contain_text("malformed --arch '4y300'", timeout=10_000)
    assert not [p for p in runs.glob("*") if not p.name.startswith(".")]  # nothing started


REFERENCE_IMAGE = Path(__file__).resolve().parents[2] / "shared" / "data" / "mona_lisa.jpg"


def start_run(page, preset: str, epochs: int) -> None:
    page.select_option("#preset", preset)
    sync_api.expect(page.locator("#recipe-text")).to_have_value(re.compile(r"epochs = \d+"))
    page.fill("#epochs", str(epochs))
    page.locator("#epochs").dispatch_event("change")
    sync_api.expect(page.locator("#recipe-text")).to_have_value(re.compile(rf"epochs = {epochs}\b"))
    page.click("#start")


def test_two_architectures_side_by_side_on_an_upload(server, browser, tmp_path):
    """As a new user: upload a picture, run two architectures beside each other, download an animation."""
    url, runs = server
    source = REFERENCE_IMAGE
    if not source.exists():  # a clone without the reference image: any picture will do
        from monalisa.images import builtin_path

        source = builtin_path("chelsea")
    # Larger and longer when the screenshot is for the README.
    size, epochs = ("128", 60) if os.environ.get("MONALISA_SCREENSHOTS") else ("40", 12)
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url)
    sync_api.expect(page.locator('[data-testid="gallery"] [data-image="astronaut"]')).to_be_visible()
    page.set_input_files("#upload", str(source))
    uploaded = page.locator('[data-image^="upload:"]').first
    sync_api.expect(uploaded).to_have_attribute("aria-pressed", "true", timeout=15_000)
    assert re.search(r"image=upload(%3A|:)[0-9a-f]{64}", page.url)
    page.fill("#size", size)
    page.locator("#size").dispatch_event("change")

    start_run(page, "quick", epochs)  # the original network and algorithm
    sync_api.expect(page.locator('[data-testid="panel"]')).to_have_count(1, timeout=15_000)
    start_run(page, "fast", epochs)  # a hash grid and Adam
    panels = page.locator('[data-testid="panel"]')
    sync_api.expect(panels).to_have_count(2, timeout=15_000)
    for index in range(2):
        sync_api.expect(panels.nth(index).locator('[data-testid="status"]')).to_have_text(
            re.compile("complete", re.I), timeout=240_000)
        sync_api.expect(panels.nth(index).locator('[data-testid="psnr"]')).to_have_text(re.compile(r"\d+\.\d+ dB"))
    # Side by side on a laptop screen: the two panels share a row.
    boxes = [panels.nth(i).bounding_box() for i in range(2)]
    assert abs(boxes[0]["y"] - boxes[1]["y"]) < 5 and boxes[0]["x"] != boxes[1]["x"]
    keep_screenshot(page, "lab.png")

    # The neuron view of the original network's second hidden layer: 300 units.
    original = page.locator('[data-testid="panel"]', has_text="4x300")
    original.locator('[data-action="neurons"]').click()
    page.select_option("#neuron-layer", "2")
    neurons = page.locator('img[data-testid="neurons"]')
    sync_api.expect(neurons).to_be_visible(timeout=30_000)
    sync_api.expect(page.locator("dialog[open]")).to_contain_text("300 units")
    page.wait_for_function("img => img.complete && img.naturalWidth > 0 && img.src.includes('layer=2')",
                           arg=neurons.element_handle())
    keep_screenshot(page, "lab-neurons.png")
    page.keyboard.press("Escape")

    # Reload: both panels come back from the address and the server.
    page.reload()
    sync_api.expect(page.locator('[data-testid="panel"]')).to_have_count(2, timeout=15_000)

    # The runs view lists both; download one run's animation.
    page.click("#tab-runs")
    rows = page.locator('[data-testid="run-row"]')
    sync_api.expect(rows).to_have_count(2)
    with page.expect_download() as download:
        rows.first.locator('a[download][href$="learning.gif"]').click()
    saved = tmp_path / "learning.gif"
    download.value.save_as(saved)
    assert saved.read_bytes()[:6] in (b"GIF87a", b"GIF89a")
    run_dirs = [p for p in runs.iterdir() if not p.name.startswith(".")]
    assert saved.read_bytes() in [(p / "learning.gif").read_bytes() for p in run_dirs]
    assert not errors, errors
