"""The pages the local web farm (``scrapersky.farm``) serves: a small complete homepage
for the test kinds, and a realistic 30-100 KB homepage for ``site-<i>`` (size and
content fixed by i), as the benchmark and the demo use."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from functools import cache
from statistics import NormalDist

__all__ = [
    "giant_meta_page", "homepage", "site_page", "site_page_size", "site_title",
    "REAL_MIX", "RealHost", "real_host", "real_page", "real_page_size", "real_service_seconds", "real_title",
]


def homepage(host: str) -> bytes:
    name = host.split(".")[0]
    return f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>{name} | Farm</title>
  <meta name="description" content="The homepage of {host}.">
  <meta name="keywords" content="farm, {name}">
  <meta property="og:title" content="{name}">
  <meta property="og:site_name" content="{name} site">
  <meta property="og:image" content="/img/og.png">
  <link rel="canonical" href="http://{host}/">
  <link rel="icon" href="/static/favicon.png">
</head>
<body><h1>{name}</h1><p>Welcome to {host}.</p></body>
</html>""".encode()


@cache
def giant_meta_page() -> bytes:
    """A 3.5 MB head of giant values (``giantmeta-*``): a 1.5 MB title with markup, a
    1 MB description and 1 MB of og:* values; made once per process."""
    og = "".join(f"<meta property='og:k{i}' content='{'v' * 10_000}'>" for i in range(100))
    return (f"<html><head><title>{'<b>giant</b> ' * 115_000}</title>"
            f"<meta name='description' content='{'D ' * 500_000}'>{og}</head>"
            "<body><p>a page of giant values</p></body></html>").encode()


# --------------------------------------------------------------------------- site-<i>

_WORDS = (
    "the of and to in our we for with your on that is are by from as at this be it an or "
    "service services customers quality team years experience business solutions local "
    "company products support contact about learn more trusted professional design build "
    "family owned since community projects clients results free quote today call us "
    "industry leading innovative reliable affordable custom home commercial residential "
    "sustainable people partners award winning delivery repair installation maintenance "
    "consulting management software platform data cloud security training growth"
).split()
_NAV = "".join(
    f'<li><a href="/{slug}/">{slug.capitalize()}</a></li>\n'
    for slug in ("about", "services", "products", "pricing", "blog", "news", "careers", "faq", "support", "contact")
)


@cache
def _paragraphs() -> tuple[str, ...]:
    """A fixed pool of plain-text paragraphs (a deterministic word salad)."""
    state, pool = 12345, []
    for _ in range(97):
        words = []
        state = (state * 1103515245 + 12345) & 0x7FFFFFFF
        for _ in range(70 + state % 90):
            state = (state * 1103515245 + 12345) & 0x7FFFFFFF
            words.append(_WORDS[state % len(_WORDS)])
        text = " ".join(words)
        pool.append(text[0].upper() + text[1:] + ".")
    return tuple(pool)


def site_page_size(i: int) -> int:
    """The target size of site i's homepage in bytes: 30-100 KB, fixed by i."""
    return 30_000 + (i * 7919 + 104_729) % 68_000


def site_title(i: int) -> str:
    return f"Site {i} | Farm"


def site_page(i: int) -> bytes:
    """Site i's homepage (``site-<i>.test``): a realistic head and a body of about
    ``site_page_size(i)`` bytes, the same every time."""
    host, phone = f"site-{i}.test", f"+1415555{100 + i % 100:04d}"
    head = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{site_title(i)}</title>
<meta name="description" content="Site {i} offers reliable services for local businesses and families since {1990 + i % 30}.">
<meta name="keywords" content="site {i}, farm, services, quality, local business">
<meta name="generator" content="WordPress 6.4.{i % 4}">
<meta property="og:title" content="Site {i}">
<meta property="og:site_name" content="Farm">
<meta property="og:type" content="website">
<meta property="og:url" content="http://{host}/">
<meta property="og:image" content="http://{host}/static/og-{i}.png">
<meta property="og:description" content="Everything about Site {i}.">
<meta name="twitter:card" content="summary_large_image">
<meta name="twitter:site" content="@site{i}">
<link rel="canonical" href="http://{host}/">
<link rel="icon" type="image/png" sizes="32x32" href="/static/favicon-32.png">
<link rel="apple-touch-icon" href="/static/apple-touch-icon.png">
<link rel="stylesheet" href="/wp-content/themes/farm/style.css?ver={i % 9}">
<link rel="stylesheet" href="/static/css/main.{i % 7}.css">
<link rel="preload" href="/static/fonts/inter.woff2" as="font" crossorigin>
<script src="/wp-includes/js/jquery/jquery.min.js?ver=3.7.1"></script>
<script async src="/static/js/analytics.js"></script>
<script>window.dataLayer = window.dataLayer || []; function track() {{ dataLayer.push(arguments); }} track('js', new Date()); track('config', 'site-{i}');</script>
<script type="application/ld+json">{{"@context": "https://schema.org", "@type": "Organization", "name": "Site {i}", "url": "http://{host}/", "logo": "http://{host}/static/logo.png", "email": "hello@{host}", "telephone": "{phone}", "sameAs": ["https://twitter.com/site{i}", "https://www.linkedin.com/company/site-{i}"]}}</script>
<style>body {{ font-family: Inter, sans-serif; margin: 0 }} .hero {{ padding: 4rem 2rem }} .logo {{ height: 48px }}</style>
</head>
<body class="home page-template-default">
<header class="site-header">
<a href="/" class="brand"><img src="/static/logo.png" alt="Site {i} logo" class="logo" width="160" height="48"></a>
<nav class="main-nav"><ul>
{_NAV}</ul></nav>
</header>
<main id="content">
<section class="hero"><h1>Welcome to Site {i}</h1></section>
"""
    footer = f"""</main>
<footer class="site-footer">
<p>Contact us: <a href="mailto:contact@{host}">contact@{host}</a> or call <a href="tel:{phone}">{phone}</a>.</p>
<p>Write to sales@{host} for a quote.</p>
<p class="social">Follow us:
<a href="https://twitter.com/site{i}">Twitter</a>
<a href="https://www.facebook.com/site{i}">Facebook</a>
<a href="https://www.linkedin.com/company/site-{i}">LinkedIn</a>
<a href="https://www.instagram.com/site{i}/">Instagram</a></p>
<p>&copy; 2024 Site {i}. All rights reserved. <a href="/privacy/">Privacy</a> <a href="/terms/">Terms</a></p>
</footer>
<script src="/static/js/app.{i % 13}.js" defer></script>
<script>document.documentElement.classList.add('js');</script>
</body>
</html>
"""
    parts, pool = [head], _paragraphs()
    size, target = len(head) + len(footer), site_page_size(i)
    for k in range(1000):
        if size >= target:
            break
        first, second = pool[(i * 31 + k * 17) % len(pool)], pool[(i * 7 + k * 29 + 3) % len(pool)]
        section = (
            f'<section class="block block-{k}"><h2>Section {k + 1}</h2>\n<p>{first}</p>\n'
            f'<p>{second} <a href="/services/{k}/">Read more</a></p>\n'
            f'<img src="/static/img/photo-{k}.jpg" alt="Photo {k}" loading="lazy"></section>\n'
        )
        parts.append(section)
        size += len(section)
    parts.append(footer)
    return "".join(parts).encode()




# --------------------------------------------------------------------------- real-<i>
#
# A realistic web: what a host does is fixed by a hash of its name (``real_host``), in
# the proportions of a batch of business homepages; its page is dense with tags.

#: (kind, share) in the order the hash's first number is cut; the shares add up to 1.
REAL_MIX: tuple[tuple[str, float], ...] = (
    ("page", 0.75),  # the homepage, after the host's delay
    ("hang", 0.07),  # accepts the request and answers nothing (past any read timeout)
    ("flaky", 0.05),  # 503 on the first request, then the homepage
    ("missing", 0.05),  # 404
    ("www", 0.08),  # a 301 to www.<host>, which serves the homepage
)
#: The delay before a host answers: lognormal, median REAL_DELAY_MEDIAN, capped.
REAL_DELAY_MEDIAN, REAL_DELAY_SIGMA, REAL_DELAY_CAP = 0.5, 0.8, 3.0
#: How long a hanging host holds the connection before closing it (bounded).
REAL_HANG_SECONDS = 30.0


@dataclass(frozen=True)
class RealHost:
    """What ``real-<i>.*`` (and its ``www.``) does: its kind and its delay in seconds."""

    kind: str
    delay: float
    index: int


def _uniforms(name: str) -> tuple[float, float]:
    digest = hashlib.blake2b(name.encode(), digest_size=16).digest()
    scale = float(1 << 64)
    return (int.from_bytes(digest[:8], "big") + 0.5) / scale, (int.from_bytes(digest[8:], "big") + 0.5) / scale


def real_host(host: str) -> RealHost | None:
    """The behaviour of a realistic host (``real-<i>.<anything>``, with or without
    ``www.``), fixed by its name; None for another name."""
    name = host.lower().removeprefix("www.").split(".")[0]
    if not name.startswith("real-") or not name[5:].isdigit():
        return None
    pick, spread = _uniforms(name)
    kind, edge = REAL_MIX[-1][0], 0.0
    for candidate, share in REAL_MIX:
        edge += share
        if pick < edge:
            kind = candidate
            break
    delay = REAL_DELAY_MEDIAN * math.exp(REAL_DELAY_SIGMA * NormalDist().inv_cdf(spread))
    return RealHost(kind=kind, delay=min(REAL_DELAY_CAP, delay), index=int(name[5:]))


def real_title(i: int) -> str:
    return f"Real {i} | Farm"


def real_attempt_seconds(host: str, *, timeout: float, retries: int) -> list[float]:
    """Seconds each attempt at a realistic host takes a client that waits for nothing
    else (a hang: the whole timeout, every attempt; a flaky host: its 503, then its page)."""
    found = real_host(host)
    assert found is not None, host
    if found.kind == "hang":
        return [timeout] * (1 + retries)
    if found.kind == "flaky" and retries:
        return [found.delay, found.delay]
    return [found.delay]


def real_service_seconds(host: str, *, timeout: float, retries: int) -> float:
    """Seconds a client that waits for nothing else spends on a realistic host (no
    backoff counted): the network-bound floor of a batch is their sum / concurrency."""
    return sum(real_attempt_seconds(host, timeout=timeout, retries=retries))


def real_page_size(i: int) -> int:
    """The target size of real-<i>'s homepage: 45-75 KB, about 60 KB on average."""
    return 45_000 + (i * 7919 + 104_729) % 30_000


def _as_real(text: str, i: int) -> str:
    return text.replace(f"site-{i}", f"real-{i}").replace(f"site{i}", f"real{i}").replace(f"Site {i}", f"Real {i}")


def real_page(i: int) -> bytes:
    """real-<i>'s homepage: the head of a CMS-built site and a body as dense with tags
    as one (nested divs, menus, cards with images, buttons and spans: about one tag
    every 40 bytes), about ``real_page_size(i)`` bytes, the same every time."""
    head = site_page(i).split(b"</head>", 1)[0].decode()
    head = _as_real(head, i)
    menu = "".join(
        f'<li class="menu-item menu-item-{k}"><a href="/{slug}/" class="menu-link"><span>{slug.title()}</span></a>'
        f'<ul class="sub-menu">'
        + "".join(f'<li class="menu-item"><a href="/{slug}/{j}/"><span>{slug.title()} {j}</span></a></li>' for j in range(4))
        + "</ul></li>\n"
        for k, slug in enumerate(("about", "services", "products", "pricing", "blog", "careers", "support", "contact"))
    )
    pool, parts = _paragraphs(), []
    header = (f'</head>\n<body class="home page-template-default wp-custom-logo">\n<div id="page" class="site">'
              f'<header class="site-header"><div class="container"><div class="row"><div class="col-3">'
              f'<a href="/" class="brand"><img src="/static/logo.png" alt="Real {i} logo" width="160" height="48"></a>'
              f'</div><div class="col-9"><nav class="main-nav" aria-label="Main"><ul class="menu">\n{menu}</ul></nav>'
              f'</div></div></div></header>\n<main id="content" class="site-main">\n'
              f'<section class="hero"><div class="container"><h1 class="hero-title">Welcome to Real {i}</h1></div></section>\n')
    footer = "</main>" + _as_real(site_page(i).split(b"</main>", 1)[1].decode(), i)
    size, target = len(head) + len(header) + len(footer), real_page_size(i)
    parts.append(head + header)
    for k in range(2000):
        if size >= target:
            break
        words = pool[(i * 31 + k * 17) % len(pool)].split()
        card = (
            f'<div class="card card-{k % 6}"><div class="card-inner"><figure class="card-media">'
            f'<a href="/services/{k}/"><img src="/static/img/card-{k}.jpg" alt="{" ".join(words[:3])}" width="320" height="200" loading="lazy"></a>'
            f'</figure><div class="card-body"><h3 class="card-title"><a href="/services/{k}/">{" ".join(words[3:7])}</a></h3>'
            f'<p class="card-text"><span>{" ".join(words[7:19])}</span> <strong>{" ".join(words[19:22])}</strong>'
            f' <em>{" ".join(words[22:30])}</em></p><ul class="card-tags"><li><span class="tag">{words[0]}</span></li>'
            f'<li><span class="tag">{words[1]}</span></li><li><span class="tag">{words[2]}</span></li></ul>'
            f'<div class="card-actions"><a class="btn btn-primary" href="/services/{k}/">Read more</a>'
            f'<button type="button" class="btn btn-link" data-id="{k}"><i class="icon icon-share"></i><span>Share</span></button>'
            f'</div></div></div></div>\n'
        )
        if k % 6 == 0:
            card = f'<section class="block block-{k // 6}"><div class="container"><div class="row">\n' + card
        if k % 6 == 5:
            card += "</div></div></section>\n"
        parts.append(card)
        size += len(card)
    if not parts[-1].endswith("</section>\n"):
        parts.append("</div></div></section>\n")
    parts.append(footer.replace("</body>", "</div></body>"))
    return "".join(parts).encode()
