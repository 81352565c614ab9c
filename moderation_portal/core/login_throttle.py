"""Login throttling against password guessing.

Failed logins are counted per account (the username as typed, case-folded) and per client
address (`REMOTE_ADDR`; an IPv6 address by its /64, which one subscriber usually holds whole),
in the Django cache: Redis in production, so every web node sees the same counts, and the
process's memory in the embedded mode, which is one process. `LOGIN_THROTTLE_FAILURES`
failures of one account, or `LOGIN_THROTTLE_ADDRESS_FAILURES` from one address, within
`LOGIN_THROTTLE_WINDOW_SECONDS` of the first of them lock that account (address) for
`LOGIN_THROTTLE_WINDOW_SECONDS`. A lock ends by itself; `manage.py login_unlock <username>
[--address A]` lifts one early (an attacker can lock a known account out on purpose).

While a lock holds, the password is not checked at all: the right password does not get in
either, so a guess made during the lock tells the guesser nothing. The login page answers 429
with `Retry-After` before it even reads the form. The check sits in the authentication backend,
so every password form (the login page, the admin's) is covered. A successful login clears its
account's count; not its address's, so one account an attacker knows does not buy more guesses
at the others.

The address is `REMOTE_ADDR` only; forwarding headers are not trusted. Behind a reverse proxy
every client arrives from the proxy's address: run Daphne with `--proxy-headers` (the proxy
must overwrite `X-Forwarded-For`), or set `LOGIN_THROTTLE_ADDRESS_FAILURES=0` to count per
account only, or everyone shares one address's budget.

If the cache cannot be reached the throttle steps aside (logged at ERROR): people can still log
in while Redis is down, unthrottled until it is back.

The API's service tokens need no throttle: each is 32 random bytes (`create_service_token`),
looked up by its SHA-256, so guessing one is out of reach whatever the rate.
"""

import hashlib
import ipaddress
import logging
import math
import time
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.views import LoginView
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest

from moderation_portal.core import metrics

logger = logging.getLogger(__name__)

KEY_PREFIX = "login-throttle"
ACCOUNT = "account"
ADDRESS = "address"


@dataclass(frozen=True)
class Scope:
    kind: str  # ACCOUNT or ADDRESS
    key: str  # the cache key of its failure count; the lock is this plus ":locked"
    limit: int


def client_address_parse(value: str) -> str | None:
    """The address failures from `value` are counted under: IPv4-mapped IPv6 as IPv4, other
    IPv6 as its /64; None when `value` is not an IP address."""
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def client_address(request: HttpRequest | None) -> str | None:
    """The counted address of the request's client (REMOTE_ADDR only); None without one."""
    if request is None:
        return None
    return client_address_parse(request.META.get("REMOTE_ADDR", ""))


def _key(kind: str, value: str) -> str:
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"{KEY_PREFIX}:{kind}:{digest}"


def _scopes(username: str | None, address: str | None) -> list[Scope]:
    scopes = []
    if username:
        scopes.append(
            Scope(ACCOUNT, _key(ACCOUNT, username.casefold()), settings.LOGIN_THROTTLE_FAILURES)
        )
    if address and settings.LOGIN_THROTTLE_ADDRESS_FAILURES > 0:
        scopes.append(
            Scope(ADDRESS, _key(ADDRESS, address), settings.LOGIN_THROTTLE_ADDRESS_FAILURES)
        )
    return scopes


def login_locked_for(*, username: str | None, address: str | None) -> tuple[int, str | None]:
    """(seconds until a login may be tried, the locked scope); (0, None) when it may now. The
    account's lock is named first when both hold."""
    scopes = _scopes(username, address)
    if not scopes:
        return 0, None
    try:
        ends = cache.get_many([scope.key + ":locked" for scope in scopes])
    except Exception:  # any cache failure: step aside rather than lock everyone out
        logger.exception("login throttle: the cache is unreachable; not checking locks")
        return 0, None
    now = time.time()
    for scope in scopes:
        end = ends.get(scope.key + ":locked")
        if end is not None and end > now:
            return max(1, math.ceil(end - now)), scope.kind
    return 0, None


def login_failure_record(*, username: str | None, address: str | None) -> None:
    """Count one failed login; lock a scope that reaches its limit."""
    window = settings.LOGIN_THROTTLE_WINDOW_SECONDS
    logger.warning("login failed: account %r from %s", (username or "")[:150], address)
    if metrics.ENABLED:
        metrics.LOGIN_FAILURES.inc()
    for scope in _scopes(username, address):
        try:
            cache.add(scope.key, 0, timeout=window)  # the window starts at its first failure
            try:
                count = cache.incr(scope.key)
            except ValueError:  # expired between add and incr: this failure starts a new window
                cache.set(scope.key, 1, timeout=window)
                count = 1
            if count >= scope.limit:
                cache.set(scope.key + ":locked", time.time() + window, timeout=window)
                cache.delete(scope.key)  # counting starts again once the lock ends
                logger.warning(
                    "login locked: %s %s after %d failures, for %d s",
                    scope.kind,
                    repr((username or "")[:150]) if scope.kind == ACCOUNT else address,
                    count,
                    window,
                )
        except Exception:  # any cache failure: the login answer must not change
            logger.exception("login throttle: the cache is unreachable; failure not counted")
            return


def login_success_record(*, username: str | None) -> None:
    """The account's password was right: forget its failures."""
    if not username:
        return
    key = _key(ACCOUNT, username.casefold())
    try:
        cache.delete_many([key, key + ":locked"])
    except Exception:  # any cache failure: the login itself went through
        logger.exception("login throttle: the cache is unreachable; count not cleared")


def login_throttle_reset(*, username: str | None = None, address: str | None = None) -> None:
    """Forget the failures and locks of an account and/or an address (as counted:
    `client_address_parse`)."""
    keys = []
    if username:
        keys.append(_key(ACCOUNT, username.casefold()))
    if address:
        keys.append(_key(ADDRESS, address))
    cache.delete_many([part for key in keys for part in (key, key + ":locked")])


def _throttled_count(scope: str) -> None:
    if metrics.ENABLED:
        metrics.LOGIN_THROTTLED.labels(scope=scope).inc()


class ThrottledModelBackend(ModelBackend):
    """Django's username and password backend, refusing without checking the password while
    the account or the address is locked, and counting failures."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if username is None:
            username = kwargs.get(get_user_model().USERNAME_FIELD)
        if username is None or password is None:
            return None
        address = client_address(request)
        wait, scope = login_locked_for(username=username, address=address)
        if wait:
            _throttled_count(scope)
            logger.warning("login refused unchecked: %s locked for %d s more", scope, wait)
            raise PermissionDenied("Too many failed logins.")  # stops authenticate() here
        user = super().authenticate(request, username=username, password=password, **kwargs)
        if user is None:
            login_failure_record(username=username, address=address)
        else:
            login_success_record(username=username)
        return user

    async def aauthenticate(self, request, username=None, password=None, **kwargs):
        return await sync_to_async(self.authenticate)(
            request, username=username, password=password, **kwargs
        )


class ThrottledLoginView(LoginView):
    """The login page: 429 with Retry-After, the form not even read, while a lock holds."""

    def post(self, request, *args, **kwargs):
        username = request.POST.get("username") or None
        wait, scope = login_locked_for(username=username, address=client_address(request))
        if not wait:
            return super().post(request, *args, **kwargs)
        _throttled_count(scope)
        context = self.get_context_data(
            form=self.get_form_class()(request),
            login_throttled=True,
            retry_after_minutes=math.ceil(wait / 60),
        )
        response = self.render_to_response(context, status=429)
        response["Retry-After"] = str(wait)
        return response
