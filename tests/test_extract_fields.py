"""The full field set, each fallback path as a table: HTML in, value out."""

from __future__ import annotations

import json

import pytest
from helpers import json_strings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scrapersky.errors import DomainError
from scrapersky.metadata.extract import SiteMetadata, extract_metadata

URL = "https://www.example.de/"
HTML = {"content-type": "text/html; charset=utf-8"}


def meta(html: str, headers: dict | None = None, url: str = URL):
    return extract_metadata(html.encode("utf-8"), {**HTML, **(headers or {})}, url)


def page(head: str = "", body: str = "") -> str:
    return f"<html><head><title>t</title>{head}</head><body>{body}</body></html>"


@pytest.mark.parametrize(
    ("html", "title"),
    [
        (page("<meta property='og:title' content='Headline'>").replace("<title>t", "<title>Headline | Site"), "Headline"),
        (page("<meta property='og:site_name' content='Site'>").replace("<title>t", "<title>Headline — Site"), "Headline"),
        # an og:title that is only a prefix of a longer phrase is no suffix to drop
        (page("<meta property='og:title' content='Acme'>").replace("<title>t", "<title>Acme Tools"), "Acme Tools"),
        # where they disagree, og:title is the headline the page chose (issue 15)
        (page("<meta property='og:title' content='Other'>").replace("<title>t", "<title>Mine"), "Other"),
        # ... unless it is only the site's name
        (page("<meta property='og:title' content='Site'><meta property='og:site_name' content='Site'>")
         .replace("<title>t", "<title>Mine"), "Mine"),
    ],
)
def test_title_without_the_appended_site_name(html: str, title: str) -> None:
    assert meta(html).title == title


@pytest.mark.parametrize(
    ("body", "emails"),
    [
        ("<a href='mailto:Info@Example.DE?subject=Hi'>write</a>", ["Info@example.de"]),
        ("<a href='mailto:a%40example.de'>x</a>", ["a@example.de"]),
        ("<p>Contact: sales@example.de or sales@example.de</p>", ["sales@example.de"]),
        ("<p>office [at] example [dot] de</p>", ["office@example.de"]),
        ("<p>office(at)example.de</p>", ["office@example.de"]),
        ("<img src='/img/logo@2x.png'><p>icon@3x.webp and sprite@2x.svg</p>", []),
        ("<script>var x = 'hidden@example.de';</script>", []),
        ("<p>not an address: @handle, a@b, user@localhost</p>", []),
    ],
)
def test_emails(body: str, emails: list[str]) -> None:
    assert meta(page(body=body)).emails == emails


def test_emails_from_json_ld_come_after_the_page() -> None:
    ld = '<script type="application/ld+json">{"@type": "Organization", "email": "mailto:ld@example.de"}</script>'
    assert meta(page(ld, "<a href='mailto:first@example.de'>m</a>")).emails == ["first@example.de", "ld@example.de"]


@pytest.mark.parametrize(
    ("html", "url", "phones"),
    [
        # tel: links first, E.164 when valid (region from the ccTLD .de)
        (page(body="<a href='tel:030 1234567'>call</a>"), URL, ["+49301234567"]),
        (page(body="<a href='tel:+1-202-555-0143'>call</a>"), URL, ["+12025550143"]),
        # not a valid number: kept as written, not invented
        (page(body="<a href='tel:12345'>x</a>"), URL, ["12345"]),
        # text patterns when the page declares no tel: link; region from html lang
        ("<html lang='en-US'><body><p>Call (202) 555-0143 today</p></body></html>", "https://x.com/", ["+12025550143"]),
        ("<html><body><p>Tel. +44 20 7946 0018</p></body></html>", "https://x.com/", ["+442079460018"]),
        # no region and no +: too uncertain to normalise, so not reported from text
        ("<html><body><p>Call 202 555 0143</p></body></html>", "https://x.com/", []),
        ("<html lang='en-US'><body><p>Founded 2014-12-01, order 1234567</p></body></html>", "https://x.com/", []),
    ],
)
def test_phones(html: str, url: str, phones: list[str]) -> None:
    assert meta(html, url=url).phones == phones


@pytest.mark.parametrize(
    ("href", "network", "profile"),
    [
        ("https://www.facebook.com/examplecorp/", "facebook", "https://www.facebook.com/examplecorp"),
        ("https://twitter.com/example", "x", "https://twitter.com/example"),
        ("https://x.com/example", "x", "https://x.com/example"),
        ("https://www.linkedin.com/company/example-gmbh/", "linkedin", "https://www.linkedin.com/company/example-gmbh"),
        ("https://instagram.com/example", "instagram", "https://instagram.com/example"),
        ("https://www.youtube.com/@example", "youtube", "https://www.youtube.com/@example"),
        ("https://www.youtube.com/channel/UC123", "youtube", "https://www.youtube.com/channel/UC123"),
        ("https://www.tiktok.com/@example", "tiktok", "https://www.tiktok.com/@example"),
        ("https://www.pinterest.de/example/", "pinterest", "https://www.pinterest.de/example"),
        ("https://github.com/example", "github", "https://github.com/example"),
    ],
)
def test_social_profiles(href: str, network: str, profile: str) -> None:
    assert meta(page(body=f"<a href='{href}'>x</a>")).social_links == {network: profile}


@pytest.mark.parametrize(
    "href",
    [
        "https://www.facebook.com/sharer/sharer.php?u=https://example.de",
        "https://twitter.com/intent/tweet?text=hi",
        "https://twitter.com/share?url=x",
        "https://www.linkedin.com/shareArticle?mini=true",
        "https://pinterest.com/pin/create/button/?url=x",
        "https://www.youtube.com/watch?v=abc",
        "https://www.instagram.com/p/Cx123/",
        "https://www.facebook.com/",
        "https://github.com/example/repo/issues",
    ],
)
def test_share_intent_and_content_links_are_not_profiles(href: str) -> None:
    assert meta(page(body=f"<a href='{href}'>x</a>")).social_links == {}


ORG = """<script type="application/ld+json">
{"@context": "https://schema.org", "@graph": [
  {"@type": "WebSite", "name": "Example Site"},
  {"@type": ["Organization", "LocalBusiness"], "name": "Example GmbH",
   "logo": {"@type": "ImageObject", "url": "/media/logo.svg"},
   "sameAs": ["https://www.linkedin.com/company/example-gmbh"],
   "telephone": "+49 30 1234567", "email": "hello@example.de",
   "address": {"@type": "PostalAddress", "streetAddress": "Hauptstr. 1", "postalCode": "10115",
               "addressLocality": "Berlin", "addressCountry": "DE"}}
]}
</script>"""


def test_json_ld_organization() -> None:
    found = meta(page(ORG))
    assert found.organization is not None
    assert found.organization.model_dump() == {
        "name": "Example GmbH",
        "logo": "/media/logo.svg",
        "same_as": ["https://www.linkedin.com/company/example-gmbh"],
        "telephone": "+49 30 1234567",
        "email": "hello@example.de",
        "address": "Hauptstr. 1, 10115, Berlin, DE",
    }
    assert found.site_name == "Example Site"  # WebSite name when there is no og:site_name
    assert found.logo_url == "https://www.example.de/media/logo.svg"
    assert found.phones == ["+49301234567"]
    assert found.social_links == {"linkedin": "https://www.linkedin.com/company/example-gmbh"}


@pytest.mark.parametrize(
    "blocks",
    [
        ['{"@type": "Organization", "name": "Trailing",}'],  # a trailing comma
        ['<!-- {"@type": "Organization", "name": "Trailing"} -->'],  # wrapped in a comment
        ["{not json", '{"@type": "Organization", "name": "Trailing"}'],  # one bad block of two
        ['[{"@type": "Article", "publisher": {"@type": "Organization", "name": "Trailing"}}]'],
    ],
)
def test_json_ld_is_read_tolerantly(blocks: list[str]) -> None:
    head = "".join(f'<script type="application/ld+json">{b}</script>' for b in blocks)
    assert meta(page(head)).organization.name == "Trailing"


@pytest.mark.parametrize(
    ("body", "logo"),
    [
        # the logo <img> of the header, the navigation or the link home
        ("<header><img class='site-logo' src='/a.png'><img src='/b.png'></header>", "https://www.example.de/a.png"),
        ("<div id='header'><img id='logo' src='//cdn.example.de/l.png'></div>", "https://cdn.example.de/l.png"),
        ("<nav><a href='/'><img alt='Example Logo' src='l.png'></a></nav>", "https://www.example.de/l.png"),
        ("<a href='https://www.example.de/'><img src='/img/company-logo.svg'></a>",
         "https://www.example.de/img/company-logo.svg"),
        ("<main><img itemprop='logo' src='/brand.png'></main>", "https://www.example.de/brand.png"),
        # not a picture that merely says "logo" elsewhere (a client's, a partner's)
        ("<main><img class='client-logo' src='/acme.png'></main>", None),
        ("<header><img src='/photo.jpg' alt='team'></header>", None),
    ],
)
def test_logo_from_the_header_image_that_says_so(body: str, logo: str | None) -> None:
    assert meta(page(body=body)).logo_url == logo


def names(found, category: str) -> dict[str, tuple[str | None, str | None]]:
    return {t.name: (t.version, t.id) for t in getattr(found.tech_stack, category)}


@pytest.mark.parametrize(
    ("html", "headers", "category", "expected"),
    [
        (page("<meta name='generator' content='WordPress 6.4.2'>"), {}, "cms", {"WordPress": ("6.4.2", None)}),
        (page(body="<img src='/wp-content/uploads/a.jpg'>"), {}, "cms", {"WordPress": (None, None)}),
        (page(), {"link": '<https://example.de/wp-json/>; rel="https://api.w.org/"'}, "cms", {"WordPress": (None, None)}),
        (page(), {"set-cookie": "wordpress_test_cookie=WP; path=/"}, "cms", {"WordPress": (None, None)}),
        (page(body="<script src='//cdn.shopify.com/s/files/app.js'></script>"), {}, "cms", {"Shopify": (None, None)}),
        (page(), {"x-shopify-stage": "production"}, "cms", {"Shopify": (None, None)}),
        (page("<meta name='generator' content='Wix.com Website Builder'>"), {}, "cms", {"Wix": (None, None)}),
        (page(body="<img src='https://images.squarespace-cdn.com/content/a.png'>"), {}, "cms", {"Squarespace": (None, None)}),
        (page("<meta name='Generator' content='Drupal 10 (https://www.drupal.org)'>"), {}, "cms", {"Drupal": ("10", None)}),
        (page("<meta name='generator' content='Joomla! - Open Source Content Management'>"), {}, "cms", {"Joomla": (None, None)}),
        (page("<meta name='generator' content='Webflow'>"), {}, "cms", {"Webflow": (None, None)}),
        (page("<meta name='generator' content='Ghost 5.75'>"), {}, "cms", {"Ghost": ("5.75", None)}),
        (page("<meta name='generator' content='Elementor 3.18.3; features: e_dom_optimization'>"), {}, "builders_plugins", {"Elementor": ("3.18.3", None)}),
        (page(body="<link rel='stylesheet' href='/wp-content/themes/Divi/style.css'>"), {}, "builders_plugins", {"Divi": (None, None)}),
        (page(body="<script src='/wp-content/plugins/woocommerce/assets/js/x.js'></script>"), {}, "builders_plugins", {"WooCommerce": (None, None)}),
        (page('<script type="application/ld+json" class="yoast-schema-graph">{}</script>'), {}, "builders_plugins", {"Yoast SEO": (None, None)}),
        (page(body="<link href='/wp-content/plugins/contact-form-7/includes/css/styles.css' rel='stylesheet'>"), {}, "builders_plugins", {"Contact Form 7": (None, None)}),
        (page("<script async src='https://www.googletagmanager.com/gtag/js?id=G-ABC123'></script>"), {}, "analytics", {"Google Analytics": (None, "G-ABC123")}),
        (page("<script>(function(w,d,s,l,i){j.src='https://www.googletagmanager.com/gtm.js?id='+i+dl;})(window,document,'script','dataLayer','GTM-XYZ9');</script>"), {}, "analytics", {"Google Tag Manager": (None, "GTM-XYZ9")}),
        (page(body="<noscript><iframe src='https://www.googletagmanager.com/ns.html?id=GTM-XYZ9'></iframe></noscript>"), {}, "analytics", {"Google Tag Manager": (None, "GTM-XYZ9")}),
        (page("<script>fbq('init', '1234567890');</script>"), {}, "analytics", {"Facebook Pixel": (None, "1234567890")}),
        (page("<script>(function(h,o,t,j,a,r){h._hjSettings={hjid:3141592,hjsv:6};a.src='https://static.hotjar.com/c/hotjar-'})</script>"), {}, "analytics", {"Hotjar": (None, "3141592")}),
        (page(body="<div id='__next'></div><script id='__NEXT_DATA__' type='application/json'>{}</script><script src='/_next/static/chunks/main.js'></script>"), {}, "frameworks", {"Next.js": (None, None)}),
        (page(body="<div id='app' data-v-app=''></div>"), {}, "frameworks", {"Vue": (None, None)}),
        (page(body="<script src='/_nuxt/entry.js'></script>"), {}, "frameworks", {"Nuxt": (None, None)}),
        (page(body="<app-root ng-version='17.0.5'></app-root>"), {}, "frameworks", {"Angular": ("17.0.5", None)}),
        (page(body="<script src='https://code.jquery.com/jquery-3.7.1.min.js'></script>"), {}, "frameworks", {"jQuery": ("3.7.1", None)}),
        (page("<link rel='stylesheet' href='https://cdn.jsdelivr.net/npm/bootstrap@5.3.2/dist/css/bootstrap.min.css'>"), {}, "frameworks", {"Bootstrap": ("5.3.2", None)}),
        (page(body="<script src='https://unpkg.com/react@18.2.0/umd/react.production.min.js'></script>"), {}, "frameworks", {"React": ("18.2.0", None)}),
        (page(body="<script src='https://widget.intercom.io/widget/abc'></script>"), {}, "widgets", {"Intercom": (None, None)}),
        (page(body="<script src='https://js.driftt.com/include/1/x.js'></script>"), {}, "widgets", {"Drift": (None, None)}),
        (page(body="<script id='ze-snippet' src='https://static.zdassets.com/ekr/snippet.js?key=k'></script>"), {}, "widgets", {"Zendesk": (None, None)}),
        (page(body="<script src='//js.hs-scripts.com/123.js'></script>"), {}, "widgets", {"HubSpot": (None, None)}),
        (page(body="<form action='https://example.us1.list-manage.com/subscribe/post?u=1'></form>"), {}, "widgets", {"Mailchimp": (None, None)}),
    ],
)
def test_tech_stack_detection_with_evidence(html: str, headers: dict, category: str, expected: dict) -> None:
    found = meta(html, headers)
    assert names(found, category) == expected
    for tech in getattr(found.tech_stack, category):
        assert tech.evidence  # every detection says why


@pytest.mark.parametrize(
    "html",
    [
        # words in text, links to the product's site, or names in prose are no evidence
        page(body="<p>We love WordPress, Shopify, Wix and React. Powered by jQuery!</p>"),
        page(body="<a href='https://wordpress.org/'>Proudly powered by WordPress</a>"),
        page(body="<a href='https://www.shopify.com/'>Shopify</a><a href='https://reactjs.org'>React</a>"),
        page("<meta name='description' content='Our Drupal and Joomla agency builds with Elementor'>"),
    ],
)
def test_no_detection_from_a_mere_mention(html: str) -> None:
    stack = meta(html).tech_stack
    assert all(getattr(stack, c) == [] for c in ("cms", "builders_plugins", "analytics", "frameworks", "widgets"))


@pytest.mark.parametrize(
    ("head", "refresh"),
    [
        ("<meta http-equiv='refresh' content='0; url=/new/'>", "https://www.example.de/new/"),
        ("<meta http-equiv='Refresh' content=\"5;URL='https://other.example/'\">", "https://other.example/"),
        ("<noscript><meta http-equiv='refresh' content='0; url=/nojs'></noscript>", None),
        ("<meta http-equiv='refresh' content='30'>", None),
    ],
)
def test_meta_refresh_target(head: str, refresh: str | None) -> None:
    assert meta(page(head)).refresh_url == refresh


def test_a_page_with_every_field() -> None:
    html = page(
        "<meta name='description' content='All of it'><meta name='keywords' content='a,b'>"
        "<meta property='og:site_name' content='Example'><meta property='og:image' content='/og.png'>"
        "<meta name='twitter:card' content='summary'><link rel='canonical' href='/'>"
        "<link rel='icon' href='/favicon.png'><meta name='generator' content='WordPress 6.4'>" + ORG,
        "<header><img class='logo' src='/logo.png'></header>"
        "<footer><a href='mailto:hello@example.de'>mail</a><a href='tel:+49301234567'>call</a>"
        "<a href='https://www.facebook.com/example'>fb</a></footer>",
    ).replace("<html>", "<html lang='de-DE'>")
    found = meta(html)
    for name in ("title", "description", "keywords", "language", "canonical_url", "site_name", "image",
                 "favicon_url", "logo_url", "open_graph", "twitter_card", "organization", "emails",
                 "phones", "social_links"):
        assert getattr(found, name), name
    assert found.tech_stack.cms[0].name == "WordPress"
    assert found.logo_url == "https://www.example.de/media/logo.svg"  # JSON-LD's logo first


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=st.one_of(
        st.binary(max_size=3000),
        st.text(max_size=2000).map(lambda t: t.encode("utf-8", "surrogatepass")),
        st.lists(
            st.sampled_from(["<html", "<head>", "</head>", "<body>", "<title>", "</title>", "<meta ",
                             "content='", "http-equiv=refresh", "<a href='", "mailto:", "tel:", "<script",
                             'type="application/ld+json">', "{", "}", "\"@type\"", "<img class=logo",
                             "<base href='", "//", "\x00", "\xff", "é", ">", "'", '"', " ", "@", "[at]"]),
            max_size=60,
        ).map(lambda parts: "".join(parts).encode("utf-8", "replace")),
    ),
    content_type=st.one_of(
        st.none(), st.sampled_from(["text/html", "text/html; charset=utf-8", "text/html; charset=bogus",
                                    "text/html; charset=shift_jis", "text/html; charset=utf-16"]),
        st.text(max_size=40),
    ),
    url=st.sampled_from(["https://example.com/", "http://例え.jp/a?b#c", "https://x.test/"]),
)
def test_arbitrary_bytes_and_headers_never_raise_anything_else(body: bytes, content_type, url: str) -> None:
    headers = {} if content_type is None else {"content-type": content_type}
    try:
        found = extract_metadata(body, headers, url)
    except DomainError as error:
        assert error.error_type in ("empty_body", "not_html")
    else:
        assert isinstance(found, SiteMetadata)
        # It serialises for the database (strict JSON, no NUL: PostgreSQL's jsonb refuses
        # both) and reads back as it was.
        stored = json.dumps(found.model_dump(mode="json"), allow_nan=False)
        assert not any("\x00" in text for text in json_strings(json.loads(stored)))
        assert SiteMetadata.model_validate_json(stored) == found




@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab.-_+%@ x1\n", max_size=400))
def test_emails_found_around_each_at_sign_are_those_of_a_full_scan(text: str) -> None:
    # emails_in only tries its pattern around each "@" (for speed); a full scan is the reference.
    from scrapersky.metadata.contacts import _EMAIL, _valid_email, emails_in

    text = text.replace("x", "example.com ")
    full_scan = [_valid_email(m.group(1), m.group(2)) for m in _EMAIL.finditer(text)]
    assert emails_in(text) == [email for email in full_scan if email]


# --------------------------------------------------------------------------------------
# Issue 15: each bug seen on third-party pages, from a minimal snippet
# --------------------------------------------------------------------------------------


def doc(head: str = "", body: str = "") -> str:
    """A page whose <title> (if any) is in ``head``."""
    return f"<html><head>{head}</head><body>{body}</body></html>"


def ld(data: dict) -> str:
    return f'<script type="application/ld+json">{json.dumps(data)}</script>'


def og(name: str, value: str) -> str:
    return f"<meta property='og:{name}' content='{value}'>"


@pytest.mark.parametrize(
    ("html", "title"),
    [
        pytest.param(doc("<title>1467641543</title>" + og("title", "Jack on Twitter: just setting up")),
                     "Jack on Twitter: just setting up", id="tweet-title-is-a-status-id"),
        pytest.param(doc("<title>How Segment Keeps Customer Data in</title>"
                         + og("title", "How Segment Keeps Customer Data in Sync Across Tools")),
                     "How Segment Keeps Customer Data in Sync Across Tools", id="title-cut-short-by-the-page"),
        pytest.param(doc("<title>Google Cloud Platform Blog: Bigtable is here</title>" + og("title", "Bigtable is here")),
                     "Bigtable is here", id="site-name-prefix"),
        pytest.param(doc("<title>Staff Picks Winners on Vimeo</title>" + og("title", "Staff Picks Winners")),
                     "Staff Picks Winners", id="site-name-suffix-joined-by-a-word"),
        pytest.param(doc("<title></title>", "<nav>Menu</nav><h1>The only headline</h1><p>text</p>"),
                     "The only headline", id="empty-title-only-h1"),
        pytest.param(doc("<title>example.com</title>", "<h1>Welcome to Example</h1>"),
                     "Welcome to Example", id="title-is-a-bare-host-name"),
        pytest.param(doc("", "<h1><div>Kicker</div><div>Main headline</div></h1>"),
                     "Kicker Main headline", id="h1-block-children-are-words"),
        pytest.param(doc("", ld({"@type": "NewsArticle", "headline": "From JSON-LD"})),
                     "From JSON-LD", id="json-ld-headline"),
        pytest.param(doc("<meta name='dc.title' content='Dublin Core'>"), "Dublin Core", id="dc-title"),
        # kept: a <title> that only continues the og:title's words (a brand as og:title)
        pytest.param(doc("<title>Acme Tools for Makers</title>" + og("title", "Acme")),
                     "Acme Tools for Makers", id="og-title-is-a-brand-prefix"),
    ],
)
def test_title_bugs(html: str, title: str) -> None:
    assert meta(html).title == title


@pytest.mark.parametrize(
    ("html", "logo"),
    [
        pytest.param(doc("<link rel='icon' href='/favicon-16.png' sizes='16x16'>"
                         "<link rel='apple-touch-icon' href='/touch.png'>"),
                     "https://www.example.de/touch.png", id="apple-touch-icon-over-a-16px-favicon"),
        pytest.param(doc("<link rel='icon' href='/s.png' sizes='16x16'><link rel='icon' href='/l.png' sizes='192x192'>"
                         "<link rel='icon' href='/m.png' sizes='32x32'>"),
                     "https://www.example.de/l.png", id="largest-declared-icon"),
        pytest.param(doc("<link rel='apple-touch-icon' href='/touch.png'>"
                         + ld({"@type": "Article", "publisher": {"@type": "Organization", "name": "P",
                                                                  "logo": {"@type": "ImageObject", "url": "/pub.png"}}})),
                     "https://www.example.de/pub.png", id="json-ld-publisher-logo-first"),
        pytest.param(doc("<link rel='icon' href='/favicon.ico'>", "<header><a href='/'><img class='logo' src='/mark.svg'></a></header>"),
                     "https://www.example.de/mark.svg", id="header-logo-over-a-tab-icon"),
        pytest.param(doc("", "<header><img src='/mark.svg' class='brand'></header><main><img class='logo' src='/client.png'></main>"),
                     None, id="not-a-random-img-with-logo-in-its-class"),
        pytest.param(doc("<link rel='shortcut icon' href='/favicon.ico'>"),
                     "https://www.example.de/favicon.ico", id="a-tab-icon-as-the-last-resort"),
        pytest.param(doc(), None, id="never-a-guessed-favicon"),
    ],
)
def test_logo_bugs(html: str, logo: str | None) -> None:
    assert meta(html).logo_url == logo


def test_logo_and_favicon_are_two_fields() -> None:
    found = meta(doc("<link rel='icon' href='/tab.ico'><link rel='apple-touch-icon' href='/mark.png' sizes='180x180'>"))
    assert (found.favicon_url, found.logo_url) == ("https://www.example.de/tab.ico", "https://www.example.de/mark.png")


@pytest.mark.parametrize(
    ("html", "site_name"),
    [
        pytest.param(doc("<title>t</title>" + ld({"@type": "NewsArticle", "publisher": {"@type": "Organization", "name": "The Daily"}})),
                     "The Daily", id="json-ld-publisher-name"),
        pytest.param(doc("<title>t</title>" + ld({"@type": "WebSite", "name": "Example Site"})), "Example Site", id="json-ld-website-name"),
        pytest.param(doc("<title>t</title><meta name='application-name' content='Example App'>"), "Example App", id="application-name"),
        pytest.param(doc("<title>Headline | The Site</title>" + og("title", "Headline")), "The Site", id="title-suffix"),
        pytest.param(doc("<title>Winners on Vimeo</title>" + og("title", "Winners")), "Vimeo", id="title-suffix-joined-by-a-word"),
        pytest.param(doc("<title>t</title><meta property='article:publisher' content='https://www.facebook.com/x'>"),
                     None, id="not-a-publisher-url"),
    ],
)
def test_site_name_signals(html: str, site_name: str | None) -> None:
    assert meta(html).site_name == site_name


@pytest.mark.parametrize(
    ("html", "image"),
    [
        pytest.param(doc("<meta name='twitter:image:src' content='/tw.jpg'>"), "https://www.example.de/tw.jpg", id="twitter-image-src"),
        pytest.param(doc("<link rel='image_src' href='/src.jpg'>"), "https://www.example.de/src.jpg", id="link-image-src"),
        pytest.param(doc(ld({"@type": "Article", "image": "/ld.jpg"})), "https://www.example.de/ld.jpg", id="json-ld-image-string"),
        pytest.param(doc(ld({"@type": "Article", "image": {"@type": "ImageObject", "url": "/obj.jpg"}})),
                     "https://www.example.de/obj.jpg", id="json-ld-image-object"),
        pytest.param(doc(ld({"@type": "Article", "image": [{"url": "/a.jpg"}, "/b.jpg"]})),
                     "https://www.example.de/a.jpg", id="json-ld-image-list"),
        pytest.param(doc("", "<video poster='/poster.jpg'></video>"), "https://www.example.de/poster.jpg", id="video-poster"),
        pytest.param(doc("", "<img src='/icon.png' width='32'><img src='/hero.jpg' width='1200' height='600'>"),
                     "https://www.example.de/hero.jpg", id="first-large-content-image"),
        pytest.param(doc("", "<img src='/small.jpg' width='120'>"), None, id="no-small-image"),
    ],
)
def test_image_fallbacks(html: str, image: str | None) -> None:
    assert meta(html).image == image


@pytest.mark.parametrize(
    ("html", "description"),
    [
        pytest.param(doc(ld({"@type": "Article", "description": "From JSON-LD"})), "From JSON-LD", id="json-ld-description"),
        pytest.param(doc("", "<nav><p>Home About Contact Careers Blog Pricing Documentation Support Login</p></nav>"
                             "<p>Short.</p><p>We make tools that help small shops keep their books in order, every day.</p>"),
                     "We make tools that help small shops keep their books in order, every day.", id="first-real-paragraph"),
        pytest.param(doc("<meta name='description' content='Meta first'>", "<p>" + "word " * 30 + "</p>"),
                     "Meta first", id="meta-before-paragraph"),
    ],
)
def test_description_fallbacks(html: str, description: str | None) -> None:
    assert meta(html).description == description
