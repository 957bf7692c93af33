import pytest

from scrapersky.batch import BatchOptions
from scrapersky.web.connect_to import ConnectTo, ConnectToRule
from scrapersky.errors import ConfigError


@pytest.mark.parametrize(
    ("spec", "rule"),
    [
        ("example.com:443:127.0.0.1:8443", ConnectToRule("example.com", 443, "127.0.0.1", 8443)),
        ("*.test:80:127.0.0.1:8080", ConnectToRule("*.test", 80, "127.0.0.1", 8080)),
        ("::127.0.0.1:9000", ConnectToRule("", None, "127.0.0.1", 9000)),
        ("a.test:80:[::1]:81", ConnectToRule("a.test", 80, "::1", 81)),
        ("A.Test:80::8081", ConnectToRule("a.test", 80, "", 8081)),
    ],
)
def test_parse(spec: str, rule: ConnectToRule) -> None:
    assert ConnectToRule.parse(spec) == rule


@pytest.mark.parametrize("spec", ["", "a:b:c:d", "a.test:80:127.0.0.1", "a:99999:b:1", "a:80:b:0"])
def test_parse_rejects(spec: str) -> None:
    with pytest.raises(ConfigError):
        ConnectToRule.parse(spec)


RULES = ConnectTo(
    [
        "::10.0.0.9:1",  # any host, any port (lowest priority)
        "*.test::127.0.0.1:2",
        "*.deep.test::127.0.0.1:3",
        "exact.deep.test::127.0.0.1:4",
        "exact.deep.test:443:127.0.0.1:5",
        "*.test:443:127.0.0.1:6",
    ]
)


@pytest.mark.parametrize(
    ("host", "port", "target"),
    [
        ("x.test", 80, ("127.0.0.1", 2)),
        ("x.test", 443, ("127.0.0.1", 6)),  # a rule naming the port beats one that does not
        ("x.deep.test", 80, ("127.0.0.1", 3)),  # the longest wildcard suffix wins
        ("x.deep.test", 443, ("127.0.0.1", 3)),  # ... even over a port-specific shorter one
        ("exact.deep.test", 80, ("127.0.0.1", 4)),  # an exact host beats any wildcard
        ("EXACT.deep.test", 443, ("127.0.0.1", 5)),
        ("test", 80, ("10.0.0.9", 1)),  # "*.test" does not match "test" itself
        ("other.org", 80, ("10.0.0.9", 1)),
    ],
)
def test_most_specific_rule_wins(host: str, port: int, target: tuple[str, int]) -> None:
    assert RULES.target(host, port) == target


def test_no_rule_no_override() -> None:
    assert ConnectTo(["a.test:80:127.0.0.1:1"]).target("b.test", 80) is None
    assert ConnectTo(["a.test:80:127.0.0.1:1"]).target("a.test", 81) is None
    assert ConnectTo(["a.test:80::"]).target("a.test", 80) == ("a.test", 80)


def test_settings_refuse_a_bad_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    from scrapersky.settings import Settings

    monkeypatch.setenv("SCRAPERSKY_CONNECT_TO", "*.test:80:127.0.0.1:8080 nonsense")
    with pytest.raises(ValueError, match="HOST1:PORT1:HOST2:PORT2"):
        Settings()


def test_connect_to_is_not_a_run_parameter() -> None:
    # Routing is the operator's: a batch's options cannot carry it (nor allowed networks).
    assert "connect_to" not in BatchOptions.model_fields
    assert "allow_networks" not in BatchOptions.model_fields
    with pytest.raises(ValueError):
        BatchOptions(connect_to=("*::10.0.0.1:80",))
