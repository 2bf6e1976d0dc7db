"""End to end in a real headless Chromium: `monalisa serve`, the page, a short run watched live.

Every page a test opens fails the test on any console error or uncaught exception
(the ``pages`` fixture), unless the test names the error it expects.

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
from PIL import Image

from monalisa.data.images import builtin_path

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


@pytest.fixture(scope="module")
def browser():
    """One Chromium for the module: each test opens its own pages (its own context), so nothing is shared
    but the process, whose start costs a second or two a test."""
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class Pages:
    """Opens pages and keeps every console error and uncaught exception they report."""

    def __init__(self, browser):
        self.browser = browser
        self.errors: list[str] = []
        self.expected: list[re.Pattern] = []
        self.opened: list = []

    def new(self, **options):
        page = self.browser.new_page(**options)  # a context of its own: no cookies or storage shared
        self.opened.append(page)
        page.on("console", lambda message: self.errors.append(
            f"console error: {message.text} ({message.location.get('url')})") if message.type == "error" else None)
        page.on("pageerror", lambda error: self.errors.append(f"uncaught exception: {error}"))
        return page

    def expect(self, pattern: str) -> None:
        """An error the test provokes on purpose (a refused request logs one in the console)."""
        self.expected.append(re.compile(pattern))

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not any(p.search(e) for p in self.expected)]


@pytest.fixture
def pages(browser):
    """``pages.new(viewport=...)``; the test fails at its end if any page reported an unexpected error."""
    opened = Pages(browser)
    yield opened
    for page in opened.opened:  # the browser outlives the test: its pages must not
        page.close()
    assert not opened.unexpected(), "the page reported errors:\n" + "\n".join(opened.unexpected())


def keep_screenshot(page, name: str) -> None:
    folder = os.environ.get("MONALISA_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / name))


def test_pick_an_image_start_a_run_and_watch_it_learn(server, pages, tmp_path):
    url, runs = server
    page = pages.new(viewport={"width": 1280, "height": 800})
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
    # Before the first frame the panel says what it waits for, not only that it waits.
    sync_api.expect(panel.locator('[data-testid="waiting"]')).to_have_text(
        re.compile(r"queued|starting the worker|epoch \d+ in progress: \d+%"))
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
    # Once an epoch is done, a training run tells the time it has left.
    sync_api.expect(panel.locator('[data-testid="eta"]')).to_have_text(re.compile(r"^\d+(\.\d)? s left$"))
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


def test_the_page_fits_a_phone(server, pages):
    url, _ = server
    page = pages.new(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True)
    page.goto(url)
    sync_api.expect(page.locator('[data-testid="gallery"] [data-image="astronaut"]')).to_be_visible()
    page.wait_for_timeout(500)
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page is {overflow} px wider than the phone"
    keep_screenshot(page, "lab-phone.png")


def test_a_bad_recipe_is_explained_next_to_its_field(server, pages):
    url, runs = server
    pages.expect(r"status of 400 .*/api/(recipes/check|runs)\)$")  # the refused requests, which the browser logs
    page = pages.new(viewport={"width": 1280, "height": 800})
    page.goto(url)
    sync_api.expect(page.locator('[data-testid="gallery"] [data-image="astronaut"]')).to_be_visible()
    page.fill("#arch", "4y300")
    page.locator("#arch").dispatch_event("change")
    page.click("#start")
    message = page.locator('[data-error-for="arch"]')
    sync_api.expect(message).to_contain_text("malformed --arch '4y300'", timeout=10_000)
    assert not [p for p in runs.glob("*") if not p.name.startswith(".")]  # nothing started


# The reference Mona Lisa, the file the package ships as its built-in image `mona_lisa`.
REFERENCE_IMAGE = builtin_path("mona_lisa")


def start_run(page, preset: str, epochs: int) -> None:
    page.select_option("#preset", preset)
    sync_api.expect(page.locator("#recipe-text")).to_have_value(re.compile(r"epochs = \d+"))
    page.fill("#epochs", str(epochs))
    page.locator("#epochs").dispatch_event("change")
    sync_api.expect(page.locator("#recipe-text")).to_have_value(re.compile(rf"epochs = {epochs}\b"))
    page.click("#start")


def test_two_architectures_side_by_side_on_an_upload(server, pages, tmp_path):
    """As a new user: upload a picture, run two architectures beside each other, download an animation."""
    url, runs = server
    source = REFERENCE_IMAGE
    # Larger and longer when the screenshot is for the README.
    size, epochs = ("128", 60) if os.environ.get("MONALISA_SCREENSHOTS") else ("40", 12)
    page = pages.new(viewport={"width": 1280, "height": 800})
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
    # Named after the upload's file, not its hash.
    ids = [panels.nth(i).get_attribute("data-run") for i in range(2)]
    assert all(i.startswith(f"{source.stem}-") for i in ids), ids

    # The Runs view while both train: rows update in place and keep their order, and the page throws
    # nothing (the pages fixture fails the test on an uncaught exception).
    page.click("#tab-runs")
    rows = page.locator('[data-testid="run-row"]')
    sync_api.expect(rows).to_have_count(2)
    # The server's order (newest first); the view takes it once its own fetch of the list is in.
    order = page.evaluate("() => fetch('/api/runs').then((r) => r.json()).then((a) => a.runs.map((r) => r.id))")
    assert sorted(order) == sorted(ids)
    page.wait_for_function("order => [...document.querySelectorAll('[data-testid=run-row]')]"
                           ".map((r) => r.dataset.run).join() === order.join()", arg=order)
    seen = set()
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert rows.evaluate_all("rows => rows.map((r) => r.dataset.run)") == order
        states = rows.evaluate_all("rows => rows.map((r) => r.querySelector('.nums').innerText)")
        seen.update(states)
        if all("complete" in state for state in states):
            break
        page.wait_for_timeout(200)
    else:
        raise AssertionError(f"the runs did not complete; the rows showed {sorted(seen)}")
    epochs_shown = {re.search(r"(\d+) / \d+ epochs", state).group(1) for state in seen}
    assert len(epochs_shown) >= 3, seen  # the rows followed the training, not only its start and end
    page.click("#tab-lab")
    for index in range(2):
        sync_api.expect(panels.nth(index).locator('[data-testid="status"]')).to_have_text(
            re.compile("complete", re.I), timeout=240_000)
        sync_api.expect(panels.nth(index).locator('[data-testid="psnr"]')).to_have_text(re.compile(r"\d+\.\d+ dB"))
    # Side by side on a laptop screen: the two panels share a row.
    boxes = [panels.nth(i).bounding_box() for i in range(2)]
    assert abs(boxes[0]["y"] - boxes[1]["y"]) < 5 and boxes[0]["x"] != boxes[1]["x"]
    keep_screenshot(page, "lab.png")

    # A render of the hash grid run's network at a chosen width, downloaded from its panel.
    fast = panels.filter(has_text="hashgrid")
    fast.locator('[data-testid="render-width"]').select_option("256")
    with page.expect_download() as download:
        fast.locator('[data-testid="render"]').click()
    rendered = tmp_path / "render.png"
    download.value.save_as(rendered)
    with Image.open(rendered) as image, Image.open(runs / fast.get_attribute("data-run") / "final.png") as final:
        assert image.format == "PNG" and image.width == 256
        assert image.height == round(256 * final.height / final.width)  # the run's aspect ratio

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
    sync_api.expect(rows).to_have_count(2)
    with page.expect_download() as download:
        rows.first.locator('a[download][href$="learning.gif"]').click()
    saved = tmp_path / "learning.gif"
    download.value.save_as(saved)
    assert saved.read_bytes()[:6] in (b"GIF87a", b"GIF89a")
    run_dirs = [p for p in runs.iterdir() if not p.name.startswith(".")]
    assert saved.read_bytes() in [(p / "learning.gif").read_bytes() for p in run_dirs]


def test_the_eta_counts_the_time_limit(server, pages):
    """siren --time-limit 60 once showed an ETA of 1:09:29 and stopped at 84 s: the limit ends the run first."""
    url, _ = server
    page = pages.new(viewport={"width": 800, "height": 600})
    page.goto(url)
    # Ten epochs done at 1 s of wall clock each, 0.8 s of it training; epoch 11 half done.
    rows = [{"epoch": e, "seconds": float(e), "train_seconds": 0.8} for e in range(1, 11)]
    left = page.evaluate("""async ([rows, recipes]) => {
        const { timeLeft } = await import("/static/panels.js");
        return recipes.map((recipe) => timeLeft({ epochs: 5000, recipe }, rows, { epoch: 11, fraction: 0.5 }));
    }""", [rows, [{"time_limit": 60}, {"time_limit": None}, {"time_limit": 1e6}]])
    # 60 - 8 s of training left is 65 epochs of 0.8 s (the limit is checked after each), 64.5 from here.
    assert left[0] == {"seconds": pytest.approx(64.5), "limited": True}
    assert left[1] == left[2] == {"seconds": pytest.approx(5000 - 10.5), "limited": False}


def test_the_report_table_fits_a_laptop_screen(pages, tmp_path):
    """report.html at 1280 px: every column of a five-run table inside its box, none cut off."""
    from monalisa.experiments.report.pages import COLUMNS, report_html
    from monalisa.recipes.recipe import Recipe

    for name in ("finals.png", "curves.png", "grid.gif"):
        Image.new("RGB", (8, 8)).save(tmp_path / name)
    labels = ["4x300-leaky_relu-sgd-b1", "3x256-sine-adam-b8192", "hashgrid-1x32-relu-adam-b8192",
              "hashgrid-2x64-relu-adam-b16384", "fourier-256-4x256-relu-adam-b16384"]
    runs = [{"label": label, "status": "complete", "describe": label.replace("-", " "), "parameters": 291_777,
             "flops_per_pixel": 1_629_000, "psnr": 21.5, "mae": 0.0412, "best_psnr": 21.52, "best_epoch": 300,
             "seconds_per_epoch": 0.0971, "seconds_to_20": 12.3, "seconds_to_25": None,
             "recipe": Recipe().to_dict()} for label in labels]
    summary = {"title": "Comparison", "image": "mona_lisa", "width": 240, "height": 358, "runs": runs,
               "conclusion": "a conclusion", "claims": []}
    (tmp_path / "report.html").write_text(report_html(summary, tmp_path))
    page = pages.new(viewport={"width": 1280, "height": 800})
    page.goto((tmp_path / "report.html").as_uri())
    box, table = page.evaluate("""() => [document.querySelector('.table-wrap').clientWidth,
                                          document.querySelector('table').scrollWidth]""")
    assert table <= box, f"the table is {table} px wide in a {box} px box"
    assert "training MFLOP per pixel per epoch" in COLUMNS
    sync_api.expect(page.locator("p.note")).to_contain_text("Training MFLOP per pixel per epoch: ")
    keep_screenshot(page, "report.png")


def test_seeds_train_as_one_panel_with_a_band_and_compare_keeps_the_count(server, pages):
    """Seeds 3: three ordinary runs, one panel that shows the first seed's frames and all three as a band;
    "Compare with…" on one of them asks for as many seeds of the next recipe."""
    url, runs = server
    page = pages.new(viewport={"width": 1280, "height": 800})
    page.goto(url)
    sync_api.expect(page.locator("#start")).to_be_enabled(timeout=15_000)  # the page has read the address
    size, epochs = ("96", 25) if os.environ.get("MONALISA_SCREENSHOTS") else ("24", 4)
    page.fill("#size", size)
    page.locator("#size").dispatch_event("change")
    page.fill("#seeds", "3")
    page.locator("#seeds").dispatch_event("input")
    assert "seeds=3" in page.url  # the set-up lives in the URL, seeds too
    start_run(page, "fast", epochs)
    panels = page.locator('[data-testid="panel"]')
    sync_api.expect(panels).to_have_count(1, timeout=15_000)  # one panel for the group, not three
    panel = panels.first
    assert panel.get_attribute("data-run").endswith("-s0")
    seeds = panel.locator('[data-testid="seeds"]')
    sync_api.expect(seeds).to_contain_text("3 seeds (0, 1, 2)")
    sync_api.expect(seeds).to_contain_text("3 complete", timeout=240_000)
    # The band spans the three seeds once each has reported: the page follows every seed's epochs.
    band = panel.locator("svg.psnr-curve path.band")
    sync_api.expect(band).to_have_attribute("data-seeds", "3", timeout=30_000)
    sync_api.expect(panel.locator("svg.psnr-curve")).to_have_attribute("aria-label", re.compile("3 seeds"))
    group = sorted(p.name for p in runs.iterdir() if not p.name.startswith("."))
    assert len(group) == 3 and [name[-3:] for name in group] == ["-s0", "-s1", "-s2"]
    keep_screenshot(page, "lab-seeds.png")

    # From the runs view, "Compare with…" one of the seeds: the Seeds field asks for three again.
    page.fill("#seeds", "1")
    page.locator("#seeds").dispatch_event("input")
    page.click("#tab-runs")
    row = page.locator('[data-testid="run-row"]', has_text="-s1")
    row.locator('[data-do="compare"]').click()
    sync_api.expect(page.locator("#seeds")).to_have_value("3")
    sync_api.expect(page.locator("#notice")).to_contain_text("3 seeds")
    page.fill("#seeds", "x")
    page.locator("#seeds").dispatch_event("input")
    pages.expect("400")  # the refused request is logged in the console
    page.click("#start")
    sync_api.expect(page.locator('[data-error-for="seeds"]')).to_contain_text("write a number of seeds")

    # A second recipe beside the group, then both curves on one PSNR axis and against training seconds.
    page.fill("#seeds", "1")
    page.locator("#seeds").dispatch_event("input")
    start_run(page, "quick", 3)
    sync_api.expect(panels).to_have_count(2, timeout=15_000)
    sync_api.expect(panels.first.locator('[data-testid="status"]')).to_have_text(re.compile("complete"),
                                                                                  timeout=120_000)
    curves = page.locator("svg.psnr-curve")
    page.check("#curve-shared")
    page.select_option("#curve-by", "seconds")
    assert "axis=shared" in page.url and "x=seconds" in page.url
    sync_api.expect(curves.first).to_have_attribute("data-by", "seconds")
    ranges = curves.evaluate_all("svgs => svgs.map((s) => s.dataset.range)")
    assert len(ranges) == 2 and ranges[0] == ranges[1] and ranges[0], ranges  # one axis, the same for both
    sync_api.expect(curves.first).to_contain_text("training")
    keep_screenshot(page, "lab-axes.png")
    page.uncheck("#curve-shared")
    sync_api.expect(curves.first).to_have_attribute("data-range", "")


def test_curves_against_epochs_or_training_seconds(server, pages):
    """psnrCurve's x: the epoch from 1 to the run's length, or the training seconds summed to each epoch."""
    url, _ = server
    page = pages.new(viewport={"width": 800, "height": 600})
    page.goto(url)
    rows = [{"epoch": e, "psnr": 10.0 + e, "train_seconds": 0.5} for e in range(1, 5)]
    points = page.evaluate("""async (rows) => {
        const { psnrCurve, curvePoints, seedBand } = await import("/static/panels.js");
        const ends = (svg) => svg.querySelector("polyline.line").getAttribute("points").split(" ");
        return {
          seconds: curvePoints(rows, "seconds").map((p) => p.x),
          byEpoch: ends(psnrCurve(rows, { by: "epoch", end: 8 })),
          bySeconds: ends(psnrCurve(rows, { by: "seconds", end: 4 })),
          shared: psnrCurve(rows, { range: { lo: 3, hi: 41 }, end: 4 }).querySelector("text").textContent,
          band: seedBand([rows, rows.map((r) => ({ ...r, psnr: r.psnr + 2, train_seconds: 1.5 }))]).at(-1),
          // A group of which one seed has reported so far: "1 seed", not "1 seeds".
          alone: [...psnrCurve(rows, { band: seedBand([rows]), end: 4 }).querySelectorAll("text.unit")]
            .map((t) => t.textContent),
          aloneLabel: psnrCurve(rows, { band: seedBand([rows]), end: 4 }).getAttribute("aria-label"),
        };
    }""", rows)
    assert points["seconds"] == [0.5, 1.0, 1.5, 2.0]
    # 30 px of margin on the left, 8 on the right of a 360 px box: epoch 4 of 8 sits at 3/7 of 322 px.
    assert float(points["byEpoch"][-1].split(",")[0]) == pytest.approx(30 + 322 * 3 / 7, abs=0.1)
    assert float(points["bySeconds"][-1].split(",")[0]) == pytest.approx(30 + 322 * 2.0 / 4, abs=0.1)
    assert points["shared"] == "0"  # the shared range rounded out to 5 dB: 0 to 45
    assert points["band"] == {"epoch": 4, "seeds": 2, "seconds": 4.0, "mean": 15.0, "low": 14.0, "high": 16.0}
    assert "1 seed: mean, lowest to highest" in points["alone"]
    assert "the band spans 1 seed," in points["aloneLabel"]


def test_the_network_view_follows_a_live_run(server, pages):
    """Every hidden layer as a column of unit thumbnails (a wide one sampled, saying so) with its dynamics
    beside it; the view moves on to later epochs while the run trains, and a click enlarges a unit."""
    url, _ = server
    page = pages.new(viewport={"width": 1400, "height": 900})
    page.goto(url)
    page.locator('[data-testid="gallery"] [data-image="astronaut"]').click()
    page.select_option("#preset", "quick")  # 4 layers of 300: wider than a column shows
    page.fill("#size", "48")
    page.fill("#epochs", "400")
    page.locator("#epochs").dispatch_event("change")
    page.click("#start")
    panel = page.locator('[data-testid="panel"]').first
    sync_api.expect(panel.locator('[data-testid="psnr"]')).to_have_text(re.compile(r"\d+\.\d+ dB"), timeout=60_000)

    panel.locator('[data-action="network"]').click()
    epoch = page.locator('[data-testid="network-epoch"]')
    sync_api.expect(epoch).to_have_text(re.compile(r"^epoch \d+$"), timeout=30_000)
    columns = page.locator('[data-testid="network-layer"]')
    sync_api.expect(columns).to_have_count(4)
    sync_api.expect(page.locator('[data-testid="network-count"]').first).to_have_text(
        re.compile(r"^32 of 300 units, evenly sampled"))
    sync_api.expect(page.locator('.network-stat[data-stat="grad_rms"]').first).to_contain_text("gradient RMS")
    first = int(epoch.inner_text().split()[1])
    # It follows the run: later epochs arrive through the live events, the page untouched.
    sync_api.expect(epoch).not_to_have_text(f"epoch {first}", timeout=60_000)
    assert int(epoch.inner_text().split()[1]) > first
    column = columns.first
    sync_api.expect(column).to_have_js_property("complete", True)
    column.click(position={"x": 4, "y": 4})  # the first thumbnail: unit 0
    sync_api.expect(page.locator("#network-unit-text")).to_have_text(re.compile(r"^layer 1, unit 0 · "))
    big = page.locator('[data-testid="network-unit"]')
    sync_api.expect(big).to_be_visible()
    sync_api.expect(big).to_have_js_property("complete", True)
    assert big.evaluate("img => img.naturalWidth") > 100
    # Every column shows its thumbnails, their pictures loaded (a reload swaps a picture in once loaded)
    page.wait_for_function("() => [...document.querySelectorAll('[data-testid=network-layer]')]"
                           ".every((img) => img.complete && img.naturalHeight > 100)", timeout=15_000)
    keep_screenshot(page, "lab-network.png")
