"""Forged, borrowed and odd bearer tokens, tried as an attacker would, against a real
`scrapersky api` process (tests/test_api.py's ``serving``: uvicorn on loopback, the
session's Prefect stack, PostgreSQL through PgBouncer): each with the status and error
code it must get. Then who a token acts as (``created_by``), the settings that change
what is accepted, and the request rate per caller.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest

from scrapersky.api.auth import Authenticator, service_user
from scrapersky.api.rate_limit import RateLimit
from scrapersky.errors import AccessError, ConfigError, NoTenant, RateLimited, RoleNotAllowed
from scrapersky.settings import Settings

from stack import Stack
from test_api import PREFIX, Api, serving

TENANT_A = uuid.uuid4()
TENANT_B = uuid.uuid4()
DEFAULT_TENANT = uuid.UUID("00000000-0000-0000-0000-000000000000")
USER = uuid.uuid4()
TOKEN_USER = uuid.uuid4()  # the user named by STATIC_WITH_USER's entry
SECRET = f"jwt-{secrets.token_hex(16)}"
STATIC_A = f"tok-a-{secrets.token_hex(12)}"
STATIC_B = f"tok-b-{secrets.token_hex(12)}"
STATIC_WITH_USER = f"tok-u-{secrets.token_hex(12)}"
OLD_DASHBOARD_TOKEN = "scraper_sky_2024"
SECRETS = (SECRET, STATIC_A, STATIC_B, STATIC_WITH_USER)
ENV = {
    "SCRAPERSKY_API_TOKENS": f"{STATIC_A}={TENANT_A} {STATIC_B}={TENANT_B}, {STATIC_WITH_USER}={TENANT_A}:{TOKEN_USER}"
                             f" {OLD_DASHBOARD_TOKEN}={DEFAULT_TENANT}",
    "SCRAPERSKY_JWT_SECRET": SECRET,
    "SCRAPERSKY_JWT_ROLE_TENANTS": f"service_role={TENANT_A}",
}

DROP = object()  # a claim left out of the token


def claims(**changes: Any) -> dict[str, Any]:
    """A signed-in user of tenant A, as Supabase issues their token, with ``changes``
    (``DROP`` leaves a claim out; ``exp``/``nbf``/``iat`` are seconds from now)."""
    now = time.time()
    base: dict[str, Any] = {
        "sub": str(USER), "aud": "authenticated", "role": "authenticated", "exp": 600, "iat": 0,
        "app_metadata": {"provider": "email", "tenant_id": str(TENANT_A)}, "user_metadata": {},
    }
    base.update(changes)
    for timed in ("exp", "nbf", "iat"):
        if isinstance(base.get(timed), int | float):
            base[timed] = now + base[timed]
    return {name: value for name, value in base.items() if value is not DROP}


def signed(secret: str = SECRET, algorithm: str = "HS256", **changes: Any) -> str:
    return jwt.encode(claims(**changes), secret, algorithm=algorithm)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_signed(payload: dict[str, Any], key: bytes, alg: str = "HS256", digest: str = "sha256") -> str:
    """A JWT signed by hand, as PyJWT would not (an empty key, a header that lies)."""
    head = _b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    body = _b64(json.dumps(payload).encode())
    return f"{head}.{body}.{_b64(hmac.new(key, f'{head}.{body}'.encode(), getattr(hashlib, digest)).digest())}"


def tampered() -> str:
    """A valid token of tenant B whose payload is rewritten to name tenant A."""
    head, _, signature = signed(app_metadata={"tenant_id": str(TENANT_B)}).split(".")
    return f"{head}.{_b64(json.dumps(claims()).encode())}.{signature}"


def anon_key(**changes: Any) -> str:
    """Supabase's anon key: role anon, no user, no tenant, no aud, ten years long."""
    payload = {"iss": "supabase", "ref": "abcdefghijklmnopqrst", "role": "anon", "iat": 0, "exp": 10 * 365 * 86400}
    payload.update(changes)
    return signed(**{name: payload.get(name, DROP) for name in
                     ("iss", "ref", "role", "iat", "exp", "sub", "aud", "app_metadata", "user_metadata", "tenant_id")})


#: (attempt, its token (built when tried: times are relative), status, error code).
#: Every token asks for tenant A's batch; 200 is the batch, 404 a batch not found.
FORGED: list[tuple[str, Callable[[], str], int, str | None]] = [
    # Accepted: the controls, so the table can fail the other way.
    ("static token of tenant A", lambda: STATIC_A, 200, None),
    ("static token of tenant A naming a user", lambda: STATIC_WITH_USER, 200, None),
    ("user JWT, tenant in app_metadata", lambda: signed(), 200, None),
    ("user JWT, tenant in the top-level tenant_id claim",
     lambda: signed(app_metadata={"provider": "email"}, tenant_id=str(TENANT_A)), 200, None),
    ("aud a list holding authenticated", lambda: signed(aud=["other", "authenticated"]), 200, None),
    ("expired 10 s ago (within the 30 s leeway)", lambda: signed(exp=-10), 200, None),
    ("nbf 10 s ahead (within the leeway)", lambda: signed(nbf=10), 200, None),
    ("service_role JWT without a tenant (the operator maps it to A)",
     lambda: signed(role="service_role", sub=DROP, app_metadata=DROP), 200, None),
    # The caller's own tenant: another tenant's batch is not found.
    ("user JWT of tenant B", lambda: signed(app_metadata={"tenant_id": str(TENANT_B)}), 404, "batch_not_found"),
    ("static token of tenant B", lambda: STATIC_B, 404, "batch_not_found"),
    ("the old dashboard's token (default tenant)", lambda: OLD_DASHBOARD_TOKEN, 404, "batch_not_found"),
    ("user_metadata names A, app_metadata names B",
     lambda: signed(app_metadata={"tenant_id": str(TENANT_B)}, user_metadata={"tenant_id": str(TENANT_A)}),
     404, "batch_not_found"),
    ("service_role JWT of tenant B (its claim wins over the role's tenant)",
     lambda: signed(role="service_role", sub=DROP, app_metadata={"tenant_id": str(TENANT_B)}), 404, "batch_not_found"),
    # No tenant in a trusted claim.
    ("tenant only in user_metadata (every user can edit it)",
     lambda: signed(app_metadata={"provider": "email"}, user_metadata={"tenant_id": str(TENANT_A)}), 403, "no_tenant"),
    ("user JWT with no tenant at all", lambda: signed(app_metadata=DROP), 403, "no_tenant"),
    ("app_metadata and tenant_id name different tenants", lambda: signed(tenant_id=str(TENANT_B)), 403, "wrong_tenant"),
    # Roles.
    ("Supabase's anon key as issued (no aud)", lambda: anon_key(), 401, "not_authenticated"),
    ("anon key with aud authenticated", lambda: anon_key(aud="authenticated"), 403, "role_not_allowed"),
    ("anon key with aud and tenant A in app_metadata",
     lambda: anon_key(aud="authenticated", app_metadata={"tenant_id": str(TENANT_A)}), 403, "role_not_allowed"),
    ("no role", lambda: signed(role=DROP), 403, "role_not_allowed"),
    ("role supabase_admin", lambda: signed(role="supabase_admin"), 403, "role_not_allowed"),
    ("role a list", lambda: signed(role=["authenticated"]), 403, "role_not_allowed"),
    # Audience and time.
    ("wrong aud", lambda: signed(aud="elsewhere"), 401, "not_authenticated"),
    ("no aud", lambda: signed(aud=DROP), 401, "not_authenticated"),
    ("no exp", lambda: signed(exp=DROP), 401, "not_authenticated"),
    ("expired 90 s ago", lambda: signed(exp=-90), 401, "not_authenticated"),
    ("nbf 5 minutes ahead", lambda: signed(nbf=300), 401, "not_authenticated"),
    ("iat 5 minutes ahead", lambda: signed(iat=300), 401, "not_authenticated"),
    # Signatures.
    ("alg none", lambda: jwt.encode(claims(), None, algorithm="none"), 401, "not_authenticated"),
    ("alg none with a signature", lambda: hand_signed(claims(), SECRET.encode(), alg="none"), 401, "not_authenticated"),
    ("wrong secret", lambda: signed(secret="not-the-secret-but-as-long-as-one-should-be"), 401, "not_authenticated"),
    ("HS256 with an empty secret", lambda: hand_signed(claims(), b""), 401, "not_authenticated"),
    ("HS512 with the right secret", lambda: hand_signed(claims(), SECRET.encode(), "HS512", "sha512"), 401,
     "not_authenticated"),
    ("signature removed", lambda: signed().rsplit(".", 1)[0] + ".", 401, "not_authenticated"),
    ("payload rewritten from tenant B to A", tampered, 401, "not_authenticated"),
    ("signed with a static token as the secret", lambda: signed(secret=STATIC_A + STATIC_B), 401, "not_authenticated"),
    # Claims that are not what they must be.
    ("tenant not a UUID", lambda: signed(app_metadata={"tenant_id": "acme"}), 401, "not_authenticated"),
    ("top-level tenant not a UUID", lambda: signed(app_metadata=DROP, tenant_id="acme"), 401, "not_authenticated"),
    ("sub not a UUID", lambda: signed(sub="bob"), 401, "not_authenticated"),
    # Static tokens.
    ("static token in other case", lambda: STATIC_A.upper(), 401, "not_authenticated"),
    ("static token with a character more", lambda: STATIC_A + "x", 401, "not_authenticated"),
    ("static token's tenant as the token", lambda: str(TENANT_A), 401, "not_authenticated"),
]


@pytest.fixture(scope="module")
def api(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    with serving(stack, tmp_path_factory.mktemp("auth"), "auth", **ENV) as running:
        yield running


@pytest.fixture(scope="module")
def batch_of_a(api: Api) -> str:
    submitted = api.call("POST", f"{PREFIX}/batch", token=STATIC_A, json={"domains": ["ok-auth-a.test"]})
    assert submitted.status_code == 200, submitted.text
    return submitted.json()["batch_id"]


def test_every_forged_token_gets_its_status_and_code(api: Api, batch_of_a: str) -> None:
    path = f"{PREFIX}/batch/{batch_of_a}/status"
    wrong = []
    for attempt, token, status, code in FORGED:
        response = api.call("GET", path, token=token())
        got = (response.status_code, response.json().get("error"))
        if got != (status, code):
            wrong.append(f"{attempt}: {got}, not {(status, code)}: {response.json().get('detail')}")
        if status == 401:
            assert response.headers.get("www-authenticate") == "Bearer", attempt
        if status == 200:
            assert response.json()["batch_id"] == batch_of_a, attempt
    assert not wrong, "\n".join(wrong)
    # No refusal repeats a token or the secret, nor does the service's log.
    seen = "".join(api.answers) + api.log.read_text(errors="replace")
    assert len(api.answers) > len(FORGED) and not [secret for secret in SECRETS if secret in seen]


def test_a_refused_token_registers_nothing(api: Api) -> None:
    """The anon key of old created a batch in the default tenant: now nothing is recorded."""
    for token in (anon_key(aud="authenticated"), signed(app_metadata={"provider": "email"},
                                                        user_metadata={"tenant_id": str(TENANT_A)})):
        batch_id = str(uuid.uuid4())
        refused = api.call("POST", f"{PREFIX}/batch", token=token, json={"domains": ["ok-auth-x.test"], "batch_id": batch_id})
        assert refused.status_code == 403, refused.text
        for owner in (STATIC_A, OLD_DASHBOARD_TOKEN):
            assert api.call("GET", f"{PREFIX}/batch/{batch_id}/status", token=owner).status_code == 404


def test_every_token_names_who_asked(api: Api) -> None:
    """created_by is the token's user: the JWT's sub, the static token's user, else the
    tenant's service user for that kind of token."""
    expected = {
        "jwt of a user": (signed(), USER),
        "static token naming a user": (STATIC_WITH_USER, TOKEN_USER),
        "static token": (STATIC_A, service_user(TENANT_A, "api-token")),
        "service_role jwt": (signed(role="service_role", sub=DROP, app_metadata=DROP),
                             service_user(TENANT_A, "jwt-role:service_role")),
    }
    for case, (token, user) in expected.items():
        submitted = api.call("POST", f"{PREFIX}/scan", token=token, json={"base_url": "ok-auth-scan.test"})
        assert submitted.status_code == 200, (case, submitted.text)
        job = api.call("GET", submitted.json()["status_url"], token=token)
        assert job.status_code == 200 and job.json()["created_by"] == str(user), case
    assert service_user(TENANT_A, "api-token") != service_user(TENANT_B, "api-token")


# The rules as settings, on the Authenticator.

def authenticator(**settings: Any) -> Authenticator:
    return Authenticator(Settings(**{"api_tokens": f"{STATIC_A}={TENANT_A}", "jwt_secret": SECRET, **settings}))


def test_any_audience_still_refuses_the_anon_key() -> None:
    lenient = authenticator(jwt_audience="*")
    assert lenient.caller(f"Bearer {signed(aud=DROP)}").tenant_id == TENANT_A
    with pytest.raises(RoleNotAllowed):
        lenient.caller(f"Bearer {anon_key()}")


def test_the_tenant_claim_is_configured() -> None:
    top_level = signed(app_metadata=DROP, org=str(TENANT_B))
    assert authenticator(jwt_tenant_claim="org").caller(f"Bearer {top_level}").tenant_id == TENANT_B
    with pytest.raises(NoTenant):
        authenticator().caller(f"Bearer {top_level}")
    with pytest.raises(NoTenant):  # empty: app_metadata.tenant_id only
        authenticator(jwt_tenant_claim="").caller(f"Bearer {signed(app_metadata=DROP, tenant_id=str(TENANT_B))}")


def test_roles_and_their_tenants_are_configured() -> None:
    anon = f"Bearer {anon_key(aud='authenticated')}"
    opened = authenticator(jwt_roles="authenticated anon", jwt_role_tenants=f"anon={TENANT_B}")
    assert (opened.caller(anon).tenant_id, opened.caller(anon).created_by) == (TENANT_B,
                                                                                service_user(TENANT_B, "jwt-role:anon"))
    with pytest.raises(RoleNotAllowed):  # mapped but not accepted: refused
        authenticator(jwt_role_tenants=f"anon={TENANT_B}").caller(anon)
    with pytest.raises(RoleNotAllowed):
        authenticator(jwt_roles="service_role").caller(f"Bearer {signed()}")


@pytest.mark.parametrize(("variable", "value", "says"), [
    ("SCRAPERSKY_JWT_SECRET", "short-secret", "shorter than 32 bytes"),
    ("SCRAPERSKY_JWT_AUDIENCE", "", "'*' for any"),
    ("SCRAPERSKY_JWT_ROLES", " , ", "at least one role"),
    ("SCRAPERSKY_JWT_ROLE_TENANTS", "service_role", "ROLE=TENANT_UUID"),
    ("SCRAPERSKY_JWT_TENANT_CLAIM", "user_metadata", "cannot name the tenant"),
    ("SCRAPERSKY_API_TOKENS", f"{STATIC_A}={TENANT_A}:", "TOKEN=TENANT_UUID:USER_UUID"),
    ("SCRAPERSKY_API_TOKENS", f"{STATIC_A}={TENANT_A}:bob", "TOKEN=TENANT_UUID:USER_UUID"),
    ("SCRAPERSKY_RATE_LIMIT", "-1", "SCRAPERSKY_RATE_LIMIT"),
], ids=["short secret", "empty audience", "no role", "role without tenant", "user_metadata", "user missing",
        "user not a UUID", "negative rate"])
def test_a_setting_that_cannot_be_used_is_refused_without_echoing_it(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, says: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=variable) as refused:
        Settings.load()
    assert says in str(refused.value)
    if variable in ("SCRAPERSKY_JWT_SECRET", "SCRAPERSKY_API_TOKENS"):  # secrets
        assert value not in str(refused.value) and STATIC_A not in str(refused.value)


def test_old_token_entries_still_read() -> None:
    grants = Settings(api_tokens=f"{STATIC_A}={TENANT_A}, {STATIC_B}={TENANT_B}:{USER}").api_token_grants()
    assert grants[STATIC_A] == (TENANT_A, None) and grants[STATIC_B] == (TENANT_B, USER)


# The request rate per caller.

class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_admits_its_burst_then_its_rate() -> None:
    clock = Clock()
    limit = RateLimit(rate=2, burst=3, clock=clock)
    for _ in range(3):
        limit.take("a")
    with pytest.raises(RateLimited) as refused:
        limit.take("a")
    assert refused.value.retry_after == 1 and refused.value.error_type == "rate_limited"
    limit.take("b")  # another caller: its own bucket
    clock.now += 0.5  # one request back
    limit.take("a")
    with pytest.raises(RateLimited):
        limit.take("a")
    slow = RateLimit(rate=0.1, burst=1, clock=clock)
    slow.take("a")
    with pytest.raises(RateLimited) as refused:
        slow.take("a")
    assert refused.value.retry_after == 10  # whole seconds until one request is back


def test_buckets_are_bounded_and_forgotten_when_full_again() -> None:
    clock = Clock()
    limit = RateLimit(rate=50, burst=100, max_callers=1000, clock=clock)
    for caller in range(5000):
        limit.take(f"caller-{caller}")
    assert len(limit) == 1000  # the least recently seen dropped
    clock.now += 2.0  # a whole refill: every bucket full again, none kept
    limit.take("next")
    assert len(limit) == 1


def test_a_rate_of_zero_admits_everything() -> None:
    limit = RateLimit(rate=0, burst=1)
    for _ in range(1000):
        limit.take("a")
    assert not limit.enabled and len(limit) == 0


def test_a_token_past_its_rate_is_429_and_others_are_served(stack: Stack, tmp_path: Path) -> None:
    # A request back every 5 s: the test's own pace never refills a bucket by accident.
    with serving(stack, tmp_path, "rate", SCRAPERSKY_RATE_LIMIT="0.2", SCRAPERSKY_RATE_BURST="5", **ENV) as limited:
        path = f"{PREFIX}/batch/{uuid.uuid4()}/status"
        answers = [limited.call("GET", path, token=STATIC_A) for _ in range(8)]
        assert [a.status_code for a in answers[:5]] == [404] * 5
        refused = answers[-1]
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"] == "rate_limited" and "try again in" in refused.json()["detail"]
        wait = int(refused.headers["retry-after"])
        assert 1 <= wait <= 5
        # Another token, and another user's JWT, are their own callers.
        assert limited.call("GET", path, token=STATIC_B).status_code == 404
        assert limited.call("GET", path, token=signed(sub=str(uuid.uuid4()))).status_code == 404
        # One user's fresh tokens share the user's bucket: a new token is not a new rate.
        user = str(uuid.uuid4())
        mine = [limited.call("GET", path, token=signed(sub=user, iat=-i)).status_code for i in range(7)]
        assert mine[:5] == [404] * 5 and mine[-1] == 429
        # A refused request is not work done: the service still answers at once after the wait.
        time.sleep(wait)
        assert limited.call("GET", path, token=STATIC_A).status_code == 404
        # An unknown token never gets a bucket: it is refused before, as ever.
        assert limited.call("GET", path, token="nobody").status_code == 401
