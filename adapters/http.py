"""The one HTTP layer every adapter uses: FHIR REST verbs, and plain JSON/form calls for vendor APIs.

One `FhirClient` (one `httpx.Client`, so connections are reused) per adapter instance; the sync worker
runs one adapter per thread, so the client is synchronous. Every request gets a new `X-Request-ID`, the
write's `X-Correlation-ID` and explicit connect/read timeouts, and comes back as an `HttpReply` holding
the `HttpExchange` records the worker stores as WriteAttempt rows: headers without secrets, a hash of the
body, the status, a truncated answer (OperationOutcome text kept) and the latency.

Requests are first described as a `RequestSpec`, so an adapter's `plan()` shows exactly what `write()`
would send. Network failures are never raised: `HttpReply.failure` says whether the request could have
reached the server (see `classify_exception` below).

Credentials go to the tenant and nowhere else. Every request must lie under one of the client's roots
(the FHIR base: scheme, host, port and base path; plus any vendor API root the adapter was configured
with), and a URL the EHR hands us at run time (a search's `next` link) must lie under the FHIR base. Anything
else is not requested at all: the refusal is kept in `FhirClient.refusals` (an `OutboundRefusal`) for the
domain to alert on. Redirects are never followed; one that points outside the tenant is a refusal too.
`Location` headers are only ever parsed for an id and a version.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Protocol
from urllib.parse import parse_qsl, quote, urlencode, urljoin, urlsplit, urlunsplit

import httpx

from adapters.base import HttpExchange, OutboundRefusal, Outcome, PlannedRequest

logger = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"
JSON_PATCH = "application/json-patch+json"
REDACTED = "[redacted]"
# Stored answers are cut to this many characters; an OperationOutcome is summarised first so its text
# survives the cut.
MAX_STORED_BODY = 4000
# Header and query/JSON key names whose values are never stored.
_SECRET_WORDS = (
    "authorization",
    "cookie",
    "token",
    "secret",
    "password",
    "passwd",
    "api-key",
    "apikey",
    "assertion",
    "credential",
)


@lru_cache(maxsize=4096)
def is_secret_name(name: str) -> bool:
    # Cached: every key of every stored answer is asked about, and the keys are few (FHIR's names).
    lowered = name.lower()
    return any(word in lowered for word in _SECRET_WORDS)


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {k: (REDACTED if is_secret_name(k) else v) for k, v in headers.items()}


def redact_url(url: str) -> str:
    parts = urlsplit(url)
    if not parts.query:
        return url
    query = [
        (k, REDACTED if is_secret_name(k) else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
    ]
    return urlunsplit(parts._replace(query=urlencode(query, safe="|/:,")))


def redact_json(value: Any, extra: Iterable[str] = ()) -> Any:
    """Replaces the values of secret-looking keys (and of `extra` keys) anywhere in a JSON value."""
    extra = frozenset(extra)
    if isinstance(value, Mapping):
        return {
            k: (REDACTED if (is_secret_name(str(k)) or k in extra) else redact_json(v, extra))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact_json(v, extra) for v in value]
    return value


def operation_outcome_summary(body: Any) -> str:
    """'severity code: text [expression]' per issue, joined; '' when `body` is not an OperationOutcome."""
    if not isinstance(body, Mapping) or body.get("resourceType") != "OperationOutcome":
        return ""
    parts = []
    for issue in body.get("issue") or []:
        if not isinstance(issue, Mapping):
            continue
        details = issue.get("details") or {}
        codes = [
            c.get("code") for c in details.get("coding") or [] if isinstance(c, Mapping) and c.get("code")
        ]
        text = issue.get("diagnostics") or details.get("text") or ""
        head = " ".join(str(x) for x in (issue.get("severity"), issue.get("code")) if x)
        line = f"{head}: {text}" if text else head
        if codes:
            line += f" ({', '.join(map(str, codes))})"
        if issue.get("expression"):
            line += f" at {', '.join(map(str, issue['expression']))}"
        parts.append(line.strip())
    return "; ".join(p for p in parts if p)


def stored_body(text: str, parsed: Any) -> str:
    """What a WriteAttempt keeps of an answer: secrets removed, truncated, OperationOutcome text kept."""
    if parsed is not None:
        text = json.dumps(redact_json(parsed), ensure_ascii=False, separators=(",", ":"))
        if len(text) > MAX_STORED_BODY:
            summary = operation_outcome_summary(parsed)
            if summary:
                text = json.dumps(
                    {"resourceType": "OperationOutcome", "summary": summary}, ensure_ascii=False
                )
    if len(text) > MAX_STORED_BODY:
        text = f"{text[:MAX_STORED_BODY]}...[{len(text) - MAX_STORED_BODY} more characters]"
    return text


_DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_REFUSED_URL = 500


def classify_exception(exc: BaseException) -> tuple[Outcome, str]:
    """Whether a request that raised `exc` may have reached the server."""
    name = type(exc).__name__
    detail = str(exc) or name
    # Nothing was sent: no connection was made, or none was free in the pool.
    if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
        return Outcome.RETRYABLE, f"connect timeout, nothing sent ({name}: {detail})"
    if isinstance(exc, httpx.ConnectError | httpx.ProxyError):
        return Outcome.RETRYABLE, f"could not connect, nothing sent ({name}: {detail})"
    # Sent (or partly sent), then no complete answer: the server may have acted on it.
    if isinstance(exc, httpx.ReadTimeout | httpx.WriteTimeout):
        return Outcome.AMBIGUOUS, f"timed out waiting for the answer, the request may have landed ({name})"
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError | httpx.CloseError):
        return (
            Outcome.AMBIGUOUS,
            f"connection lost after sending, the request may have landed ({name}: {detail})",
        )
    if isinstance(exc, httpx.TimeoutException | httpx.NetworkError):
        return Outcome.AMBIGUOUS, f"network failure, the request may have landed ({name}: {detail})"
    # Our own request was malformed, or the target is misconfigured: a person must look.
    if isinstance(exc, httpx.LocalProtocolError | httpx.UnsupportedProtocol | httpx.InvalidURL):
        return Outcome.TERMINAL, f"invalid request or target URL ({name}: {detail})"
    return Outcome.AMBIGUOUS, f"unexpected transport error, the request may have landed ({name}: {detail})"


@dataclass(frozen=True)
class UrlRoot:
    """A place requests may go: one scheme, host and port, and everything under one path."""

    scheme: str
    host: bytes
    port: int
    path: str  # no trailing slash; "" admits the whole origin

    @classmethod
    def of(cls, url: str) -> UrlRoot:
        parsed = httpx.URL(url)
        port = parsed.port or _DEFAULT_PORTS.get(parsed.scheme, 0)
        return cls(parsed.scheme, parsed.raw_host, port, parsed.path.rstrip("/"))

    def admits(self, url: httpx.URL) -> bool:
        if url.scheme != self.scheme or url.raw_host != self.host:
            return False
        if (url.port or _DEFAULT_PORTS.get(url.scheme, 0)) != self.port:
            return False
        # Userinfo is how `https://evil.example\@ehr/` tricks differ between parsers; dot segments and
        # backslashes (percent-encoded ones survive httpx's normalisation) can climb out of the base path.
        if url.userinfo:
            return False
        path = url.path
        if "\\" in path or any(segment in (".", "..") for segment in path.split("/")):
            return False
        return not self.path or path == self.path or path.startswith(self.path + "/")

    def __str__(self) -> str:
        default = _DEFAULT_PORTS.get(self.scheme)
        port = "" if self.port == default else f":{self.port}"
        return f"{self.scheme}://{self.host.decode('ascii', 'replace')}{port}{self.path}"


def _parsed(url: str) -> httpx.URL | None:
    try:
        return httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        return None


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest() if data else ""


class TokenSource(Protocol):
    """Gives bearer tokens (SMART backend services: `adapters.auth.SmartBackendAuth`)."""

    def token(self, http: httpx.Client, *, correlation_id: str = "") -> str:
        """A bearer token; a fetch it makes carries X-Request-ID and `correlation_id`."""
        ...

    def invalidate(self, token: str) -> None: ...


class AuthUnavailable(Exception):
    """No token could be had; `outcome` says whether trying later may help. Nothing was sent."""

    def __init__(self, message: str, outcome: Outcome) -> None:
        super().__init__(message)
        self.outcome = outcome


@dataclass(frozen=True)
class Failure:
    """A request that got no HTTP answer: whether it may have reached the server is in `outcome`."""

    outcome: Outcome
    message: str


@dataclass
class RequestSpec:
    """One request, fully described before it is sent (the plan view shows these)."""

    method: str
    url: str
    params: dict[str, str] | list[tuple[str, str]] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    json: Any = None
    form: dict[str, str] | None = None
    fhir: bool = True  # FHIR Accept/Prefer headers; False for vendor JSON APIs
    secret_fields: tuple[str, ...] = ()  # body keys whose values never reach a hash or a log
    secret_response: bool = False  # the answer itself is a secret (a token)
    authenticate: bool = True
    note: str = ""

    @property
    def full_url(self) -> str:
        if not self.params:
            return self.url
        sep = "&" if "?" in self.url else "?"
        return f"{self.url}{sep}{urlencode(self.params, safe='|/:,')}"

    def planned(
        self, *, correlation_id: str = "", standard_headers: Mapping[str, str] | None = None
    ) -> PlannedRequest:
        headers = dict(standard_headers or {})
        if correlation_id:
            headers["X-Correlation-ID"] = correlation_id
        headers.update(self.headers)
        if self.json is not None and "Content-Type" not in headers:
            headers["Content-Type"] = FHIR_JSON if self.fhir else "application/json"
        if self.form is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        body: Any = self.json if self.json is not None else self.form
        if body is not None:
            body = redact_json(body, self.secret_fields)
        return PlannedRequest(
            method=self.method,
            url=redact_url(self.full_url),
            headers=redact_headers(headers),
            body=body,
            note=self.note,
        )


@dataclass
class HttpReply:
    """The answer to one logical request (two exchanges when a 401 made us refresh the token once)."""

    method: str
    url: str
    exchanges: list[HttpExchange]
    status: int | None = None
    headers: httpx.Headers = field(default_factory=httpx.Headers)
    text: str = ""
    request_headers: dict[str, str] = field(default_factory=dict)
    failure: Failure | None = None
    _parsed: Any = field(default=None, repr=False, compare=False)
    _parsed_text: str | None = field(default=None, repr=False, compare=False)

    @property
    def exchange(self) -> HttpExchange:
        return self.exchanges[-1]

    @property
    def ok(self) -> bool:
        return self.failure is None and self.status is not None and 200 <= self.status < 300

    @property
    def body(self) -> Any:
        """The parsed JSON answer, or None."""
        if self._parsed_text is not self.text:
            self._parsed, self._parsed_text = _parse_json(self.text), self.text
        return self._parsed

    @property
    def resource(self) -> dict[str, Any] | None:
        body = self.body
        return body if isinstance(body, dict) and body.get("resourceType") else None


@dataclass
class Searchset:
    """The resources of a search, the replies that carried them, and whether every page was read."""

    resources: list[dict[str, Any]]
    replies: list[HttpReply]
    complete: bool


def _parse_json(text: str) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def _join(base: str, path: str) -> str:
    if path.startswith(("http://", "https://")):
        return path
    return f"{base.rstrip('/')}/{path.lstrip('/')}"


def _segment(value: str) -> str:
    if not value:
        raise ValueError("empty id in a FHIR URL")
    return quote(str(value), safe="")


class FhirClient:
    """Synchronous HTTP client for one target: a FHIR base URL plus any vendor API on the same host."""

    def __init__(
        self,
        base_url: str,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 20.0,
        auth: TokenSource | None = None,
        transport: httpx.BaseTransport | None = None,
        user_agent: str = "fhir-writeback",
        api_roots: Iterable[str] = (),
    ) -> None:
        """`api_roots`: configured vendor API roots (athenaOne v1, Unity) requests may also go to."""
        self.base_url = base_url.rstrip("/")
        self.auth = auth
        self.fhir_root = UrlRoot.of(self.base_url)
        self.roots = (self.fhir_root, *(UrlRoot.of(r) for r in api_roots if r))
        # Every exchange made, in order (adapters collect a call's exchanges from here), and how many
        # non-GET requests actually left: after an unexpected error, whether a write may have landed.
        self.journal: list[HttpExchange] = []
        self.unsafe_sent = 0
        # Requests not made because they pointed outside the tenant (adapters hand these to the domain).
        self.refusals: list[OutboundRefusal] = []
        self._http = httpx.Client(
            timeout=httpx.Timeout(
                connect=connect_timeout, read=read_timeout, write=read_timeout, pool=connect_timeout
            ),
            transport=transport,
            headers={"User-Agent": user_agent},
            follow_redirects=False,  # a redirect on a write is a configuration error, not something to follow
        )

    @property
    def http(self) -> httpx.Client:
        return self._http

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> FhirClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def url(self, path: str) -> str:
        return _join(self.base_url, path)

    # --- request descriptions (used by plan() and by the verbs below) -------------------------------

    def create_spec(self, resource: Mapping[str, Any], *, if_none_exist: str | None = None) -> RequestSpec:
        headers = {"If-None-Exist": if_none_exist} if if_none_exist else {}
        return RequestSpec("POST", self.url(resource["resourceType"]), headers=headers, json=dict(resource))

    def update_spec(self, resource: Mapping[str, Any], *, version: str | None) -> RequestSpec:
        url = self.url(f"{resource['resourceType']}/{_segment(resource['id'])}")
        headers = {"If-Match": f'W/"{version}"'} if version else {}
        return RequestSpec("PUT", url, headers=headers, json=dict(resource))

    def patch_spec(
        self, rtype: str, rid: str, ops: list[dict[str, Any]], *, version: str | None
    ) -> RequestSpec:
        headers = {"Content-Type": JSON_PATCH}
        if version:
            headers["If-Match"] = f'W/"{version}"'
        return RequestSpec("PATCH", self.url(f"{rtype}/{_segment(rid)}"), headers=headers, json=ops)

    def read_spec(self, rtype: str, rid: str) -> RequestSpec:
        return RequestSpec("GET", self.url(f"{rtype}/{_segment(rid)}"))

    def search_spec(self, rtype: str, params: Mapping[str, str] | list[tuple[str, str]]) -> RequestSpec:
        return RequestSpec(
            "GET", self.url(rtype), params=dict(params) if isinstance(params, Mapping) else params
        )

    # --- FHIR verbs ----------------------------------------------------------------------------------

    def create(
        self, resource: Mapping[str, Any], *, correlation_id: str = "", if_none_exist: str | None = None
    ) -> HttpReply:
        return self.send(
            self.create_spec(resource, if_none_exist=if_none_exist), correlation_id=correlation_id
        )

    def read(self, rtype: str, rid: str, *, correlation_id: str = "") -> HttpReply:
        return self.send(self.read_spec(rtype, rid), correlation_id=correlation_id)

    def vread(self, rtype: str, rid: str, version: str, *, correlation_id: str = "") -> HttpReply:
        spec = RequestSpec("GET", self.url(f"{rtype}/{_segment(rid)}/_history/{_segment(version)}"))
        return self.send(spec, correlation_id=correlation_id)

    def update(
        self, resource: Mapping[str, Any], *, version: str | None, correlation_id: str = ""
    ) -> HttpReply:
        return self.send(self.update_spec(resource, version=version), correlation_id=correlation_id)

    def patch(
        self,
        rtype: str,
        rid: str,
        ops: list[dict[str, Any]],
        *,
        version: str | None,
        correlation_id: str = "",
    ) -> HttpReply:
        return self.send(self.patch_spec(rtype, rid, ops, version=version), correlation_id=correlation_id)

    def search(
        self, rtype: str, params: Mapping[str, str] | list[tuple[str, str]], *, correlation_id: str = ""
    ) -> HttpReply:
        return self.send(self.search_spec(rtype, params), correlation_id=correlation_id)

    def search_by_identifier(
        self, rtype: str, system: str, value: str, *, correlation_id: str = ""
    ) -> HttpReply:
        return self.search(rtype, {"identifier": f"{system}|{value}"}, correlation_id=correlation_id)

    def history(self, rtype: str, rid: str, *, correlation_id: str = "") -> HttpReply:
        return self.send(
            RequestSpec("GET", self.url(f"{rtype}/{_segment(rid)}/_history")), correlation_id=correlation_id
        )

    def metadata(self, *, correlation_id: str = "") -> HttpReply:
        # /metadata is public on every vendor we know; asking without a token also keeps discovery
        # working before SMART is configured.
        return self.send(
            RequestSpec("GET", self.url("metadata"), authenticate=False), correlation_id=correlation_id
        )

    def search_all(
        self,
        rtype: str,
        params: Mapping[str, str] | list[tuple[str, str]],
        *,
        correlation_id: str = "",
        max_pages: int = 20,
    ) -> Searchset:
        """Resources of a searchset, following `next` links for at most `max_pages` pages. Stops at the
        first failed page (the last reply then says why); `complete` is False when pages were left."""
        replies = [self.search(rtype, params, correlation_id=correlation_id)]
        resources: list[dict[str, Any]] = []
        while True:
            reply = replies[-1]
            bundle = reply.body if reply.ok else None
            if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
                return Searchset(resources, replies, complete=False)
            for entry in bundle.get("entry") or []:
                res = entry.get("resource") if isinstance(entry, dict) else None
                if isinstance(res, dict) and res.get("resourceType") == rtype:
                    resources.append(res)
            nxt = next(
                (link.get("url") for link in bundle.get("link") or [] if link.get("relation") == "next"), None
            )
            if not nxt:
                return Searchset(resources, replies, complete=True)
            if len(replies) >= max_pages:
                return Searchset(resources, replies, complete=False)
            url = urljoin(self.base_url + "/", str(nxt))
            if not self._under(url, (self.fhir_root,)):
                # The EHR named the next page somewhere else: not asked (the token would go with it),
                # and the search is incomplete, so "not found" can never be concluded from it.
                replies.append(self.refuse("next-link", "GET", url, correlation_id, roots=(self.fhir_root,)))
                return Searchset(resources, replies, complete=False)
            replies.append(self.send(RequestSpec("GET", url), correlation_id=correlation_id))

    def search_page(
        self,
        rtype: str,
        params: Mapping[str, str] | None = None,
        *,
        url: str = "",
        correlation_id: str = "",
    ) -> tuple[HttpReply, list[dict[str, Any]], str]:
        """One page of a searchset: the first (`params`) or the one a `next` link names (`url`).
        Returns the reply, the page's resources of `rtype`, and the next link ("" on the last page). A
        next link outside the FHIR base is refused here, as in `search_all`."""
        if url:
            full = urljoin(self.base_url + "/", url)
            if not self._under(full, (self.fhir_root,)):
                reply = self.refuse("next-link", "GET", full, correlation_id, roots=(self.fhir_root,))
                return reply, [], ""
            reply = self.send(RequestSpec("GET", full), correlation_id=correlation_id)
        else:
            reply = self.search(rtype, dict(params or {}), correlation_id=correlation_id)
        bundle = reply.body if reply.ok else None
        if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
            return reply, [], ""
        resources = [
            e["resource"]
            for e in bundle.get("entry") or []
            if isinstance(e, dict)
            and isinstance(e.get("resource"), dict)
            and e["resource"].get("resourceType") == rtype
        ]
        links = [link for link in bundle.get("link") or [] if isinstance(link, dict)]
        nxt = next((link.get("url") for link in links if link.get("relation") == "next"), "")
        return reply, resources, str(nxt or "")

    # --- sending ---------------------------------------------------------------------------------------

    def standard_headers(self, spec: RequestSpec) -> dict[str, str]:
        if spec.fhir:
            return {"Accept": FHIR_JSON, "Prefer": "return=representation"}
        return {"Accept": "application/json"}

    def send(self, spec: RequestSpec, *, correlation_id: str = "") -> HttpReply:
        """Sends `spec`; on a 401 with a token, refreshes the token once and sends again (a 401 means the
        server refused the request before acting on it)."""
        if not self._under(spec.url, self.roots):
            return self.refuse("request", spec.method, spec.full_url, correlation_id, roots=self.roots)
        exchanges: list[HttpExchange] = []
        reply = HttpReply(method=spec.method, url=redact_url(spec.full_url), exchanges=exchanges)
        use_auth = self.auth is not None and spec.authenticate
        for attempt in (1, 2):
            token = ""
            if use_auth:
                try:
                    token = self.auth.token(self._http, correlation_id=correlation_id)  # type: ignore[union-attr]
                except AuthUnavailable as exc:
                    exchange = HttpExchange(method=spec.method, url=reply.url, request_id="", error=str(exc))
                    exchanges.append(exchange)
                    self.journal.append(exchange)
                    reply.failure = Failure(exc.outcome, f"no access token: {exc}")
                    return reply
            self._send_once(spec, correlation_id, token, reply)
            if reply.status == 401 and token and attempt == 1:
                logger.info("401 from %s: refreshing the access token once", reply.url)
                self.auth.invalidate(token)  # type: ignore[union-attr]
                continue
            break
        return reply

    def _send_once(self, spec: RequestSpec, correlation_id: str, token: str, reply: HttpReply) -> None:
        request_id = str(uuid.uuid4())
        headers = self.standard_headers(spec)
        headers["X-Request-ID"] = request_id
        if correlation_id:
            headers["X-Correlation-ID"] = correlation_id
        headers.update(spec.headers)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        exchange = HttpExchange(method=spec.method, url=reply.url, request_id=request_id)
        reply.exchanges.append(exchange)
        self.journal.append(exchange)
        try:
            content: bytes | None = None
            if spec.json is not None:
                headers.setdefault("Content-Type", FHIR_JSON if spec.fhir else "application/json")
                content = json.dumps(spec.json, ensure_ascii=False, separators=(",", ":")).encode()
            request = self._http.build_request(
                spec.method, spec.url, params=spec.params, headers=headers, content=content, data=spec.form
            )
        except (ValueError, TypeError, httpx.InvalidURL) as exc:
            exchange.error = f"request could not be built: {exc}"
            reply.failure = Failure(Outcome.TERMINAL, exchange.error)
            return
        exchange.request_headers = redact_headers(dict(request.headers))
        reply.request_headers = exchange.request_headers
        exchange.request_body_hash = self._body_hash(spec, request.content)
        if spec.method not in ("GET", "HEAD"):
            self.unsafe_sent += 1
        started = time.perf_counter()
        try:
            response = self._http.send(request)
        except httpx.HTTPError as exc:
            exchange.latency_ms = round((time.perf_counter() - started) * 1000, 2)
            outcome, message = classify_exception(exc)
            exchange.error = message
            reply.failure = Failure(outcome, message)
            reply.status, reply.text, reply.headers = None, "", httpx.Headers()
            logger.warning(
                "%s %s failed after %.0f ms: %s", spec.method, reply.url, exchange.latency_ms, message
            )
            return
        exchange.latency_ms = round((time.perf_counter() - started) * 1000, 2)
        exchange.status = response.status_code
        reply.failure = None
        reply.status, reply.headers = response.status_code, response.headers
        reply.text = response.text
        if response.is_redirect:
            self._note_redirect(spec, request.url, response, correlation_id)
        if spec.secret_response:
            exchange.response_body = REDACTED
        else:
            exchange.response_body = stored_body(reply.text, reply.body)
        logger.debug(
            "%s %s -> %s in %.0f ms", spec.method, reply.url, response.status_code, exchange.latency_ms
        )

    # --- where requests may go ----------------------------------------------------------------------

    @staticmethod
    def _under(url: str, roots: Iterable[UrlRoot]) -> bool:
        parsed = _parsed(url)
        if parsed is None or not parsed.is_absolute_url:
            # httpx refuses to build it (a terminal failure): it cannot reach any host.
            return True
        return any(root.admits(parsed) for root in roots)

    def refuse(
        self,
        source: str,
        method: str,
        url: str,
        correlation_id: str,
        *,
        roots: Iterable[UrlRoot],
        journal: bool = True,
    ) -> HttpReply:
        """Records a request that is not made (its URL lies outside `roots`) and answers it with a
        terminal failure: nothing was sent, no credential left. `journal`: also list it among the call's
        exchanges (a redirect's own 3xx exchange already is)."""
        shown = redact_url(url)[:MAX_REFUSED_URL]
        allowed = ", ".join(str(r) for r in roots)
        what = {"next-link": "a search next link", "redirect": "a redirect"}.get(source, "a request")
        reason = f"{what} to {shown} lies outside the tenant ({allowed}): not requested"
        self.refusals.append(
            OutboundRefusal(
                source=source, url=shown, reason=reason, method=method, correlation_id=correlation_id
            )
        )
        logger.warning("%s %s", method, reason)
        exchange = HttpExchange(method=method, url=shown, request_id="", error=f"refused: {reason}")
        if journal:
            self.journal.append(exchange)
        reply = HttpReply(method=method, url=shown, exchanges=[exchange])
        reply.failure = Failure(Outcome.TERMINAL, f"refused: {reason}")
        return reply

    def _note_redirect(
        self, spec: RequestSpec, sent_to: httpx.URL, response: httpx.Response, correlation_id: str
    ) -> None:
        """Redirects are never followed (the classifier says so); one that points outside the tenant
        is also a refusal, because following it would carry our credentials away."""
        location = response.headers.get("Location", "")
        try:
            target = str(sent_to.join(location)) if location else ""
        except (httpx.InvalidURL, TypeError, ValueError):
            return  # not a URL anyone could follow
        if target and not self._under(target, self.roots):
            self.refuse("redirect", spec.method, target, correlation_id, roots=self.roots, journal=False)

    @staticmethod
    def _body_hash(spec: RequestSpec, content: bytes) -> str:
        if not content:
            return ""
        if spec.secret_fields or spec.form is not None or spec.secret_response:
            # Hash a form with its secrets replaced: a hash of a short password is a guessing oracle.
            body = spec.json if spec.json is not None else spec.form
            safe = redact_json(body, spec.secret_fields)
            return _sha256(json.dumps(safe, sort_keys=True, separators=(",", ":")).encode())
        return _sha256(content)
