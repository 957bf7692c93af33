"""The network edge: fetching homepages within the operator's reach.

    Fetcher           a batch's fetcher: ``start(domain)``, ``homepage(domain)``, ``follow(url)``, ``close()``
    Fetch             one domain's fetch: ``homepage()`` then ``follow(url)`` (meta refreshes),
                      one deadline (total_timeout) and one redirect budget for the whole chain
    Page              what a fetch returns
    Reach             where fetches may connect (connect-to rules, allowed networks)
    GuardedTransport  the httpx transport whose connections pass the address check
    GuardedBackend    httpcore's network backend doing that check
    AddressPolicy     which addresses are public
    ConnectTo         curl-style connect-to rules

Nothing here reads settings or the environment's SCRAPERSKY_* variables: the reach
is handed in as a value (``scrapersky.settings.Settings.reach()``).
"""

from .connect_to import ConnectTo, ConnectToRule
from .fetch import HTML_MEDIA_TYPES, Fetch, Fetcher, Page, environment_proxies
from .guard import AddressPolicy, GuardedBackend, Reach, Resolver
from .transport import GuardedTransport

__all__ = [
    "Fetcher",
    "Fetch",
    "Page",
    "Reach",
    "GuardedTransport",
    "GuardedBackend",
    "AddressPolicy",
    "ConnectTo",
    "ConnectToRule",
    "Resolver",
    "environment_proxies",
    "HTML_MEDIA_TYPES",
]
