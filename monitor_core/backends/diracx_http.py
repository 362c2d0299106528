"""DiracX over HTTP: tokens, retries and the accounting of every call.

``DiracxClient`` is the one place the ``diracx`` backend talks to a DiracX service. It keeps
an access token fresh (refreshed ahead of its expiry, and again when the service answers
401), retries 503 ("not ready", "overloaded") with backoff inside the caller's deadline, and
counts calls and bytes so the benchmark can compare full and delta polls.

Tokens come from a :class:`TokenSource`: the file ``dirac login`` writes
(``DIRACX_CREDENTIALS_PATH``), or the legacy exchange a local test service enables.
"""

from __future__ import annotations

import abc
import asyncio
import base64
import contextlib
import fcntl
import json
import logging
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx

from ._base import BackendError, MalformedAnswer, ServiceUnreachable

__all__ = [
    "CallStatistics",
    "CredentialsFile",
    "DiracxClient",
    "LegacyExchange",
    "Tokens",
    "TokenSource",
    "default_credentials_path",
]

log = logging.getLogger(__name__)

CLIENT_ID: Final = "myDIRACClientID"
"""DiracX's public client id, the one ``dirac login`` uses."""
_REFRESH_AHEAD: Final = 60.0
"""Refresh an access token this many seconds before it expires, so no call carries a dying one."""
_RETRY_503: Final = 4


@dataclass(frozen=True, slots=True)
class Tokens:
    """An access token, when it stops being good (wall clock), and the refresh token."""

    access_token: str
    expires_at: float
    refresh_token: str | None = None


class TokenSource(abc.ABC):
    """Where tokens come from, and how they are renewed."""

    @abc.abstractmethod
    async def load(self, http: httpx.AsyncClient) -> Tokens:
        """The tokens to start with."""

    async def renew(self, http: httpx.AsyncClient, tokens: Tokens) -> Tokens:
        """New tokens from the refresh token (which DiracX may rotate, spending the old one).

        Raises:
            BackendError: the service refused or could not be reached.
        """
        if not tokens.refresh_token:
            return await self.load(http)
        try:
            answer = await http.post(
                "/api/auth/token",
                data={"grant_type": "refresh_token", "refresh_token": tokens.refresh_token, "client_id": CLIENT_ID},
            )
        except httpx.HTTPError as exc:
            raise BackendError(f"token refresh: {type(exc).__name__}: {exc}") from exc
        if answer.status_code != 200:
            raise BackendError(f"token refresh refused: HTTP {answer.status_code} {answer.text[:200]}")
        renewed = _tokens_from_response(answer, "token refresh")
        await self.store(renewed)
        return renewed

    async def store(self, tokens: Tokens) -> None:  # noqa: B027 - optional hook
        """Keep renewed tokens where they came from (the credentials file)."""


def _tokens_from_response(answer: httpx.Response, what: str) -> Tokens:
    try:
        body = answer.json()
        return Tokens(
            access_token=str(body["access_token"]),
            expires_at=time.time() + float(body["expires_in"]),
            refresh_token=body.get("refresh_token"),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise MalformedAnswer(f"{what}: not a token response") from exc


def default_credentials_path() -> Path:
    """Where ``dirac login`` keeps its tokens: ``$DIRACX_CREDENTIALS_PATH`` or DiracX's default."""
    configured = os.environ.get("DIRACX_CREDENTIALS_PATH")
    return Path(configured) if configured else Path.home() / ".cache" / "diracx" / "credentials.json"


class CredentialsFile(TokenSource):
    """The JSON file ``dirac login`` writes: ``access_token``, ``refresh_token``, ``expires_on``.

    Renewed tokens are written back (under the same ``flock`` DiracX's client takes): when
    DiracX rotates the refresh token, the one in the file is spent and the user's own
    ``dirac`` commands need the new one.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_credentials_path()

    async def load(self, http: httpx.AsyncClient) -> Tokens:
        return await asyncio.to_thread(self._read)

    def _read(self) -> Tokens:
        try:
            with self.path.open() as f:
                fcntl.flock(f, fcntl.LOCK_SH)
                try:
                    data = json.load(f)
                finally:
                    fcntl.flock(f, fcntl.LOCK_UN)
            return Tokens(str(data["access_token"]), float(data["expires_on"]), data.get("refresh_token"))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BackendError(f"cannot read DiracX credentials {self.path} ({exc}); run `dirac login`") from exc

    async def store(self, tokens: Tokens) -> None:
        await asyncio.to_thread(self._write, tokens)

    def _write(self, tokens: Tokens) -> None:
        data = {"access_token": tokens.access_token, "refresh_token": tokens.refresh_token}
        data["expires_on"] = int(tokens.expires_at)  # type: ignore[assignment]
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(fd, "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                f.write(json.dumps(data))
                f.flush()
                os.fsync(f.fileno())
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)


class LegacyExchange(TokenSource):
    """Tokens for a user from DiracX's legacy exchange.

    A service enables it with a shared secret; DIRAC's own servers use it to mint tokens for
    proxies, and a local test service uses it in place of a browser login.
    """

    def __init__(self, secret: str, user: str, vo: str, group: str) -> None:
        self.secret, self.user, self.vo, self.group = secret, user, vo, group

    async def load(self, http: httpx.AsyncClient) -> Tokens:
        try:
            answer = await http.get(
                "/api/auth/legacy-exchange",
                params={"preferred_username": self.user, "scope": f"vo:{self.vo} group:{self.group}"},
                headers={"Authorization": f"Bearer diracx:legacy:{self.secret}"},
            )
        except httpx.HTTPError as exc:
            raise BackendError(f"legacy exchange: {type(exc).__name__}: {exc}") from exc
        if answer.status_code != 200:
            raise BackendError(f"legacy exchange refused: HTTP {answer.status_code} {answer.text[:200]}")
        return _tokens_from_response(answer, "legacy exchange")

    @staticmethod
    def encode_secret(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).decode()


@dataclass(slots=True)
class CallStatistics:
    """What the client has cost the service so far."""

    calls: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    retries_503: int = 0
    token_refreshes: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)

    def count(self, kind: str, request: httpx.Request, response: httpx.Response) -> None:
        self.calls += 1
        self.by_kind[kind] = self.by_kind.get(kind, 0) + 1
        self.bytes_sent += len(request.content or b"") + len(request.url.raw_path)
        self.bytes_received += len(response.content)


class DiracxClient:
    """An authenticated asyncio client of one DiracX service.

    Args:
        url: the service's base URL (``https://diracx.example.org``).
        tokens: where the access token comes from.
        timeout: seconds for one HTTP exchange.
        verify: TLS verification (a CA bundle path, or ``False`` for a loopback test service).
        connections: most connections kept open to the service.
    """

    def __init__(
        self,
        url: str,
        tokens: TokenSource,
        *,
        timeout: float = 60.0,
        verify: bool | str = True,
        connections: int = 16,
    ) -> None:
        self.url = url.rstrip("/")
        self.source = tokens
        self.stats = CallStatistics()
        self._tokens: Tokens | None = None
        self._token_lock = asyncio.Lock()
        self._http = httpx.AsyncClient(
            base_url=self.url,
            timeout=timeout,
            verify=verify,
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        )
        # Presigned sandbox URLs must be fetched without the service's token (it would leak
        # to the storage, which also refuses requests that carry one).
        self._storage = httpx.AsyncClient(timeout=timeout, verify=verify)
        self.server_skew: float = 0.0
        """Seconds the service's clock is ahead of ours, from its last ``Date`` header (it is
        truncated to whole seconds, so this errs on the early side)."""

    async def close(self) -> None:
        await self._http.aclose()
        await self._storage.aclose()

    async def _access_token(self, *, renew_from: Tokens | None = None) -> str:
        async with self._token_lock:
            tokens = self._tokens
            if tokens is None:
                tokens = await self.source.load(self._http)
            if (renew_from is not None and tokens is renew_from) or tokens.expires_at - _REFRESH_AHEAD < time.time():
                tokens = await self.source.renew(self._http, tokens)
                self.stats.token_refreshes += 1
            self._tokens = tokens
            return tokens.access_token

    async def request(
        self,
        method: str,
        path: str,
        *,
        kind: str,
        params: dict[str, Any] | None = None,
        json_body: Any = None,
    ) -> httpx.Response:
        """One authenticated call; 401 renews the token once, 503 is retried with backoff.

        Raises:
            ServiceUnreachable: no connection to the service could be made.
            BackendError: the call failed on the way, or the service kept answering 503.
        """
        renewed = False
        for attempt in range(_RETRY_503 + 1):
            token = await self._access_token()
            used = self._tokens
            try:
                answer = await self._http.request(
                    method, path, params=params, json=json_body, headers={"Authorization": f"Bearer {token}"}
                )
            except httpx.HTTPError as exc:
                raise _call_failed(kind, exc) from exc
            self.stats.count(kind, answer.request, answer)
            self._note_date(answer)
            if answer.status_code == 401 and not renewed:
                renewed = True
                log.info("DiracX refused the access token (%s); renewing it", kind)
                await self._access_token(renew_from=used)
                continue
            if answer.status_code == 503 and attempt < _RETRY_503:
                self.stats.retries_503 += 1
                await asyncio.sleep(min(4.0, 0.25 * 2**attempt) * (0.5 + random.random()))
                continue
            return answer
        raise BackendError(f"{kind}: the service kept answering 503")

    def _note_date(self, answer: httpx.Response) -> None:
        date = answer.headers.get("date")
        if not date:
            return
        with contextlib.suppress(TypeError, ValueError):
            from email.utils import parsedate_to_datetime

            self.server_skew = parsedate_to_datetime(date).timestamp() - time.time()

    async def json(
        self,
        method: str,
        path: str,
        *,
        kind: str,
        params: dict[str, Any] | None = None,
        json_body: Any = None,
        ok: tuple[int, ...] = (200,),
    ) -> tuple[httpx.Response, Any]:
        """A call whose answer must be JSON with one of the ``ok`` statuses.

        Raises:
            BackendError: another status (its detail in the message).
            MalformedAnswer: the body is not JSON.
        """
        answer = await self.request(method, path, kind=kind, params=params, json_body=json_body)
        if answer.status_code not in ok:
            raise BackendError(f"{kind}: HTTP {answer.status_code} {answer.text[:200]!r}")
        try:
            return answer, answer.json()
        except ValueError as exc:
            raise MalformedAnswer(f"{kind}: the answer is not JSON ({answer.text[:60]!r})") from exc

    async def download(self, url: str, *, kind: str) -> bytes:
        """Fetch a presigned storage URL (no token: the signature is the credential).

        Raises:
            ServiceUnreachable: no connection to the storage could be made.
            BackendError: the download failed on the way, or the storage refused it.
        """
        try:
            answer = await self._storage.get(url)
        except httpx.HTTPError as exc:
            raise _call_failed(kind, exc) from exc
        if answer.status_code != 200:
            raise BackendError(f"{kind}: storage answered HTTP {answer.status_code}")
        return answer.content

    async def upload_form(self, url: str, fields: dict[str, str], data: bytes, *, kind: str) -> None:
        """Upload through a presigned POST form (what DiracX hands out for a new sandbox).

        Raises:
            BackendError: the storage could not be reached or refused.
        """
        try:
            answer = await self._storage.post(url, data=fields, files={"file": ("sandbox", data)})
        except httpx.HTTPError as exc:
            raise _call_failed(kind, exc) from exc
        if answer.status_code not in (200, 201, 204):
            raise BackendError(f"{kind}: storage answered HTTP {answer.status_code}")


def _call_failed(kind: str, exc: httpx.HTTPError) -> BackendError:
    """The error for a call that got no answer; refused or unanswered connections are told apart."""
    message = f"{kind}: {type(exc).__name__}: {exc or 'connection failed'}"
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return ServiceUnreachable(message)
    return BackendError(message)
