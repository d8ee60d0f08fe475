"""Browser tests of the playground (`/`) and the API docs (`/docs`), in Debian's headless chromium.

The test starts `target/release/dlserve` (or $DLSERVE_BIN) on a free port with the real default
models, and a small reverse proxy that serves it under `/dlserve/`, as behind an ingress at a path
prefix. Every page load fails its test on any console error or warning, on an uncaught exception, and
on any request to a host other than the server (or the proxy); axe-core checks accessibility
(violations of impact serious or critical fail). Screenshots go to tests/browser/artifacts/ and are
copied to docs/screenshots/.

Run: `make browser-test` (or tests/browser/setup, then .cache/browser-venv/bin/pytest tests/browser).
BROWSER_TEST_UI_DIR=ui serves the pages from disk (`--ui-dir`) instead of the copies in the binary;
BROWSER_TEST_MODELS_DIR=<dir> serves another model repository than models/ (e.g. one with a language
model, for the streaming check).
"""

from __future__ import annotations

import hashlib
import http.client
import http.server
import json
import math
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
SCREENSHOTS = ROOT / "docs" / "screenshots"
AXE = ROOT / ".cache" / "axe-core" / "axe.min.js"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
PREFIX = "/dlserve"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------------------
# The server and the reverse proxy


@pytest.fixture(scope="session")
def server():
    binary = Path(os.environ.get("DLSERVE_BIN", ROOT / "target" / "release" / "dlserve"))
    if not binary.exists():
        pytest.fail(f"{binary} is missing: build it first (make build)")
    port = free_port()
    models = ROOT / os.environ.get("BROWSER_TEST_MODELS_DIR", "models")
    args = [str(binary), "--addr", f"127.0.0.1:{port}", "--models-dir", str(models)]
    if os.environ.get("BROWSER_TEST_UI_DIR"):
        args += ["--ui-dir", str(ROOT / os.environ["BROWSER_TEST_UI_DIR"])]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log = open(ARTIFACTS / "dlserve.log", "wb")
    proc = subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"dlserve exited with {proc.returncode}; see {ARTIFACTS / 'dlserve.log'}")
            try:
                with urllib.request.urlopen(base + "/health/ready", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("dlserve was not ready within 90 s")
            time.sleep(0.25)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers", "transfer-encoding", "upgrade", "host"}


class Proxy(http.server.ThreadingHTTPServer):
    """Forwards /dlserve/<path> to the server's /<path>, streaming the answer (Server-Sent Events too)."""

    daemon_threads = True
    upstream: tuple[str, int]
    seen: list[str]


class ProxyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # the answer ends with the connection: simple and stream-friendly

    def log_message(self, *args):  # quiet
        pass

    def forward(self):
        self.server.seen.append(self.path)
        if self.path == PREFIX:
            self.send_response(308)
            self.send_header("location", PREFIX + "/")
            self.end_headers()
            return
        if not self.path.startswith(PREFIX + "/"):
            self.send_response(404)
            self.send_header("content-type", "text/plain")
            self.end_headers()
            self.wfile.write(b"outside the proxy's prefix\n")
            return
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        conn = http.client.HTTPConnection(*self.server.upstream, timeout=60)
        conn.request(self.command, self.path[len(PREFIX):], body=body, headers=headers)
        resp = conn.getresponse()
        self.send_response(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() not in HOP_BY_HOP:
                self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            while chunk := resp.read1(65536):
                self.wfile.write(chunk)
                self.wfile.flush()
        conn.close()

    do_GET = do_POST = do_HEAD = forward


@pytest.fixture(scope="session")
def proxy(server):
    u = urllib.parse.urlsplit(server)
    srv = Proxy(("127.0.0.1", 0), ProxyHandler)
    srv.upstream = (u.hostname, u.port)
    srv.seen = []
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv, f"http://127.0.0.1:{srv.server_address[1]}{PREFIX}/"
    srv.shutdown()
    srv.server_close()


# ------------------------------------------------------------------------------------------------
# The browser, and a page that fails on console messages and foreign requests


@pytest.fixture(scope="session")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


class Watch:
    """What a page did that a test must fail on."""

    def __init__(self, page: Page, allowed_origins: set[str]):
        self.problems: list[str] = []
        self.requests: list[str] = []
        page.on("console", self.on_console)
        page.on("pageerror", lambda e: self.problems.append(f"uncaught exception: {e}"))
        page.on("request", self.on_request)
        self.allowed = allowed_origins
        self.expected: list[str] = []
        self.expected_urls: list[str] = []

    def expect_http_error(self, status: int, url: str):
        """Chromium logs every non-2xx fetch; a test that provokes one on purpose names it."""
        self.expected.append(f"Failed to load resource: the server responded with a status of {status} ")
        self.expected_urls.append(url)

    def on_console(self, msg):
        loc = msg.location or {}
        if any(msg.text.startswith(t) for t in self.expected) and loc.get("url") in self.expected_urls:
            return
        if msg.type in ("error", "warning"):
            self.problems.append(f"console {msg.type}: {msg.text} ({loc.get('url', '')}:{loc.get('lineNumber', '')})")

    def on_request(self, req):
        self.requests.append(req.url)
        u = urllib.parse.urlsplit(req.url)
        if u.scheme in ("blob", "data"):
            return
        if f"{u.scheme}://{u.netloc}" not in self.allowed:
            self.problems.append(f"request to another host: {req.method} {req.url}")


@pytest.fixture
def open_page(browser, server, proxy):
    """open_page(url) -> (page, watch); at the end the test fails on anything the watch saw."""
    contexts = []
    watches = []
    origins = {server, "http://" + urllib.parse.urlsplit(proxy[1]).netloc}

    def make(url: str):
        ctx = browser.new_context(viewport={"width": 1280, "height": 900}, device_scale_factor=1)
        ctx.set_default_timeout(20_000)
        contexts.append(ctx)
        page = ctx.new_page()
        watch = Watch(page, origins)
        watches.append(watch)
        page.goto(url)
        return page, watch

    yield make
    for ctx in contexts:
        ctx.close()
    problems = [p for w in watches for p in w.problems]
    assert not problems, "the page logged or requested what it must not:\n" + "\n".join(problems)


def wait_ready(page: Page):
    page.wait_for_selector("body[data-ready=true]", state="attached")
    expect(page.locator("#models-table tbody tr").first).to_be_visible()


def shot(locator_or_page, name: str, full_page: bool = False):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    if isinstance(locator_or_page, Page):
        locator_or_page.screenshot(path=str(path), full_page=full_page)
    else:
        locator_or_page.screenshot(path=str(path))
    return path


def axe_check(page: Page, name: str, exclude: list[str] | None = None):
    """Runs axe-core in the page; fails on violations of impact serious or critical (lists them)."""
    assert AXE.exists(), f"{AXE} is missing: run tests/browser/setup"
    page.add_script_tag(content=AXE.read_text())
    context = {"exclude": [[s] for s in exclude]} if exclude else None
    result = page.evaluate(
        "async (ctx) => { const r = await axe.run(ctx || document, {resultTypes: ['violations']});"
        " return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,"
        " nodes: v.nodes.slice(0, 5).map(n => n.target.join(' ') + ': ' + (n.failureSummary || '').split('\\n').slice(0, 2).join(' '))})); }",
        context,
    )
    (ARTIFACTS / f"axe-{name}.json").write_text(json.dumps(result, indent=1))
    bad = [v for v in result if v["impact"] in ("serious", "critical")]
    assert not bad, f"axe-core on {name}: " + json.dumps(bad, indent=1)
    return result


# ------------------------------------------------------------------------------------------------
# Strokes that the digit classifier reads correctly (canvas pixels, 280 x 280)


def arc(cx, cy, rx, ry, a0=-90.0, a1=270.0, n=40):
    return [(cx + rx * math.cos(math.radians(a0 + (a1 - a0) * i / n)), cy + ry * math.sin(math.radians(a0 + (a1 - a0) * i / n))) for i in range(n + 1)]


DIGITS = {
    "0": [arc(140, 140, 62, 95)],
    "1": [[(150, 40), (145, 140), (140, 240)]],
    "7": [[(70, 50), (210, 50), (120, 245)]],
    "4": [[(170, 40), (80, 170), (210, 170)], [(170, 40), (170, 245)]],
    "2": [arc(140, 95, 55, 50, 200, 360, 20) + [(195, 95), (80, 240), (215, 240)]],
    "3": [arc(135, 95, 55, 48, 210, 450, 20), arc(135, 185, 60, 52, 270, 510, 20)],
    "8": [arc(140, 90, 45, 45), arc(140, 190, 55, 50)],
}


def draw(page: Page, strokes):
    canvas = page.locator("#classify-canvas")
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    for stroke in strokes:
        x0, y0 = stroke[0]
        page.mouse.move(box["x"] + x0, box["y"] + y0)
        page.mouse.down()
        for x, y in stroke[1:]:
            page.mouse.move(box["x"] + x, box["y"] + y, steps=6)
        page.mouse.up()


def fetch_bytes(url: str, data: bytes | None = None, headers: dict | None = None) -> bytes:
    req = urllib.request.Request(url, data=data, headers=headers or {})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.read()


# ------------------------------------------------------------------------------------------------
# The tests


def test_playground_lists_models_and_passes_axe(open_page, server):
    page, _ = open_page(server + "/")
    wait_ready(page)
    models = json.loads(fetch_bytes(server + "/models"))["models"]
    rows = page.locator("#models-table tbody tr")
    expect(rows).to_have_count(len(models))
    for m in models:
        row = page.locator(f'#models-table tbody tr[data-model="{m["name"]}"]')
        expect(row).to_contain_text(m["kind"])
        expect(row).to_contain_text(f'v{m["versions"][0]["version"]}')
    assert page.locator("html").get_attribute("lang") == "en"
    shot(page.locator("#models"), "models")
    axe_check(page, "playground")


def test_classifier_reads_drawn_digits(open_page, server):
    page, _ = open_page(server + "/")
    wait_ready(page)
    summary = page.locator("#classify-summary")
    results = {}
    for digit, strokes in DIGITS.items():
        page.click("#classify-clear")
        expect(summary).not_to_have_attribute("data-label", re.compile(".*"))
        draw(page, strokes)
        page.wait_for_selector("#classify-summary[data-label]", state="attached")
        results[digit] = summary.get_attribute("data-label")
        if digit == "7":
            shot(page.locator("#classifier"), "classifier")
    right = [d for d, got in results.items() if d == got]
    print("drawn digit -> label:", results)
    assert len(right) >= 6 and {"0", "1", "7"} <= set(right), f"drawn digits misread: {results}"
    # The answer shows its bars, who served it, and the curl command against this server.
    expect(page.locator("#classify-bars li")).to_have_count(3)
    expect(page.locator("#classify-meta")).to_contain_text("Served by digits-cnn v1")
    expect(page.locator("#classify-meta")).to_contain_text("compute")
    expect(page.locator("#classify-curl")).to_contain_text(f"'{server}/classify?model=digits-cnn&top_k=3'")
    # Keyboard-only path: a bundled sample chosen from the select.
    page.click("#classify-clear")
    page.select_option("#classify-sample", "ui/samples/digit-7.png")
    expect(summary).to_have_attribute("data-label", "7")


def test_keyboard_and_files(open_page, server):
    page, _ = open_page(server + "/")
    wait_ready(page)
    # The first Tab reaches the skip link, which becomes visible; focus is drawn on every control.
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.className") == "skip"
    assert page.locator(".skip").bounding_box()["x"] >= 0
    page.focus("#generate-seed")
    outline = page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("none", ""), outline
    # Enter in a field submits its panel.
    page.fill("#generate-seed", "5")
    page.keyboard.press("Enter")
    expect(page.locator("#generate-summary")).to_contain_text("from seed 5 ")
    # A picked image file is classified (the canvas shows it).
    page.set_input_files("#classify-file", str(ROOT / "tests" / "data" / "digits" / "008_label4_paper.png"))
    expect(page.locator("#classify-summary")).to_have_attribute("data-label", "4")
    expect(page.locator("#classify-curl")).to_contain_text("@'008_label4_paper.png'")


def test_generator_same_seed_same_bytes(open_page, server):
    page, _ = open_page(server + "/")
    wait_ready(page)
    img = page.locator("#generate-image")

    def generate(seed: int) -> tuple[str, bytes]:
        page.fill("#generate-seed", str(seed))
        page.select_option("#generate-label", "7")
        page.fill("#generate-n", "16")
        page.locator("#generate-summary").evaluate("el => el.textContent = ''")
        page.locator("#generate-form button[type=submit]").click()
        expect(page.locator("#generate-summary")).to_contain_text(f"from seed {seed} ")
        expect(page.locator("#generate-meta")).to_contain_text("Served by digits-cgan v1")
        assert img.evaluate("img => img.complete && img.naturalWidth > 0")
        # The page hashes the bytes behind the image's blob: URL; the same request made here
        # (the page's CSP keeps fetch() off blob: URLs) must give exactly those bytes.
        digest = img.get_attribute("data-sha256")
        data = fetch_bytes(f"{server}/generate?model=digits-cgan&n=16&label=7&seed={seed}")
        assert digest == hashlib.sha256(data).hexdigest(), "the image shown is not the server's PNG"
        # And what the browser decoded: a hash of the pixels drawn on a canvas.
        pixels = img.evaluate(
            "img => { const c = document.createElement('canvas'); c.width = img.naturalWidth; c.height = img.naturalHeight;"
            " const x = c.getContext('2d', {willReadFrequently: true}); x.drawImage(img, 0, 0);"
            " return Array.from(x.getImageData(0, 0, c.width, c.height).data.filter((_, i) => i % 4 === 0)).join(','); }"
        )
        return digest + ":" + hashlib.sha256(pixels.encode()).hexdigest(), data

    a, a_bytes = generate(42)
    shot(page.locator("#generator"), "generator")
    b, _ = generate(43)
    c, _ = generate(42)
    assert a == c, "the same seed gave a different image"
    assert a != b, "another seed gave the same image"
    expect(page.locator("#generate-curl")).to_contain_text(f"'{server}/generate?model=digits-cgan&n=16&label=7&seed=42'")
    assert "seed 42" in img.get_attribute("alt")


def test_forecast_chart(open_page, server):
    page, watch = open_page(server + "/")
    wait_ready(page)
    chart = page.locator("#forecast-chart")
    page.select_option("#forecast-series", "co2")
    page.fill("#forecast-horizon", "24")
    page.locator("#forecast-form button[type=submit]").click()
    expect(chart).to_have_attribute("data-forecast-points", "24")
    assert chart.get_attribute("data-history-points") == "48"
    assert chart.get_attribute("data-band-points") == "24"
    assert chart.get_attribute("data-first-timestamp") == "1995-01-01"
    assert chart.get_attribute("data-last-timestamp") == "2000-12-01"
    assert "48 points of history" in chart.get_attribute("aria-label")
    expect(page.locator("#forecast-meta")).to_contain_text("Served by co2-lstm v1")
    expect(page.locator("#forecast-curl")).to_contain_text('"frequency":"MS"')
    shot(page.locator("#forecaster"), "forecaster")
    # The other bundled series goes to the other forecaster.
    page.select_option("#forecast-series", "elnino")
    page.fill("#forecast-horizon", "12")
    page.locator("#forecast-form button[type=submit]").click()
    expect(chart).to_have_attribute("data-forecast-points", "12")
    expect(page.locator("#forecast-meta")).to_contain_text("Served by elnino-gru v1")
    # A server error is shown in the panel's alert region.
    watch.expect_http_error(422, f"{server}/forecast")
    page.fill("#forecast-values", "1, 2, 3")
    page.locator("#forecast-form button[type=submit]").click()
    err = page.locator("#forecast-error")
    expect(err).to_contain_text("422")
    expect(err).to_contain_text("series")
    assert err.get_attribute("role") == "alert"


def test_anomaly_detector_denoiser(open_page, server):
    page, _ = open_page(server + "/")
    wait_ready(page)
    rows = json.loads((ROOT / "ui" / "rows.json").read_text())["rows"]
    summary = page.locator("#anomaly-summary")
    seen = {}
    shots = set()
    for r in rows:
        page.select_option("#anomaly-row", r["id"])
        summary.evaluate("el => { el.removeAttribute('data-anomaly'); el.textContent = ''; }")
        page.locator("#anomaly-form button[type=submit]").click()
        page.wait_for_selector("#anomaly-summary[data-anomaly]", state="attached")
        expect(page.locator("#anomaly-meta")).to_contain_text("Served by cancer-ae v1")
        expect(page.locator("#anomaly-bars li")).to_have_count(5)
        seen[r["id"]] = (r["diagnosis"], summary.get_attribute("data-anomaly"))
        if r["diagnosis"] == "malignant" and seen[r["id"]][1] == "true" and "anomaly" not in shots:
            shots.add("anomaly")
            shot(page.locator("#anomaly"), "anomaly")
    print("anomaly rows:", seen)
    assert any(d == "benign" and a == "false" for d, a in seen.values()), seen
    assert any(d == "malignant" and a == "true" for d, a in seen.values()), seen

    page.click("#detect-sample")
    page.wait_for_selector("#detect-summary[data-count]", state="attached")
    assert int(page.locator("#detect-summary").get_attribute("data-count")) >= 3
    expect(page.locator("#detect-table tbody tr").first).to_be_visible()
    expect(page.locator("#detect-meta")).to_contain_text("Served by digits-detector v1")
    shot(page.locator("#detector"), "detector")

    # An uploaded file instead of the bundled scene.
    page.locator("#detect-summary").evaluate("el => el.removeAttribute('data-count')")
    page.set_input_files("#detect-file", str(ROOT / "tests" / "data" / "detector" / "scene_000_paper.png"))
    page.wait_for_selector("#detect-summary[data-count]", state="attached")
    expect(page.locator("#detect-summary")).to_contain_text("scene_000_paper.png")
    expect(page.locator("#detect-curl")).to_contain_text("@'scene_000_paper.png'")

    page.click("#denoise-sample")
    page.wait_for_selector("#denoise-after[data-bytes]", state="attached")
    assert page.locator("#denoise-after").evaluate("img => img.naturalWidth") == 28
    expect(page.locator("#denoise-meta")).to_contain_text("Served by digits-denoiser v1")
    shot(page.locator("#denoiser"), "denoiser")


def test_completion_streams(open_page, server):
    page, _ = open_page(server + "/")
    wait_ready(page)
    panel = page.locator("#completion")
    expect(panel).to_have_attribute("data-available", re.compile("true|false"))
    if panel.get_attribute("data-available") == "false":
        expect(page.locator("#complete-unavailable")).to_be_visible()
        shot(panel, "completion")
        pytest.skip("no language model is loaded (GET /models lists no language_model): the panel says so and is disabled")
    out = page.locator("#complete-output")
    # Record each time the token count changes, to see tokens rendered as they arrive.
    out.evaluate(
        "el => { window.__tokenSteps = []; new MutationObserver(() => window.__tokenSteps.push([performance.now(), el.dataset.tokens]))"
        ".observe(el, {attributes: true, attributeFilter: ['data-tokens']}); }"
    )
    page.fill("#complete-prompt", "The ")
    page.fill("#complete-max", "80")
    page.locator("#complete-run").click()
    expect(out).to_have_attribute("data-state", "done", timeout=60_000)
    steps = page.evaluate("window.__tokenSteps")
    tokens = int(out.get_attribute("data-tokens"))
    assert tokens > 1 and len(out.inner_text()) > len("The ")
    assert len({s[1] for s in steps}) > 2, f"tokens did not arrive one by one: {steps[:5]}"
    expect(page.locator("#complete-summary")).to_contain_text("finish reason")
    expect(page.locator("#complete-curl")).to_contain_text('"stream":true')
    shot(panel, "completion")


def try_it_out(page: Page, path: str):
    """Expands GET <path> in Swagger UI, clicks Try it out and Execute, returns the block."""
    block = page.locator(".opblock.opblock-get").filter(has=page.locator(".opblock-summary-path", has_text=re.compile(f"^{re.escape(path)}$"))).first
    block.locator(".opblock-summary").first.click()
    block.locator("button.try-out__btn").click()
    block.locator("button.execute").click()
    expect(block.locator(".live-responses-table .response .response-col_status").first).to_have_text("200", timeout=20_000)
    return block


def test_docs_try_it_out(open_page, server):
    page, watch = open_page(server + "/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("dlserve")
    shot(page, "docs")
    block = try_it_out(page, "/models")
    expect(block.locator(".request-url")).to_contain_text(f"{server}/models")
    expect(block.locator(".live-responses-table")).to_contain_text("digits-cnn")
    block.scroll_into_view_if_needed()
    shot(page, "docs-try-it-out")
    assert any(u == f"{server}/openapi.json" for u in watch.requests)
    axe_check(page, "docs")


def test_behind_a_path_prefix(open_page, proxy):
    srv, base = proxy
    srv.seen.clear()
    page, watch = open_page(base)
    wait_ready(page)
    # Two panels end to end through the prefix, with curl commands naming it.
    page.locator("#generate-form button[type=submit]").click()
    expect(page.locator("#generate-meta")).to_contain_text("digits-cgan")
    expect(page.locator("#generate-curl")).to_contain_text(f"'{base}generate?")
    page.locator("#forecast-form button[type=submit]").click()
    expect(page.locator("#forecast-chart")).to_have_attribute("data-forecast-points", "24")
    expect(page.locator("#forecast-curl")).to_contain_text(f"'{base}forecast'")
    page.goto(base + "docs")
    block = try_it_out(page, "/health/live")
    expect(block.locator(".request-url")).to_contain_text(f"{base}health/live")
    outside = [p for p in srv.seen if not p.startswith(PREFIX + "/")]
    assert not outside, f"requests outside the prefix: {outside}"
    http_requests = [u for u in watch.requests if u.startswith("http")]
    assert all(u.startswith(base) for u in http_requests), [u for u in http_requests if not u.startswith(base)]
    for path in ("ui/playground.js", "ui/series.json", "models", "generate", "ui/vendor/swagger-ui/swagger-ui-bundle.js", "openapi.json", "health/live"):
        assert any(u.startswith(base + path) for u in http_requests), f"no request for {base}{path}"


def test_zz_publish_screenshots():
    """Copies the panel screenshots to docs/screenshots/ for the README (runs last: its name)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    copied = []
    for png in sorted(ARTIFACTS.glob("*.png")):
        shutil.copyfile(png, SCREENSHOTS / png.name)
        copied.append(png.name)
    assert copied, "no screenshots were taken"
