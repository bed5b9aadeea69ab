"""The asyncio client (grpc.aio); same surface as StateClient, awaitable."""

from __future__ import annotations

import asyncio
import inspect
import time
from typing import Any, AsyncIterator, Callable, Iterable, List, Optional, Sequence, Tuple, Union

import grpc
import grpc.aio

from . import errors
from ._base import Core, Counter, Duration, Entry, Op, PutItem


class AsyncStateClient:
    """The asyncio twin of :class:`~state_service_client.StateClient` (same
    arguments, same retries and request ids). Create it inside a running
    event loop; ``update``'s function may be sync or async."""

    def __init__(self, address: str, **kwargs: Any) -> None:
        self._core = Core(address, **kwargs)
        c = self._core
        if c.credentials is not None:
            self._channel = grpc.aio.secure_channel(c.target, c.credentials, options=c.options)
        else:
            self._channel = grpc.aio.insecure_channel(c.target, options=c.options)
        self._stubs = c.stubs(self._channel)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> "AsyncStateClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def _call(self, method: str, request: Any, safe: bool) -> Any:
        core = self._core
        stub = self._stubs[method]
        start = time.monotonic()
        attempt = 0
        while True:
            try:
                return await stub(request, timeout=core.timeout, metadata=core.metadata)
            except grpc.RpcError as rpc_error:
                err = errors.from_rpc_error(rpc_error)
                cause = rpc_error
            if not (safe and err.transient):
                raise err from cause
            delay = err.retry_after if err.retry_after is not None else core.retry.backoff(attempt)
            if time.monotonic() - start + delay > core.retry.max_elapsed:
                raise err from cause
            await asyncio.sleep(delay)
            attempt += 1

    async def get(self, key: str) -> Optional[Entry]:
        return Core.get_result(await self._call("Get", *self._core.get(key)))

    async def put(self, key: str, value: Any, *, if_absent: bool = False, if_exists: bool = False,
                  if_version: Optional[int] = None, keep_ttl: bool = False,
                  request_id: Optional[str] = None) -> int:
        req, safe = self._core.put(key, value, if_absent, if_exists, if_version, keep_ttl, request_id)
        return (await self._call("Put", req, safe)).version

    async def put_with_ttl(self, key: str, value: Any, ttl: Duration, *, if_absent: bool = False,
                           if_exists: bool = False, if_version: Optional[int] = None,
                           request_id: Optional[str] = None) -> int:
        req, safe = self._core.put_with_ttl(key, value, ttl, if_absent, if_exists, if_version, request_id)
        return (await self._call("PutWithTtl", req, safe)).version

    async def delete(self, key: str, *, if_exists: bool = False, if_version: Optional[int] = None,
                     request_id: Optional[str] = None) -> bool:
        req, safe = self._core.delete(key, if_exists, if_version, request_id)
        return (await self._call("Delete", req, safe)).deleted

    async def increment(self, key: str, delta: int = 1, *, ttl: Optional[Duration] = None,
                        request_id: Optional[str] = None) -> Counter:
        req, safe = self._core.increment(key, delta, ttl, request_id)
        r = await self._call("Increment", req, safe)
        return Counter(r.value, r.version)

    async def expire(self, key: str, ttl: Duration) -> bool:
        return (await self._call("Expire", *self._core.expire(key, ttl))).existed

    async def persist(self, key: str) -> bool:
        return (await self._call("Persist", *self._core.persist(key))).existed

    async def batch_get(self, keys: Iterable[str]) -> List[Optional[Entry]]:
        resp = await self._call("BatchGet", *self._core.batch_get(keys))
        return [Core.get_result(r) for r in resp.results]

    async def batch_put(self, items: Iterable[Union[PutItem, Tuple[str, Any]]]) -> List[Union[int, errors.StateError]]:
        (req, keys), safe = self._core.batch_put(items)
        return Core.batch_put_results(await self._call("BatchPut", req, safe), keys)

    async def batch_delete(self, keys: Iterable[str]) -> List[bool]:
        return [r.deleted for r in (await self._call("BatchDelete", *self._core.batch_delete(keys))).results]

    async def transact(self, ops: Sequence[Op], *, request_id: Optional[str] = None) -> List[Union[int, bool, Counter]]:
        return Core.transact_results(await self._call("Transact", *self._core.transact(ops, request_id)))

    async def update(self, key: str, fn: Callable[[Any], Any]) -> Tuple[Any, int]:
        """See :meth:`StateClient.update`; ``fn`` may return an awaitable."""
        attempts = max(1, self._core.retry.update_attempts)
        for attempt in range(attempts):
            current = await self.get(key)
            new_value = fn(current.value if current is not None else None)
            if inspect.isawaitable(new_value):
                new_value = await new_value
            req, safe = self._core.update_write(key, current, new_value)
            try:
                return new_value, (await self._call("Put", req, safe)).version
            except (errors.VersionMismatch, errors.AlreadyExists):
                if attempt + 1 >= attempts:
                    raise
                await asyncio.sleep(self._core.retry.backoff(attempt))
        raise AssertionError("unreachable")

    async def list(self, prefix: str = "", *, page_size: int = 0) -> AsyncIterator[str]:
        async for page in self._pages(prefix, page_size, False):
            for k in page.keys:
                yield k

    async def list_entries(self, prefix: str = "", *, page_size: int = 0) -> AsyncIterator[Entry]:
        async for page in self._pages(prefix, page_size, True):
            for e in page.entries:
                yield Core.entry(e)

    async def _pages(self, prefix: str, page_size: int, include_values: bool) -> AsyncIterator[Any]:
        token = ""
        while True:
            page = await self._call("List", *self._core.list(prefix, page_size, token, include_values))
            yield page
            token = page.next_page_token
            if not token:
                return
