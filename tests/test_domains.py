import pytest

from scrapersky.domains import normalize_domain, plan_domains
from scrapersky.errors import BatchTooLarge, EmptyBatch, InvalidDomain


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("example.com", "example.com"),
        ("  Example.COM  ", "example.com"),
        ("https://www.example.com/about?x=1", "www.example.com"),
        ("http://example.com", "example.com"),
        ("example.com/path/page.html", "example.com"),
        ("example.com.", "example.com"),
        ("bücher.de", "xn--bcher-kva.de"),
        ("https://münchen.de/", "xn--mnchen-3ya.de"),
        ("sub-domain.co.uk", "sub-domain.co.uk"),
    ],
)
def test_normalize_domain(entry: str, expected: str) -> None:
    assert normalize_domain(entry) == expected


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("not a domain", "whitespace"),
        ("localhost", "top-level"),
        ("192.168.1.1", "IP address"),
        ("http://[::1]/", "IP address"),
        ("ftp://example.com", "only http"),
        ("example.com:8080", "port"),
        ("https://user:pw@example.com/", "credentials"),
        ("-bad-.com", "not a valid"),
        ("exa_mple.com", "not a valid"),
        ("a" * 64 + ".com", "not a valid"),
        ("http://", "no host"),
    ],
)
def test_invalid_entries_say_why(entry: str, reason: str) -> None:
    with pytest.raises(InvalidDomain) as raised:
        normalize_domain(entry)
    assert reason in str(raised.value)
    assert raised.value.error_type == "invalid_domain"


def test_plan_deduplicates_and_keeps_invalid_entries_visible() -> None:
    plan = plan_domains(
        ["a.com", "A.com", "https://a.com/x", "b.org", "bad one", "bad one", "c.net"],
        max_batch_size=10,
    )
    assert plan.domains == ["a.com", "b.org", "c.net"]
    assert list(plan.invalid) == ["bad one"]
    assert plan.invalid["bad one"].attempts == 0
    assert plan.summary() == {"submitted": 7, "duplicates": 3, "invalid": 1, "domains": 3}
    assert plan.total == 4


def test_batch_size_limit_counts_distinct_domains() -> None:
    assert plan_domains(["a.com", "a.com", "b.com"], max_batch_size=2).total == 2
    with pytest.raises(BatchTooLarge, match="limit is 2"):
        plan_domains(["a.com", "b.com", "c.com"], max_batch_size=2)


def test_empty_batch_is_refused() -> None:
    with pytest.raises(EmptyBatch):
        plan_domains([], max_batch_size=10)


# Every string an inet_aton-style (WHATWG) parser reads as an IPv4 address is an address,
# not a domain: shorthand, hex, octal and single-number forms included.
@pytest.mark.parametrize(
    "entry",
    ["127.1", "0x7f.0.0.2", "0x7F.1", "0177.0.0.1", "2130706433", "0x7f000001", "127.0.1", "10.1",
     "http://127.1/", "127.1.", "017700000001", "1.2.3.999", "0x"],
)
def test_ipv4_address_forms_are_not_domains(entry: str) -> None:
    with pytest.raises(InvalidDomain) as raised:
        normalize_domain(entry)
    assert "IP address" in str(raised.value)
    assert raised.value.error_type == "invalid_domain"


@pytest.mark.parametrize(
    ("host", "address"),
    [("127.1", "127.0.0.1"), ("0x7f.0.0.2", "127.0.0.2"), ("0177.0.0.1", "127.0.0.1"), ("2130706433", "127.0.0.1"),
     ("10.1.2", "10.1.0.2"), ("192.168.1.1.", "192.168.1.1"), ("0x7f.1", "127.0.0.1"),
     ("example.com", None), ("1.2.3.4.5", None), ("256.1.1.1", None), ("1.2.3.0x", "1.2.3.0"), ("0x1g.1", None),
     ("1e3", None), ("+1.2", None), ("1_0.2", None)],
)
def test_ipv4_literal(host: str, address: str | None) -> None:
    from scrapersky.domains import ipv4_literal

    found = ipv4_literal(host)
    assert (str(found) if found else None) == address


@pytest.mark.parametrize(
    ("text", "entries"),
    [
        ("ok-1.test\n", ["ok-1.test"]),
        ("# a comment\n\n   \nok-1.test\n", ["ok-1.test"]),
        ("ok-1.test   # the first one\n", ["ok-1.test"]),
        ("ok-1.test\t# after a tab\n", ["ok-1.test"]),
        ("https://ok-1.test/#top\n", ["https://ok-1.test/#top"]),  # a URL's fragment is no comment
        ("ok-1.test#x\n", ["ok-1.test#x"]),  # nor a '#' inside an entry: it stays, and is refused as invalid
        ("  ok-1.test  \r\nok-2.test", ["ok-1.test", "ok-2.test"]),
    ],
)
def test_a_domain_list_takes_comments_on_their_own_line_or_after_an_entry(text: str, entries: list[str]) -> None:
    from scrapersky.domains import entries_of

    assert entries_of(text) == entries


def _outcome(entry: str) -> str | tuple[str, str]:
    try:
        return normalize_domain(entry)
    except InvalidDomain as error:
        return ("invalid", str(error))


def test_a_name_already_normal_takes_the_short_way_to_the_same_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every string of up to 6 characters over letters, digits, '-', '.' and 'x', and the
    edges of the rules: the same answer with and without the short way."""
    import itertools

    import scrapersky.domains

    entries = ["a.com", "ab--c.com", "xn--bcher-kva.de", "xn--abc.de", "a.xn--p1ai", "1.2.3.4", "a.0x1f", "a.077",
               "a.08", "a.1e", "a.123", "0x7f.0.0.1", "a-.com", "a.com.", "a." + "b" * 63, "a." + "b" * 64,
               "a." * 126 + "co", "a." * 127 + "co", "localhost", "www.example.co.uk", "under_score.com", "a..b"]
    entries += ["".join(chars) for n in range(1, 7) for chars in itertools.product("a0-.x", repeat=n)]
    short = {entry: _outcome(entry) for entry in entries}
    monkeypatch.setattr(scrapersky.domains, "_is_normal", lambda text: False)
    assert {entry: _outcome(entry) for entry in entries} == short


def test_each_invalid_entry_is_failed_with_the_reason_found_in_it_as_sent() -> None:
    plan = plan_domains(["\x00x.com", "", "  ", "ok.com"], max_batch_size=10)
    rejected = {outcome.domain: outcome for outcome in plan.rejected()}
    assert set(rejected) == {"\\x00x.com", "<empty>"}
    assert "contains a control character" in rejected["\\x00x.com"].error
    assert rejected["<empty>"].error == "empty entry"
    for outcome in rejected.values():
        assert (outcome.status, outcome.error_type, outcome.attempts) == ("failed", "invalid_domain", 0)
    # The keys they are recorded under no longer say why: the reason is kept with them.
    again = plan_domains(plan.domains + list(plan.invalid), max_batch_size=10, recorded=True)
    assert "control character" not in str(again.invalid["\\x00x.com"])


def test_a_batch_planned_in_turns_is_the_same_plan_and_lets_the_loop_serve_others() -> None:
    """20,000 URLs (none takes the short way): between two turns the loop runs its other
    tasks, which never wait for more than a few milliseconds of work (counted in CPU time:
    a busy machine's pauses are not the plan's)."""
    import asyncio
    import time

    from scrapersky.domains import plan_domains_in_turns

    entries = [f"https://Host-{i}.test/page" for i in range(20_000)] + ["not a domain", "host-1.test"]

    async def planned() -> tuple[object, list[float]]:
        gaps: list[float] = []
        done = asyncio.Event()

        async def ticker() -> None:
            while not done.is_set():
                started = time.process_time()
                await asyncio.sleep(0)
                gaps.append(time.process_time() - started)

        ticking = asyncio.create_task(ticker())
        try:
            return await plan_domains_in_turns(entries, max_batch_size=30_000), gaps
        finally:
            done.set()
            await ticking

    plan, gaps = asyncio.run(planned())
    expected = plan_domains(entries, max_batch_size=30_000)
    assert (plan.domains, list(plan.invalid), plan.summary()) == (expected.domains, list(expected.invalid),
                                                                  expected.summary())
    assert len(gaps) >= 20_000 // 100 and max(gaps) < 0.05, (len(gaps), max(gaps))
    with pytest.raises(BatchTooLarge):
        asyncio.run(plan_domains_in_turns(entries, max_batch_size=100))
