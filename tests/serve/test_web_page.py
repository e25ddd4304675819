"""The chat page at `/` in a real browser: Debian's chromium driven headless by Playwright,
against a real `chatglm3 serve` process on the generated fixtures.

Skipped, saying why, only where chromium (or Playwright) is absent; `.ci/run` installs both.
UPDATE_SCREENSHOTS=1 also writes the screenshots shown in the README into docs/.
"""
from __future__ import annotations

import http.server
import json
import os
import shutil
import struct
import threading
from pathlib import Path

import httpx
import pytest

from .serverproc import KEY, Server
from .test_server import ANSWER, LOOP_CTX, SEARCH

CHROMIUM = os.environ.get("CHATGLM3_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
DOCS = Path(__file__).resolve().parents[2] / "docs"
WAIT = 120_000  # ms: a busy 2-core machine

if not Path(CHROMIUM).exists():
    pytest.skip(f"chromium is not installed ({CHROMIUM} is absent): `apt-get install chromium`",
                allow_module_level=True)
playwright_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def looping(fixtures, tmp_path_factory):
    """A model that never ends its turn, and no API key."""
    server = Server(fixtures.path("scripted-loop"), tmp_path_factory.mktemp("web-loop"), "--parallel", "1",
                    "--ctx", str(LOOP_CTX), api_key=None)
    yield server
    assert server.stop() == 0, "".join(server.stderr)


class Page:
    """One browser context (its own localStorage) on the page, recording what it sends."""

    def __init__(self, browser, server: Server, *, key: str | None = KEY, **context) -> None:
        self.context = browser.new_context(accept_downloads=True, **context)
        self.server = server
        if key:  # the key as an earlier visit kept it
            self.context.add_init_script(f"localStorage.getItem('chatglm3.apiKey') || "
                                         f"localStorage.setItem('chatglm3.apiKey', {json.dumps(key)})")
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.sent: list[dict] = []
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", self._record)
        self.page.set_default_timeout(WAIT)

    def _record(self, request) -> None:
        if request.method == "POST" and request.url.endswith("/v1/chat/completions"):
            self.sent.append(json.loads(request.post_data))

    def open(self) -> "Page":
        self.page.goto(self.server.url + "/")
        self.page.wait_for_function("() => document.getElementById('model-name').textContent !== '…'")
        return self

    def send(self, text: str) -> None:
        self.page.fill("#input", text)
        self.page.press("#input", "Enter")

    def answers(self) -> list[str]:
        return self.page.locator(".msg.assistant .body").all_inner_texts()

    # Conditions are arrow functions: Playwright evaluates a bare expression with eval(), which
    # the page's Content-Security-Policy refuses (as it should).

    def wait_answered(self, n: int) -> None:
        """Until the n-th answer has its closing line (tokens, tokens/s, context)."""
        self.page.wait_for_function(f"() => document.querySelectorAll('.msg.assistant .stats').length >= {n}")

    def titles(self) -> list[str]:
        return self.page.locator("#conversations .title").all_inner_texts()

    def close(self) -> None:
        self.context.close()
        assert not self.errors, self.errors


def test_the_key_is_asked_once_then_an_answer_streams(browser, scripted, fixtures):
    p = Page(browser, scripted, key=None)
    try:
        page = p.page
        page.goto(scripted.url + "/")
        page.wait_for_selector("#key-dialog[open]")
        page.fill("#key-input", "wrong-key")
        page.press("#key-input", "Enter")
        page.wait_for_selector("#key-dialog[open] #key-error:not([hidden])")
        assert "API key" in page.inner_text("#key-error")
        page.fill("#key-input", KEY)
        page.press("#key-input", "Enter")
        page.wait_for_function("() => document.getElementById('model-name').textContent === 'scripted chatglm3'")
        assert page.inner_text("#model-family") == "chatglm3"

        page.fill("#input", "Hello")
        page.press("#input", "Shift+Enter")  # a new line, not a send
        page.type("#input", "there")
        assert page.input_value("#input") == "Hello\nthere" and not p.sent
        page.fill("#input", "Hello there")
        page.press("#input", "Enter")
        p.wait_answered(1)
        assert p.answers() == [ANSWER]
        assert p.sent[-1]["stream"] is True and p.sent[-1]["messages"] == [{"role": "user", "content": "Hello there"}]
        stats = page.inner_text(".msg.assistant .stats")
        tokens = len(fixtures.sidecar("scripted")["answer_ids"])
        assert stats.startswith(f"{tokens} tokens · ") and "tokens/s" in stats and "/256 (" in stats

        # Kept: a reload asks for no key and shows the conversation.
        page.reload()
        page.wait_for_function("() => document.getElementById('model-name').textContent === 'scripted chatglm3'")
        assert not page.locator("#key-dialog[open]").count()
        assert p.titles() == ["Hello there"]
    finally:
        p.close()


def test_stop_ends_the_answer_and_frees_the_sequence(browser, looping):
    p = Page(browser, looping, key=None).open()
    try:
        page = p.page
        before = looping.metrics().get('chatglm3_requests_finished_total{reason="cancelled"}', 0)
        p.send("talk")
        page.wait_for_selector("#stop:not([hidden])")
        # The answer shows while it streams (this model never ends its turn).
        page.wait_for_function("() => (document.querySelector('.msg.assistant .body') || {}).innerText?.length > 40")
        page.click("#stop")
        page.wait_for_selector(".msg.assistant .stats")
        assert "stopped" in page.inner_text(".msg.assistant .stats")
        assert page.is_hidden("#stop") and page.is_visible("#send")
        assert p.answers()[0].startswith("Hello! I am ChatGLM3")
        looping.wait_metrics(lambda m: m["chatglm3_sequences_active"] == 0 and
                             m.get('chatglm3_requests_finished_total{reason="cancelled"}', 0) == before + 1)
    finally:
        p.close()


def test_reload_edit_and_regenerate(browser, scripted):
    p = Page(browser, scripted).open()
    try:
        page = p.page
        p.send("Hello there")
        p.wait_answered(1)
        page.reload()
        page.wait_for_selector("#conversations .title")
        page.click("#conversations .title")
        assert page.locator(".msg.user .body").all_inner_texts() == ["Hello there"] and p.answers() == [ANSWER]

        page.click(".msg.user .edit")
        page.fill(".msg.user .edit-area", "Hello again")
        page.click(".msg.user .save-edit")
        page.wait_for_function("() => document.querySelectorAll('.msg').length === 2 && "
                               "document.querySelector('.msg.assistant .stats')")
        assert page.locator(".msg.user .body").all_inner_texts() == ["Hello again"] and p.answers() == [ANSWER]
        assert p.sent[-1]["messages"] == [{"role": "user", "content": "Hello again"}]

        page.click(".msg.assistant .regenerate")
        page.wait_for_function("() => document.querySelectorAll('.msg').length === 2 && "
                               "document.querySelector('.msg.assistant .stats')")
        assert len(p.sent) == 3 and p.sent[-1]["messages"] == p.sent[-2]["messages"] and p.answers() == [ANSWER]

        # The settings go with the request; empty ones are the server's defaults.
        page.click("#open-settings")
        assert page.get_attribute("#set-temperature", "placeholder") == "0.8"
        page.fill("#set-system", "Be brief.")
        page.fill("#set-temperature", "0")
        page.fill("#set-max-tokens", "64")
        page.click("#save-settings")
        p.send("Hello there")
        p.wait_answered(2)
        sent = p.sent[-1]
        assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
        assert sent["temperature"] == 0 and sent["max_tokens"] == 64 and "top_p" not in sent
        assert [m["role"] for m in sent["messages"]] == ["system", "user", "assistant", "user"]
    finally:
        p.close()


def test_export_rename_search_delete_and_import(browser, scripted, fixtures, tmp_path):
    scripted_id = fixtures.path("scripted").stem
    p = Page(browser, scripted).open()
    try:
        page = p.page
        p.send("Hello there")
        p.wait_answered(1)
        page.once("dialog", lambda d: d.accept("Greetings"))
        page.click("#conversations .rename")
        page.wait_for_function("() => document.querySelector('#conversations .title').textContent === 'Greetings'")
        page.click("#new-chat")
        p.send("Second chat")
        p.wait_answered(1)
        assert sorted(p.titles()) == ["Greetings", "Second chat"]
        page.fill("#search", "second")
        assert p.titles() == ["Second chat"]
        page.fill("#search", "chatglm3")  # matches the answers' text too
        assert sorted(p.titles()) == ["Greetings", "Second chat"]
        page.fill("#search", "")

        with page.expect_download() as dl:
            page.click("#export-all")
        everything = tmp_path / "all.json"
        dl.value.save_as(everything)
        data = json.loads(everything.read_text())
        assert data["format"] == "chatglm3-conversations" and len(data["conversations"]) == 2
        greet = next(c for c in data["conversations"] if c["title"] == "Greetings")
        assert [m["content"] for m in greet["messages"]] == ["Hello there", ANSWER]
        asked = greet["messages"][1]["asked"]  # what the answer was asked with
        assert asked["model"] == scripted_id and asked["time"] and greet["messages"][1]["stats"]["tokens"] > 0
        with page.expect_download() as dl:
            page.locator("#conversations li", has_text="Greetings").locator(".export").click()
        one = tmp_path / "one.json"
        dl.value.save_as(one)
        assert [c["title"] for c in json.loads(one.read_text())["conversations"]] == ["Greetings"]

        for _ in range(2):
            page.once("dialog", lambda d: d.accept())
            page.click("#conversations .delete")
        page.wait_for_function("() => !document.querySelector('#conversations .title')")
        bad = tmp_path / "bad.json"
        bad.write_text('{"format": "chatglm3-conversations", "conversations": [{"id": 1}]}')
        page.set_input_files("#import-file", str(bad))
        page.wait_for_selector("#status:not([hidden])")
        assert "Cannot import" in page.inner_text("#status") and not p.titles()
        page.set_input_files("#import-file", str(one))
        page.wait_for_function("() => document.querySelector('#conversations .title')?.textContent === 'Greetings'")
        assert page.locator(".msg.user .body").all_inner_texts() == ["Hello there"] and p.answers() == [ANSWER]
        page.set_input_files("#import-file", str(everything))
        page.wait_for_function("() => document.querySelectorAll('#conversations .title').length === 3")
        page.reload()  # imported conversations are kept
        page.wait_for_function("() => document.querySelectorAll('#conversations .title').length === 3")
    finally:
        p.close()


def test_a_tool_call_is_shown_as_such_and_its_result_goes_back(browser, fixtures, tmp_path):
    server = Server(fixtures.path("scripted-tool"), tmp_path, "--parallel", "1", "--ctx", "512")
    p = Page(browser, server).open()
    try:
        page = p.page
        page.click("#open-settings")
        page.fill("#set-tools", "not json")
        page.click("#save-settings")
        assert "Tools" in page.inner_text("#settings-error") and page.locator("#settings[open]").count()
        page.fill("#set-tools", json.dumps([SEARCH]))
        page.click("#save-settings")
        p.send("Weather in Paris?")
        p.wait_answered(1)
        call = page.inner_text(".msg.assistant .tool-call")
        assert "Tool call: search" in call and json.loads(call.split("\n", 1)[1]) == {"city": "Paris"}
        assert p.sent[-1]["tools"] == [SEARCH]
        assert "tool's result" in page.get_attribute("#input", "placeholder")
        p.send('{"temp": 21}')
        p.wait_answered(2)
        sent = p.sent[-1]["messages"]
        assert [m["role"] for m in sent] == ["user", "assistant", "tool"]
        (tc,) = sent[1]["tool_calls"]
        assert tc["function"]["name"] == "search" and sent[2]["tool_call_id"] == tc["id"].strip() != ""
        assert page.locator(".msg.tool .body").inner_text() == '{"temp": 21}'
    finally:
        p.close()
        assert server.stop() == 0


MARKDOWN = ("ChatGLM3 comes in these sizes:\n\n| model | context | family |\n| --- | --- | --- |\n"
            "| chatglm3-6b | 8K | chatglm3 |\n| chatglm3-6b-32k | 32K | chatglm3 |\n\n"
            "To ask it from Python:\n\n```python\nfrom chatglm3_cli import Model, Message\n\n"
            "with Model(\"chatglm3-6b.Q4_K_M.gguf\") as m:\n    print(m.chat([Message(\"user\", \"Hello\")]).text)\n```\n")
HOSTILE = ("**bold** <img src=x onerror=\"window.__pwned=1\"><script>window.__pwned=2</script>"
           "[link](javascript:window.__pwned=3)<iframe src=\"/\"></iframe>")


def _png_size(path: Path) -> tuple[int, int]:
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


def test_markdown_is_rendered_sanitized_and_fits_a_phone(browser, scripted, tmp_path):
    """Imported answers with a table, code and hostile HTML, at phone width in the dark theme."""
    hostile = {"id": "bad", "title": "Hostile", "messages": [
        {"role": "user", "content": "Say something nasty"}, {"role": "assistant", "content": HOSTILE}]}
    conv = {"id": "md", "title": "Markdown", "messages": [
        {"role": "user", "content": "Which ChatGLM3 models are there, and how do I use one?"},
        {"role": "assistant", "content": MARKDOWN, "stats": {"tokens": 42, "tps": 17.3, "context": 80}},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "search", "arguments": '{"city": "Paris"}'}}]}]}
    file = tmp_path / "md.json"
    file.write_text(json.dumps({"format": "chatglm3-conversations", "version": 1, "conversations": [conv, hostile]}))
    p = Page(browser, scripted, viewport={"width": 390, "height": 844}, device_scale_factor=2,
             color_scheme="dark", is_mobile=True, has_touch=True).open()
    try:
        page = p.page
        page.set_input_files("#import-file", str(file))
        page.wait_for_selector(".md strong")  # the last one imported is open: the hostile one
        assert page.evaluate("window.__pwned") is None
        assert not page.locator(".md script, .md iframe, .md img[onerror], .md a[href^='javascript']").count()
        page.click("#toggle-sidebar")  # at phone width the list is a drawer
        page.locator("#conversations .title", has_text="Markdown").click()
        page.wait_for_selector(".md table")
        page.wait_for_function("() => document.getElementById('sidebar').getBoundingClientRect().right <= 0")
        assert page.locator(".md th").all_inner_texts() == ["model", "context", "family"]
        assert page.locator(".md pre code.hljs").count() == 1 and page.locator(".md pre .copy").count() == 1
        assert "Tool call: search" in page.inner_text(".tool-call") and '"city": "Paris"' in page.inner_text(".tool-call")
        assert page.evaluate("document.documentElement.dataset.theme") == "dark"
        # Phone width: the list is a drawer, nothing overflows sideways, the composer is on screen.
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        assert not page.locator("#sidebar").is_visible() or page.locator("#sidebar").bounding_box()["x"] < -100
        assert page.locator("#input").bounding_box()["y"] < 844
        page.click("#toggle-sidebar")
        page.wait_for_function("() => document.getElementById('sidebar').getBoundingClientRect().x >= 0")
        page.click("#backdrop", position={"x": 370, "y": 400})
        page.wait_for_selector("#status", state="hidden")  # "Imported 2 conversations." goes away
        page.wait_for_function("() => document.getElementById('sidebar').getBoundingClientRect().right <= 0")
        shot = tmp_path / "phone.png"
        page.screenshot(path=str(shot))
        assert _png_size(shot) == (780, 1688)
        if os.environ.get("UPDATE_SCREENSHOTS"):
            shutil.copy(shot, DOCS / "web-chat-phone.png")
        page.click("#theme")  # the choice is kept over the system's
        assert page.evaluate("document.documentElement.dataset.theme") == "light"
        page.reload()  # a new chat opens; the conversations are in the list
        page.wait_for_selector("#conversations .title")
        assert page.evaluate("document.documentElement.dataset.theme") == "light"
        assert page.evaluate("document.getElementById('hljs-dark').disabled") is True
        if os.environ.get("UPDATE_SCREENSHOTS"):
            page.set_viewport_size({"width": 1280, "height": 720})
            page.locator("#conversations .title", has_text="Markdown").click()
            page.wait_for_selector(".md table")
            page.screenshot(path=str(DOCS / "web-chat.png"))
    finally:
        p.close()


# security ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def other_origin():
    """A page on another origin (another port): what a web site the user visits could run."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            body = b"<!doctype html><title>elsewhere</title><p>another site"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


CROSS = """async ([url, key]) => {
    const headers = {"Content-Type": "application/json"};
    if (key) headers.Authorization = "Bearer " + key;
    const tries = {
      models: () => fetch(url + "/v1/models", {headers: key ? {Authorization: "Bearer " + key} : {}}),
      chat: () => fetch(url + "/v1/chat/completions", {method: "POST", headers,
        body: JSON.stringify({messages: [{role: "user", content: "hi"}], max_tokens: 1})}),
      ollama: () => fetch(url + "/api/tags"),
      page: () => fetch(url + "/"),
    };
    // A "simple" request (no preflight) may reach the server, but its answer stays unreadable.
    const blind = await fetch(url + "/v1/chat/completions", {method: "POST", mode: "no-cors",
      body: JSON.stringify({messages: [{role: "user", content: "hi"}], max_tokens: 1})});
    const out = {};
    for (const [name, go] of Object.entries(tries)) {
      try { const r = await go(); out[name] = "read " + r.status + " " + (await r.text()).slice(0, 40); }
      catch (e) { out[name] = "blocked: " + e.name; }
    }
    out.blind = blind.type + " " + blind.status + " " + JSON.stringify(await blind.text());
    return out;
}"""


def test_a_page_on_another_origin_cannot_use_the_server(browser, looping, scripted, other_origin):
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(other_origin)
        # A server without a key: the browser refuses every read (no CORS header is ever sent).
        out = page.evaluate(CROSS, [looping.url, None])
        assert out.pop("blind") == 'opaque 0 ""', out
        assert all(v == "blocked: TypeError" for v in out.values()), out
        # Even a page that somehow had the key could not use it from there.
        out = page.evaluate(CROSS, [scripted.url, KEY])
        assert out.pop("blind") == 'opaque 0 ""', out
        assert all(v == "blocked: TypeError" for v in out.values()), out
    finally:
        context.close()
    with httpx.Client(base_url=looping.url, timeout=60, trust_env=False) as h:
        origin = {"Origin": other_origin.rstrip("/")}
        pre = h.options("/v1/chat/completions", headers={**origin, "Access-Control-Request-Method": "POST",
                                                         "Access-Control-Request-Headers": "content-type"})
        for r in (pre, h.get("/v1/models", headers=origin), h.get("/", headers=origin)):
            assert not any(k.lower().startswith("access-control-") for k in r.headers), r.headers
        page_headers = h.get("/").headers
        assert "script-src 'self'" in page_headers["content-security-policy"]
        assert "frame-ancestors 'none'" in page_headers["content-security-policy"]
        assert h.get("/web/%2E%2E/app.py").status_code == 404 and h.get("/web/nothing.js").status_code == 404
