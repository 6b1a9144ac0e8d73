"""The server's limits on a request: its body's size (``BodyLimit``, the one place that reads a
body off the connection) and its batch's length (the message both request paths answer with)."""

from __future__ import annotations


#: Largest request target (path and query) and header block the server answers; beyond, 414 and 431.
MAX_TARGET_BYTES = 8 * 1024
MAX_HEADER_BYTES = 32 * 1024


def too_many_records(count: int, max_batch: int) -> str:
    return f"{count} records; at most {max_batch} per request (--max-batch)"


def too_large(max_bytes: int) -> dict:
    return {"detail": f"request body larger than {max_bytes} bytes (--max-body-bytes)"}


class BodyLimit:
    """413 for a request body over ``max_bytes``, declared or streamed, before anything parses it.

    The body is read whole here and handed on in one message (``replay``), so what is behind this
    middleware never reads past the limit. The rest of an oversized body is read and dropped (up to
    four times the limit) before the answer: a server that closes with unread data makes the kernel
    reset the connection, and the client sees "connection reset" instead of the 413.
    """

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"") > MAX_TARGET_BYTES:
            return await send_json(send, 414, {"detail": f"request target longer than {MAX_TARGET_BYTES} bytes"})
        if sum(len(k) + len(v) for k, v in scope["headers"]) > MAX_HEADER_BYTES:
            return await send_json(send, 431, {"detail": f"request headers larger than {MAX_HEADER_BYTES} bytes"})
        if scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        for k, v in scope["headers"]:
            if k == b"content-length":
                if not v.isdigit():
                    return await send_json(send, 400, {"detail": "invalid Content-Length"})
                if int(v) > self.max_bytes:
                    return await self._reject(receive, send, 0, int(v))
        chunks, size = [], 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return await self._reject(receive, send, size, None, more=msg.get("more_body", False))
            chunks.append(chunk)
            if not msg.get("more_body"):
                break
        return await self.app(scope, replay(chunks[0] if len(chunks) == 1 else b"".join(chunks), receive), send)

    async def _reject(self, receive, send, size: int, declared: int | None, more: bool = True) -> None:
        if declared is None or declared <= 4 * self.max_bytes:
            while more and size <= 4 * self.max_bytes:
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    return
                size += len(msg.get("body", b""))
                more = msg.get("more_body", False)
        await send_json(send, 413, too_large(self.max_bytes))


def replay(body: bytes, receive):
    """An ASGI ``receive`` that hands over ``body`` (already read, whole), then defers to ``receive``."""
    sent = False

    async def replayed():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


async def send_json(send, status: int, payload: dict) -> None:
    """An answer straight to the connection, which is then closed (the body may be unread)."""
    import orjson

    body = orjson.dumps(payload)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
