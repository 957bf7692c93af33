"""Extraction as tables: HTML in, value out. Pure functions, no I/O."""

import time

import pytest

from scrapersky.errors import EmptyBody, NotHTML
from scrapersky.metadata.extract import decode_html, extract_metadata

URL = "https://www.example.com/start/page.html"
HTML = {"content-type": "text/html; charset=utf-8"}


def meta(html: str, headers: dict | None = None, url: str = URL):
    return extract_metadata(html.encode("utf-8"), headers or HTML, url)


@pytest.mark.parametrize(
    ("html", "title"),
    [
        ("<html><head><title>Plain</title></head></html>", "Plain"),
        ("<title>  Spaced \n\t out  </title>", "Spaced out"),
        ("<title>Nested <b>bold</b> <span>markup</span></title>", "Nested bold markup"),
        ("<title>Caf&eacute; &amp; Bar</title>", "Café & Bar"),
        ("<title></title><meta property='og:title' content='From OG'>", "From OG"),
        ("<meta property='og:title' content='Only OG'>", "Only OG"),
        ("<meta name='twitter:title' content='Only Twitter'>", "Only Twitter"),
        ("<html><head></head><body><title>Late title</title></body></html>", "Late title"),
        ("<html><head><meta name=description content=x></head><body>no title</body></html>", None),
    ],
)
def test_title(html: str, title: str | None) -> None:
    assert meta(html).title == title


@pytest.mark.parametrize(
    ("html", "description"),
    [
        ("<meta name='description' content='Meta wins'><meta property='og:description' content='og'>", "Meta wins"),
        ("<meta name='Description' content=' Upper  case '>", "Upper case"),
        ("<meta name='description' content=''><meta property='og:description' content='OG'>", "OG"),
        ("<meta name='twitter:description' content='TW'>", "TW"),
        ("<title>x</title>", None),
    ],
)
def test_description(html: str, description: str | None) -> None:
    assert meta(html).description == description


@pytest.mark.parametrize(
    ("html", "headers", "language"),
    [
        ("<html lang='fr-CA'><head><title>x</title></head></html>", HTML, "fr-CA"),
        ("<html><head><title>x</title></head></html>", {**HTML, "content-language": "de, en"}, "de"),
        ("<html><head><meta property='og:locale' content='pt_BR'></head></html>", HTML, "pt-BR"),
        ("<html lang=''><head><title>x</title></head></html>", HTML, None),
    ],
)
def test_language(html: str, headers: dict, language: str | None) -> None:
    assert meta(html, headers).language == language


@pytest.mark.parametrize(
    ("html", "canonical"),
    [
        ("<link rel='canonical' href='https://example.com/'>", "https://example.com/"),
        ("<link rel='canonical' href='/home'>", "https://www.example.com/home"),
        ("<link rel='canonical' href='../up'>", "https://www.example.com/up"),
        ("<link rel='canonical' href='//cdn.example.com/c'>", "https://cdn.example.com/c"),
        ("<base href='https://other.example/dir/'><link rel='canonical' href='c'>", "https://other.example/dir/c"),
        ("<meta property='og:url' content='/from-og'>", "https://www.example.com/from-og"),
        ("<link rel='canonical' href='javascript:void(0)'>", None),
    ],
)
def test_canonical_url_is_absolute(html: str, canonical: str | None) -> None:
    assert meta(html).canonical_url == canonical


@pytest.mark.parametrize(
    ("html", "favicon", "guessed"),
    [
        ("<link rel='icon' href='/f.png'>", "https://www.example.com/f.png", False),
        ("<link rel='shortcut icon' href='favicon.ico'>", "https://www.example.com/start/favicon.ico", False),
        ("<link rel='icon' href='//static.example.com/i.ico'>", "https://static.example.com/i.ico", False),
        ("<link rel='apple-touch-icon' href='/t.png'><link rel='icon' href='/i.png'>", "https://www.example.com/i.png", False),
        ("<link rel='apple-touch-icon' href='/t.png'>", "https://www.example.com/t.png", False),
        ("<link rel='icon' href='data:image/png;base64,xx'>", "https://www.example.com/favicon.ico", True),
        ("<title>none</title>", "https://www.example.com/favicon.ico", True),
    ],
)
def test_favicon(html: str, favicon: str, guessed: bool) -> None:
    found = meta(html)
    assert (found.favicon_url, found.favicon_guessed) == (favicon, guessed)


def test_social_tags_site_name_image_keywords() -> None:
    found = meta(
        "<meta property='og:site_name' content='Example'>"
        "<meta property='og:image' content='/img/a.png'>"
        "<meta name='twitter:card' content='summary'>"
        "<meta name='keywords' content='a, b,, a , c'>"
    )
    assert found.site_name == "Example"
    assert found.image == "https://www.example.com/img/a.png"
    assert found.open_graph == {"og:site_name": "Example", "og:image": "/img/a.png"}
    assert found.twitter_card == {"twitter:card": "summary"}
    assert found.keywords == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("body", "content_type", "text"),
    [
        # The header's charset comes first.
        ("<title>café</title>".encode("cp1252"), "text/html; charset=windows-1252", "café"),
        # Declared only in a meta tag: no mojibake.
        ("<meta charset='windows-1252'><title>café</title>".encode("cp1252"), "text/html", "café"),
        ('<meta http-equiv="Content-Type" content="text/html; charset=shift_jis"><title>日本語</title>'.encode("shift_jis"), "text/html", "日本語"),
        # A BOM beats a wrong meta tag.
        (b"\xef\xbb\xbf<meta charset='iso-8859-1'><title>\xc3\xa9t\xc3\xa9</title>", None, "été"),
        # An unknown charset label is ignored, not fatal.
        ("<title>naïve</title>".encode(), "text/html; charset=no-such-charset", "naïve"),
    ],
)
def test_decoding(body: bytes, content_type: str | None, text: str) -> None:
    assert text in decode_html(body, content_type)
    assert extract_metadata(body, {"content-type": content_type or ""}, URL).title == text


@pytest.mark.parametrize("body", [b"", b"   \n\t  "])
def test_empty_body(body: bytes) -> None:
    with pytest.raises(EmptyBody):
        extract_metadata(body, HTML, URL)


def test_binary_body_is_not_html() -> None:
    with pytest.raises(NotHTML):
        extract_metadata(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(200), HTML, URL)


@pytest.mark.parametrize(
    ("html", "title", "language"),
    [
        ("<title>unclosed", "unclosed", None),
        ("<html><head><title>x</title><meta content='no name'></head>", "x", None),
        ("<<<>>><title>>>x<<</title>", ">>x<<", None),
        ("<html lang='en'>", None, "en"),
        ("plain text, no tags at all", None, None),
    ],
)
def test_malformed_pages_give_partial_metadata(html: str, title: str | None, language: str | None) -> None:
    found = meta(html)  # no exception, and what the page does say is found
    assert (found.title, found.language) == (title, language)
    assert found.favicon_url == "https://www.example.com/favicon.ico" and found.favicon_guessed


def test_two_thousand_meta_tags_before_the_title() -> None:
    html = "<head>" + "<meta name='x' content='y'>" * 2000 + "<title>many</title></head>"
    meta(html)  # warm-up: imports, parser set-up
    started = time.perf_counter()
    found = meta(html)
    elapsed = time.perf_counter() - started
    assert found.title == "many"
    # About 0.04 s here; a scan quadratic in the tags (2,000 x 2,000) takes seconds.
    assert elapsed < 1.0, f"{elapsed:.2f} s for 2,000 meta tags"


# `<body` or `</head>` inside a comment, a script's string or a style is not where the head ends:
# a meta refresh or a title after it is still the head's.
HEAD_END_DECOYS = [
    "<!-- <body> -->",
    "<!-- </head> -->",
    "<script>var s = '<body class=x>';</script>",
    "<script>document.write(\"</head><body>\")</script>",
    "<script type='text/template'><body></script>",
    "<style>/* <body> */ p { color: red }</style>",
    "<title>see <body></title>",
    "<!--[if IE]><body class='ie'><![endif]-->",
]


@pytest.mark.parametrize("decoy", HEAD_END_DECOYS)
def test_a_decoy_head_end_keeps_a_later_meta_refresh(decoy: str) -> None:
    html = (f"<html><head>{decoy}<meta http-equiv='refresh' content='0; url=/next'>"
            "<meta name='description' content='After the decoy'></head><body><p>x</p></body></html>")
    found = meta(html)
    assert found.refresh_url == "https://www.example.com/next"
    assert found.description == "After the decoy"


@pytest.mark.parametrize("decoy", [d for d in HEAD_END_DECOYS if not d.startswith("<title")])
def test_a_decoy_head_end_keeps_a_later_title(decoy: str) -> None:
    found = meta(f"<html><head>{decoy}<title>Real title</title></head><body><h1>Body</h1></body></html>")
    assert found.title == "Real title"


def test_an_unclosed_comment_or_script_does_not_lose_the_page() -> None:
    assert meta("<html><head><title>T</title><!-- never closed <body>").title == "T"
    assert meta("<html><head><title>T</title><script>var a = '<body>'").title == "T"
