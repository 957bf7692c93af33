"""Site metadata from a homepage: pure functions, no I/O (bytes + headers + URL in,
a typed ``SiteMetadata`` out)."""

from .extract import SiteMetadata, decode_html, extract_metadata

__all__ = ["SiteMetadata", "decode_html", "extract_metadata"]
