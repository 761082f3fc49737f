"""chat_ui's search box, results and import/export page against a stand-in db_api:
what is asked of db_api, what the page shows (escaped, hits marked), htmx fragments and
plain pages, the upload forwarded as it is, exports passed through as streams."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.chat_ui.conftest import Browser, LiveServer
from tests.chat_ui.fakes import FakeDb

CHAT = "0f0e0d0c-0000-4000-8000-000000000001"
MESSAGE = "0f0e0d0c-0000-4000-8000-000000000002"


def hit(**fields: Any) -> dict[str, Any]:
    return {
        "chat_id": CHAT,
        "chat_title": "Nginx <buffering>",
        "chat_updated_at": "2026-01-01T00:00:00Z",
        "message_id": MESSAGE,
        "role": "user",
        "rank": 1.0,
        "hits": 1,
        "snippet": [
            {"text": "why does <script>alert(1)</script> ", "hit": False},
            {"text": "nginx", "hit": True},
            {"text": " buffer", "hit": False},
        ],
        "title_snippet": [{"text": "Nginx", "hit": True}, {"text": " <buffering>", "hit": False}],
        **fields,
    }


class TransferDb(FakeDb):
    """FakeDb plus db_api's /search, /import and exports, recording what reaches them."""

    def __init__(self) -> None:
        super().__init__()
        self.search_answer: list[dict[str, Any]] = [hit()]
        self.searches: list[tuple[str, dict[str, str]]] = []
        self.uploads: list[tuple[bytes, dict[str, str]]] = []
        self.import_answer: tuple[int, dict[str, Any]] = (
            200,
            {
                "source": "chatgpt",
                "imported": 2,
                "skipped": 1,
                "summary": "2 chats imported, 1 skipped: no messages",
                "chats": [{"id": CHAT, "title": "Imported <one>", "messages": 4}],
                "skipped_chats": [
                    {"chat": "conversation 3", "source_id": "x", "reason": "no messages"}
                ],
            },
        )
        self.export_pieces = [b'{"format":"parlor-chats",', b'"version":1,"chats":[]}']
        self.selected: list[tuple[str, str, Any]] = []

    async def handle_async(self, request: httpx.Request) -> httpx.Response:
        path, owner = request.url.path, request.headers.get("x-owner", "")
        if self.down:
            raise httpx.ConnectError("db_api is down", request=request)
        if path == f"/chats/{CHAT}/current":
            self.selected.append((owner, request.method, json.loads(request.content)))
            return httpx.Response(200, json={})
        if path == "/search":
            self.searches.append((owner, dict(request.url.params)))
            return httpx.Response(200, json=self.search_answer)
        if path == "/import":
            body = await request.aread()
            self.uploads.append((body, dict(request.headers)))
            status, answer = self.import_answer
            return httpx.Response(status, json=answer)
        if path == "/export" or path.endswith("/export"):
            if path != "/export" and path.split("/")[2] != CHAT:
                return httpx.Response(404, json={"detail": "chat not found"})
            markdown = request.url.params.get("format") == "markdown"
            headers = {
                "content-type": "text/markdown; charset=utf-8" if markdown else "application/json",
                "content-disposition": 'attachment; filename="chats.json"',
                "x-internal": "not for the browser",
            }
            return httpx.Response(200, headers=headers, stream=_Pieces(self.export_pieces))
        return await super().handle_async(request)


class _Pieces(httpx.AsyncByteStream):
    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces

    async def __aiter__(self) -> Any:
        for piece in self.pieces:
            yield piece


@pytest.fixture
def fake_db() -> TransferDb:
    return TransferDb()


@pytest.fixture
def ada(browser: Browser) -> Browser:
    browser.login("Ada")
    return browser


# -- Search -------------------------------------------------------------------------------


def test_the_sidebar_has_the_search_box_and_its_script(ada: Browser) -> None:
    page = ada.get("/chats").text
    assert (
        '<form id="search-form" class="search-form" role="search" method="get" action="/search">'
        in page
    )
    assert 'hx-get="/search"' in page and 'hx-trigger="input changed delay:250ms, search"' in page
    assert '<script src="/static/search.js" defer></script>' in page
    assert 'href="/transfer"' in page
    script = ada.get("/static/search.js")
    assert script.status_code == 200 and "ctrlKey" in script.text and "metaKey" in script.text


def test_results_page_without_javascript(ada: Browser, fake_db: TransferDb) -> None:
    response = ada.get("/search", params={"q": "  ngin  "})
    assert response.status_code == 200
    page = response.text
    assert fake_db.searches[-1][1] == {"q": "ngin", "limit": "21", "offset": "0"}
    assert "<html" in page and 'id="search-page-results"' in page
    # Hits marked, everything from the database escaped.
    assert "<mark>nginx</mark>" in page and "<mark>Nginx</mark> &lt;buffering&gt;" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert" not in page
    href = f"/chats/{CHAT}?at={MESSAGE}#msg-{MESSAGE}"
    assert f'href="{href}"' in page
    assert 'value="ngin"' in page  # the box keeps the query


def test_results_as_you_type_are_a_fragment(ada: Browser) -> None:
    response = ada.get("/search", params={"q": "ngin"}, headers={"HX-Request": "true"})
    assert response.status_code == 200
    fragment = response.text.strip()
    assert fragment.startswith('<div id="search-results"') and "<html" not in fragment
    assert "<mark>nginx</mark>" in fragment


def test_owner_scope_and_query_bounds(ada: Browser, fake_db: TransferDb) -> None:
    ada.get("/search", params={"q": "x" * 5000})
    owner, params = fake_db.searches[-1]
    assert len(params["q"]) == 1000 and owner  # cut, not refused
    assert owner == next(iter(fake_db.sessions.values()))
    before = len(fake_db.searches)
    page = ada.get("/search", params={"q": "   "}).text
    assert len(fake_db.searches) == before  # nothing to ask
    assert "No chat matches" not in page
    assert ada.get("/search", params={"q": "x", "offset": "-1"}).status_code in (400, 404)


def test_no_results_and_title_only_results(ada: Browser, fake_db: TransferDb) -> None:
    fake_db.search_answer = []
    assert "No chat matches “zzz”." in ada.get("/search", params={"q": "zzz"}).text
    fake_db.search_answer = [hit(message_id=None, role=None, hits=0, snippet=[])]
    page = ada.get("/search", params={"q": "nginx"}).text
    assert f'href="/chats/{CHAT}"' in page and "search-snippet" not in page


def test_paging_links(ada: Browser, fake_db: TransferDb) -> None:
    fake_db.search_answer = [hit(chat_id=str(uuid.uuid4())) for _ in range(21)]
    page = ada.get("/search", params={"q": "nginx"}).text
    assert page.count('class="search-hit"') == 20
    assert 'href="/search?q=nginx&amp;offset=20"' in page
    fragment = ada.get("/search", params={"q": "nginx"}, headers={"HX-Request": "true"}).text
    assert 'hx-get="/search?q=nginx&amp;offset=20"' in fragment
    page = ada.get("/search", params={"q": "nginx", "offset": "20"}).text
    assert 'href="/search?q=nginx&amp;offset=0"' in page


def test_search_needs_a_login(browser: Browser) -> None:
    response = browser.get("/search", params={"q": "x"})
    assert response.status_code == 303 and response.headers["location"] == "/"


def test_search_with_storage_down(ada: Browser, fake_db: TransferDb) -> None:
    fake_db.down = True
    assert ada.get("/search", params={"q": "x"}).status_code == 503


# -- Import and export ---------------------------------------------------------------------


def upload(
    ada: Browser, content: bytes, name: str = "conversations.json", **kw: Any
) -> httpx.Response:
    files = {"file": (name, content, "application/json")}
    return ada.client.post("/import", data={"csrf_token": ada.csrf, **kw}, files=files)


def test_transfer_page_lists_exports(ada: Browser) -> None:
    chat = ada.new_chat()
    page = ada.get("/transfer").text
    assert 'enctype="multipart/form-data"' in page and 'name="file"' in page
    assert 'href="/export"' in page
    assert f'href="/chats/{chat}/export?format=markdown"' in page
    assert f'href="/chats/{chat}/export?format=json"' in page


def test_upload_is_forwarded_and_the_report_shown(ada: Browser, fake_db: TransferDb) -> None:
    ada.get("/transfer")
    content = json.dumps([{"mapping": {}}]).encode() * 1000
    response = upload(ada, content)
    assert response.status_code == 200
    body, headers = fake_db.uploads[-1]
    assert body == content
    assert headers["x-owner"] == next(iter(fake_db.sessions.values()))
    assert headers.get("content-length") == str(len(content))
    page = response.text
    assert "2 chats imported, 1 skipped: no messages" in page
    assert f'<a href="/chats/{CHAT}">Imported &lt;one&gt;</a>' in page
    assert "conversation 3: no messages" in page


def test_refused_file_says_why(ada: Browser, fake_db: TransferDb) -> None:
    fake_db.import_answer = (422, {"detail": "the messages' parent links form a cycle"})
    ada.get("/transfer")
    response = upload(ada, b"[]", name="loop.json")
    assert response.status_code == 422
    assert (
        "Nothing was imported from loop.json: the messages&#39; parent links form a cycle."
        in response.text
    )


def test_upload_needs_a_file_and_the_form_token(ada: Browser, fake_db: TransferDb) -> None:
    ada.get("/transfer")
    response = ada.client.post("/import", data={"csrf_token": ada.csrf})
    assert response.status_code == 422 and "Choose a file" in response.text
    files = {"file": ("a.json", b"[]", "application/json")}
    assert ada.client.post("/import", data={"csrf_token": "forged"}, files=files).status_code == 403
    assert fake_db.uploads == []


def test_upload_beyond_the_limit(make_ui: Callable[..., LiveServer], fake_db: TransferDb) -> None:
    ui = make_ui(import_max_bytes=10_000)
    ada = Browser(ui.url)
    try:
        ada.login("Ada")
        ada.get("/transfer")
        files = {"file": ("big.json", b" " * 20_000, "application/json")}
        response = ada.client.post("/import", data={"csrf_token": ada.csrf}, files=files)
        assert response.status_code == 413 and "10000 bytes" in response.text
        assert fake_db.uploads == []
        # Elsewhere the ordinary limit holds.
        assert ada.client.post("/chats", content=b"x" * 20_000_000).status_code == 413
    finally:
        ada.close()


def test_exports_are_passed_through(ada: Browser, fake_db: TransferDb) -> None:
    with ada.client.stream("GET", "/export") as response:
        assert response.status_code == 200
        body = response.read()
    assert body == b"".join(fake_db.export_pieces)
    assert response.headers["content-disposition"] == 'attachment; filename="chats.json"'
    assert "x-internal" not in response.headers
    response = ada.get(f"/chats/{CHAT}/export", params={"format": "markdown"})
    assert response.headers["content-type"] == "text/markdown; charset=utf-8"
    assert ada.get(f"/chats/{uuid.uuid4()}/export").status_code == 404
    assert ada.get(f"/chats/{CHAT}/export", params={"format": "pdf"}).status_code in (400, 404)


def test_no_inline_script_on_the_new_pages(ada: Browser) -> None:
    for url in ("/transfer", "/search?q=nginx"):
        page = ada.get(url).text
        assert not re.search(r"<script(?![^>]*\bsrc=)", page), url
        assert " style=" not in page and "onclick" not in page


def test_a_result_in_another_version_selects_its_branch(ada: Browser, fake_db: TransferDb) -> None:
    fake_db.search_answer = [hit(on_current_path=False)]
    page = ada.get("/search", params={"q": "nginx"}).text
    assert f'href="/search/open/{CHAT}/{MESSAGE}"' in page
    response = ada.get(f"/search/open/{CHAT}/{MESSAGE}")
    assert response.status_code == 303
    assert response.headers["location"] == f"/chats/{CHAT}?at={MESSAGE}#msg-{MESSAGE}"
    owner = next(iter(fake_db.sessions.values()))
    assert fake_db.selected == [(owner, "POST", {"message_id": MESSAGE})]
