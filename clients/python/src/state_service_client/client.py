"""The synchronous client (grpcio)."""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import grpc

from . import errors
from ._base import Core, Counter, Duration, Entry, Op, PutItem, RetryPolicy


class StateClient:
    """A blocking client for ``stateservice.v1.StateService``.

    ``address`` is ``host:port`` (``https://host:port`` implies TLS). TLS is
    on when ``tls=True`` or any certificate is given: ``root_certificates``
    (the CA, PEM bytes; None: system roots), ``private_key`` +
    ``certificate_chain`` (a client certificate, mutual TLS). ``token`` sends
    ``authorization: Bearer …``; ``tenant`` sends ``x-tenant-id``. ``timeout``
    is each attempt's deadline in seconds.

    Every write gets a fresh request id (a UUID, reused by that write's
    retries) unless you pass ``request_id=`` or build the client with
    ``request_ids=False``. Calls that are safe to repeat are retried on
    UNAVAILABLE / DEADLINE_EXCEEDED / retryable RESOURCE_EXHAUSTED with
    jittered backoff for up to ``retry.max_elapsed`` seconds; BatchDelete is
    never retried. Thread-safe; use one client per process.
    """

    def __init__(self, address: str, **kwargs: Any) -> None:
        self._core = Core(address, **kwargs)
        c = self._core
        if c.credentials is not None:
            self._channel = grpc.secure_channel(c.target, c.credentials, options=c.options)
        else:
            self._channel = grpc.insecure_channel(c.target, options=c.options)
        self._stubs = c.stubs(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "StateClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _call(self, method: str, request: Any, safe: bool) -> Any:
        core = self._core
        stub = self._stubs[method]
        start = time.monotonic()
        attempt = 0
        while True:
            try:
                return stub(request, timeout=core.timeout, metadata=core.metadata)
            except grpc.RpcError as rpc_error:
                err = errors.from_rpc_error(rpc_error)
                cause = rpc_error
            if not (safe and err.transient):
                raise err from cause
            delay = err.retry_after if err.retry_after is not None else core.retry.backoff(attempt)
            if time.monotonic() - start + delay > core.retry.max_elapsed:
                raise err from cause
            time.sleep(delay)
            attempt += 1

    def get(self, key: str) -> Optional[Entry]:
        """The key's entry, or None if absent."""
        return Core.get_result(self._call("Get", *self._core.get(key)))

    def put(self, key: str, value: Any, *, if_absent: bool = False, if_exists: bool = False,
            if_version: Optional[int] = None, keep_ttl: bool = False,
            request_id: Optional[str] = None) -> int:
        """Stores a value (no expiry unless ``keep_ttl``); returns the new version."""
        req, safe = self._core.put(key, value, if_absent, if_exists, if_version, keep_ttl, request_id)
        return self._call("Put", req, safe).version

    def put_with_ttl(self, key: str, value: Any, ttl: Duration, *, if_absent: bool = False,
                     if_exists: bool = False, if_version: Optional[int] = None,
                     request_id: Optional[str] = None) -> int:
        """Stores a value that expires after ``ttl`` (seconds or timedelta, >= 1 ms)."""
        req, safe = self._core.put_with_ttl(key, value, ttl, if_absent, if_exists, if_version, request_id)
        return self._call("PutWithTtl", req, safe).version

    def delete(self, key: str, *, if_exists: bool = False, if_version: Optional[int] = None,
               request_id: Optional[str] = None) -> bool:
        """Deletes a key; True if it existed."""
        req, safe = self._core.delete(key, if_exists, if_version, request_id)
        return self._call("Delete", req, safe).deleted

    def increment(self, key: str, delta: int = 1, *, ttl: Optional[Duration] = None,
                  request_id: Optional[str] = None) -> Counter:
        """Adds ``delta`` to an int (absent: starts at 0, with ``ttl`` if given)."""
        req, safe = self._core.increment(key, delta, ttl, request_id)
        r = self._call("Increment", req, safe)
        return Counter(r.value, r.version)

    def expire(self, key: str, ttl: Duration) -> bool:
        """Sets the expiry of an existing key; False if absent."""
        return self._call("Expire", *self._core.expire(key, ttl)).existed

    def persist(self, key: str) -> bool:
        """Removes a key's expiry; False if absent."""
        return self._call("Persist", *self._core.persist(key)).existed

    def batch_get(self, keys: Iterable[str]) -> List[Optional[Entry]]:
        """Entries (None where absent) in request order, one consistent snapshot."""
        resp = self._call("BatchGet", *self._core.batch_get(keys))
        return [Core.get_result(r) for r in resp.results]

    def batch_put(self, items: Iterable[Union[PutItem, Tuple[str, Any]]]) -> List[Union[int, errors.StateError]]:
        """Writes many keys, NOT atomically: per item its new version, or the
        typed error of its failed condition (returned, not raised)."""
        (req, keys), safe = self._core.batch_put(items)
        return Core.batch_put_results(self._call("BatchPut", req, safe), keys)

    def batch_delete(self, keys: Iterable[str]) -> List[bool]:
        """Deletes many keys; per key whether it existed. Not retried."""
        return [r.deleted for r in self._call("BatchDelete", *self._core.batch_delete(keys)).results]

    def transact(self, ops: Sequence[Op], *, request_id: Optional[str] = None) -> List[Union[int, bool, Counter]]:
        """Applies all ops or none: per op a version (put), a bool (delete)
        or a Counter (increment). A failed check raises with ``op_index``."""
        return Core.transact_results(self._call("Transact", *self._core.transact(ops, request_id)))

    def update(self, key: str, fn: Callable[[Any], Any]) -> Tuple[Any, int]:
        """Read-modify-write with compare-and-set: ``fn(current)`` (None if
        absent) gives the new value, written only if the key still has the
        version read; on a lost race it re-reads and calls ``fn`` again, up to
        ``retry.update_attempts`` times with jittered backoff. Keeps the
        expiry. Returns (new value, version). ``fn`` may run several times:
        keep it a pure function of its input, absolute where possible."""
        attempts = max(1, self._core.retry.update_attempts)
        for attempt in range(attempts):
            current = self.get(key)
            new_value = fn(current.value if current is not None else None)
            req, safe = self._core.update_write(key, current, new_value)
            try:
                return new_value, self._call("Put", req, safe).version
            except (errors.VersionMismatch, errors.AlreadyExists):
                if attempt + 1 >= attempts:
                    raise
                time.sleep(self._core.retry.backoff(attempt))
        raise AssertionError("unreachable")

    def list(self, prefix: str = "", *, page_size: int = 0) -> Iterator[str]:
        """The tenant's keys starting with ``prefix``, paging transparently."""
        for page in self._pages(prefix, page_size, False):
            yield from page.keys

    def list_entries(self, prefix: str = "", *, page_size: int = 0) -> Iterator[Entry]:
        """Like ``list`` with each key's value, version and TTL."""
        for page in self._pages(prefix, page_size, True):
            for e in page.entries:
                yield Core.entry(e)

    def _pages(self, prefix: str, page_size: int, include_values: bool) -> Iterator[Any]:
        token = ""
        while True:
            page = self._call("List", *self._core.list(prefix, page_size, token, include_values))
            yield page
            token = page.next_page_token
            if not token:
                return


__all__ = ["StateClient", "RetryPolicy"]
