"""Which technologies a site runs, each backed by evidence.

A detection needs evidence of a specific kind - a generator meta tag, the host or path
of a script/stylesheet/image/iframe/form URL, a marker attribute, a known snippet in an
inline script, a response header or a cookie name - never a substring anywhere in the
page. The rules are data: one ``Rule`` a line, grouped by category.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel

__all__ = ["Technology", "TechStack", "Rule", "RULES", "Evidence", "CATEGORIES"]

Category = Literal["cms", "builders_plugins", "analytics", "frameworks", "widgets"]
Kind = Literal["generator", "url", "attr", "script", "header", "cookie"]
CATEGORIES: tuple[Category, ...] = ("cms", "builders_plugins", "analytics", "frameworks", "widgets")


@dataclass(frozen=True)
class Rule:
    category: Category
    name: str
    kind: Kind
    pattern: re.Pattern[str]
    target: str = ""  # the header name, or the attribute name for kind="attr"
    version: bool = False  # the pattern's first group is a version
    id: bool = False  # the pattern's first group is an account/container id


def _r(category: Category, name: str, kind: Kind, pattern: str, target: str = "", *,
       version: bool = False, id: bool = False, flags: int = re.IGNORECASE) -> Rule:
    return Rule(category, name, kind, re.compile(pattern, flags), target, version, id)


RULES: tuple[Rule, ...] = (
    # --- content management systems ---
    _r("cms", "WordPress", "generator", r"^WordPress\s*([\d.]+)?", version=True),
    _r("cms", "WordPress", "url", r"/wp-(?:content|includes)/"),
    _r("cms", "WordPress", "header", r"rel=\"https://api\.w\.org/\"", "link"),
    _r("cms", "WordPress", "cookie", r"^(?:wordpress_|wp-settings-)"),
    _r("cms", "Shopify", "url", r"//cdn\.shopify\.com/|/cdn/shop/"),
    _r("cms", "Shopify", "header", r".", "x-shopify-stage"),
    _r("cms", "Shopify", "header", r".", "x-shopid"),
    _r("cms", "Shopify", "script", r"\bShopify\.(?:theme|shop)\b", flags=0),
    _r("cms", "Shopify", "cookie", r"^_shopify_"),
    _r("cms", "Wix", "generator", r"Wix\.com"),
    _r("cms", "Wix", "url", r"//static\.(?:wixstatic|parastorage)\.com/"),
    _r("cms", "Wix", "header", r".", "x-wix-request-id"),
    _r("cms", "Squarespace", "generator", r"Squarespace"),
    _r("cms", "Squarespace", "url", r"//(?:static1|assets|images)\.squarespace(?:-cdn)?\.com/"),
    _r("cms", "Squarespace", "header", r"Squarespace", "server"),
    _r("cms", "Drupal", "generator", r"^Drupal\s*(\d+(?:\.\d+)*)?", version=True),
    _r("cms", "Drupal", "header", r"Drupal\s*(\d+)?", "x-generator", version=True),
    _r("cms", "Drupal", "header", r".", "x-drupal-cache"),
    _r("cms", "Drupal", "url", r"/sites/(?:default|all)/(?:files|modules|themes)/|/core/misc/drupal\.js"),
    _r("cms", "Joomla", "generator", r"^Joomla!?(?:\s*-\s*Open Source Content Management)?\s*([\d.]+)?", version=True),
    _r("cms", "Joomla", "url", r"/media/(?:jui|system/js)/|/components/com_"),
    _r("cms", "Webflow", "generator", r"^Webflow"),
    _r("cms", "Webflow", "attr", r".", "data-wf-site"),
    _r("cms", "Webflow", "url", r"//(?:assets|uploads-ssl|cdn\.prod)\.(?:website-files|webflow)\.com/"),
    _r("cms", "Ghost", "generator", r"^Ghost\s*([\d.]+)?", version=True),
    _r("cms", "Ghost", "url", r"/ghost/(?:portal|sodo-search)@|/public/ghost(?:-sdk)?(?:\.min)?\.(?:js|css)"),
    # --- page builders and plugins ---
    _r("builders_plugins", "Elementor", "generator", r"^Elementor\s*([\d.]+)?", version=True),
    _r("builders_plugins", "Elementor", "url", r"/wp-content/plugins/elementor(?:-pro)?/"),
    _r("builders_plugins", "Divi", "url", r"/wp-content/themes/Divi/", flags=0),
    _r("builders_plugins", "Divi", "attr", r"\bet_divi_theme\b|\bet_pb_", "class"),
    _r("builders_plugins", "WooCommerce", "generator", r"^WooCommerce\s*([\d.]+)?", version=True),
    _r("builders_plugins", "WooCommerce", "url", r"/wp-content/plugins/woocommerce/"),
    _r("builders_plugins", "WooCommerce", "cookie", r"^woocommerce_"),
    _r("builders_plugins", "Yoast SEO", "attr", r"\byoast-schema-graph\b", "class"),
    _r("builders_plugins", "Yoast SEO", "url", r"/wp-content/plugins/wordpress-seo/"),
    _r("builders_plugins", "Contact Form 7", "url", r"/wp-content/plugins/contact-form-7/"),
    # --- analytics ---
    _r("analytics", "Google Analytics", "url", r"//www\.googletagmanager\.com/gtag/js\?id=(G-[A-Z0-9]+|UA-[\d-]+)", id=True),
    _r("analytics", "Google Analytics", "script", r"gtag\(\s*['\"]config['\"]\s*,\s*['\"](G-[A-Z0-9]+|UA-[\d-]+)", id=True),
    _r("analytics", "Google Analytics", "url", r"//www\.google-analytics\.com/(?:analytics|ga)\.js"),
    _r("analytics", "Google Tag Manager", "url", r"//www\.googletagmanager\.com/(?:gtm\.js|ns\.html)\?id=(GTM-[A-Z0-9]+)", id=True),
    _r("analytics", "Google Tag Manager", "script", r"googletagmanager\.com/gtm\.js[\s\S]{0,400}?['\"](GTM-[A-Z0-9]+)['\"]", id=True),
    _r("analytics", "Facebook Pixel", "url", r"//(?:www\.)?facebook\.com/tr\?id=(\d+)", id=True),
    _r("analytics", "Facebook Pixel", "url", r"//connect\.facebook\.net/[\w_]+/fbevents\.js"),
    _r("analytics", "Facebook Pixel", "script", r"fbq\(\s*['\"]init['\"]\s*,\s*['\"](\d+)", id=True),
    _r("analytics", "Hotjar", "url", r"//static\.hotjar\.com/"),
    _r("analytics", "Hotjar", "script", r"static\.hotjar\.com|\bhjid\s*:\s*(\d+)", id=True),
    # --- front-end frameworks and libraries ---
    _r("frameworks", "React", "url", r"/react(?:-dom)?(?:\.production|\.development)?(?:\.min)?\.js|/react(?:-dom)?@([\d.]+)", version=True),
    _r("frameworks", "React", "attr", r".?", "data-reactroot"),
    _r("frameworks", "Next.js", "url", r"/_next/static/"),
    _r("frameworks", "Next.js", "attr", r"^__NEXT_DATA__$", "id"),
    _r("frameworks", "Next.js", "header", r"Next\.js", "x-powered-by"),
    _r("frameworks", "Vue", "url", r"/vue(?:\.runtime)?(?:\.global)?(?:\.prod)?(?:\.min)?\.js|/vue@([\d.]+)", version=True),
    _r("frameworks", "Vue", "attr", r".?", "data-v-app"),
    _r("frameworks", "Vue", "attr", r".?", "data-server-rendered"),
    _r("frameworks", "Nuxt", "url", r"/_nuxt/"),
    _r("frameworks", "Nuxt", "script", r"window\.__NUXT__", flags=0),
    _r("frameworks", "Angular", "attr", r"([\d.]+)", "ng-version", version=True),
    _r("frameworks", "Angular", "url", r"/angular(?:\.min)?\.js|/@angular/"),
    _r("frameworks", "jQuery", "url", r"/jquery(?:[.-]([\d]+\.[\d.]+?))?(?:\.slim)?(?:\.min)?\.js", version=True),
    _r("frameworks", "Bootstrap", "url", r"/bootstrap(?:[.-]([\d]+\.[\d.]+?))?(?:\.bundle)?(?:\.min)?\.(?:js|css)|/bootstrap@([\d.]+)/", version=True),
    # --- chat, support and marketing widgets ---
    _r("widgets", "Intercom", "url", r"//(?:widget\.intercom\.io|js\.intercomcdn\.com)/"),
    _r("widgets", "Intercom", "script", r"widget\.intercom\.io|window\.intercomSettings"),
    _r("widgets", "Drift", "url", r"//js\.driftt?\.com/"),
    _r("widgets", "Drift", "script", r"js\.driftt\.com|\bdrift\.load\("),
    _r("widgets", "Zendesk", "url", r"//static\.zdassets\.com/|//v2\.zopim\.com/"),
    _r("widgets", "HubSpot", "url", r"//js\.(?:hs-scripts|hsforms|hs-analytics|hubspot|hs-banner)\.(?:com|net)/"),
    _r("widgets", "HubSpot", "script", r"js\.hs-scripts\.com|js\.hsforms\.net"),
    _r("widgets", "Mailchimp", "url", r"//chimpstatic\.com/|\.list-manage\.com/"),
)

_BY_KIND: dict[Kind, tuple[Rule, ...]] = {
    kind: tuple(rule for rule in RULES if rule.kind == kind)
    for kind in ("generator", "url", "attr", "script", "header", "cookie")
}
_ATTR_NAMES = frozenset(rule.target for rule in _BY_KIND["attr"])
#: A cheap pre-check before running the url rules on a URL (matched lower-cased:
#: case-insensitive alternations are several times slower in Python's re).
_URL_HINT = re.compile(
    r"wp-|shopify|/cdn/shop/|wix|parastorage|squarespace|/sites/|drupal|/media/|com_|webflow|website-files"
    r"|ghost|googletagmanager|google-analytics|facebook|hotjar|react|_next|vue|_nuxt|angular|jquery"
    r"|bootstrap|intercom|drift|zdassets|zopim|hs-|hsforms|hubspot|chimpstatic|list-manage"
)
#: Inline scripts worth keeping for the script rules (a cheap pre-check).
SCRIPT_HINT = re.compile(
    r"gtag\(|googletagmanager|fbq\(|hotjar|hjid|intercom|drift|hs-scripts|hsforms|Shopify\.|__NUXT__"
)


_VALUE_CHARS = 2_048  # characters of a URL, attribute or generator the rules look at


class Technology(BaseModel):
    name: str
    version: str | None = None
    id: str | None = None
    evidence: list[str] = []


class TechStack(BaseModel):
    cms: list[Technology] = []
    builders_plugins: list[Technology] = []
    analytics: list[Technology] = []
    frameworks: list[Technology] = []
    widgets: list[Technology] = []


@dataclass
class Evidence:
    """Detections as they are found; ``stack()`` turns them into a TechStack."""

    found: dict[tuple[str, str], Technology] = field(default_factory=dict)

    def _add(self, rule: Rule, match: re.Match[str], evidence: str) -> None:
        key = (rule.category, rule.name)
        tech = self.found.get(key)
        if tech is None:
            tech = self.found[key] = Technology(name=rule.name)
        value = next((g for g in match.groups() if g), None) if match.groups() else None
        if value and rule.version and not tech.version:
            tech.version = value[:64]
        if value and rule.id and not tech.id:
            tech.id = value[:64]
        if len(tech.evidence) < 3 and evidence not in tech.evidence:
            tech.evidence.append(evidence[:200])

    def _run(self, kind: Kind, value: str, evidence: str, target: str | None = None) -> None:
        for rule in _BY_KIND[kind]:
            if target is not None and rule.target != target:
                continue
            match = rule.pattern.search(value)
            if match:
                self._add(rule, match, evidence)

    def generator(self, content: str) -> None:
        content = content[:_VALUE_CHARS].strip()
        self._run("generator", content, f"meta generator: {content}")

    def url(self, tag: str, attribute: str, url: str) -> None:
        url = url[:_VALUE_CHARS]
        if _URL_HINT.search(url.lower()):
            self._run("url", url, f"{tag} {attribute}: {url}")

    def attributes(self, tag: str, attrs: Mapping[str, object]) -> None:
        for name in _ATTR_NAMES:
            value = attrs.get(name)
            if value is not None:
                text = (" ".join(value) if isinstance(value, list) else str(value))[:_VALUE_CHARS]
                self._run("attr", text, f"<{tag} {name}=\"{text[:60]}\">", target=name)

    def script(self, text: str) -> None:
        if SCRIPT_HINT.search(text):
            for rule in _BY_KIND["script"]:
                match = rule.pattern.search(text)
                if match:
                    self._add(rule, match, f"inline script: …{text[max(0, match.start() - 20):match.end() + 20].strip()}…")

    def headers(self, headers: Mapping[str, str], cookies: Iterable[str]) -> None:
        lowered = {k.lower(): v for k, v in headers.items()}
        for rule in _BY_KIND["header"]:
            value = lowered.get(rule.target)
            if value is not None:
                match = rule.pattern.search(value)
                if match:
                    self._add(rule, match, f"header {rule.target}: {value[:100]}")
        for cookie in cookies:
            name = cookie.split("=", 1)[0].strip()
            for rule in _BY_KIND["cookie"]:
                match = rule.pattern.search(name)
                if match:
                    self._add(rule, match, f"cookie: {name}")

    def stack(self) -> TechStack:
        groups: dict[str, list[Technology]] = {category: [] for category in CATEGORIES}
        for (category, _), tech in self.found.items():
            groups[category].append(tech)
        return TechStack(**groups)
