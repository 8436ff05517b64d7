"""The HTTP/1.1 protocol `genderd serve` runs: uvicorn's httptools protocol with bounds on the
request head, which uvicorn does not set for httptools (one request with 200 MiB of headers
was answered 200 and grew the API by 200 MiB; four unfinished ones held 670 MiB).

A request whose head (request line and headers) grows past :data:`MAX_HEAD_BYTES`, or that
has more than :data:`MAX_HEADERS` headers, is answered 431 and its connection closed, before
the rest of it is read: what one connection can make the process hold is bounded by the
limit and one read. The app itself (:func:`genderd.api.create_app`) runs under any ASGI
server; under another one, bound the head there (or in the reverse proxy).
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEAD_BYTES = 64 * 1024  # cookies and tokens fit; nginx's default buffers hold 32 KiB
MAX_HEADERS = 100  # as gunicorn's limit_request_fields
REFUSAL = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: application/json\r\n"
    b"connection: close\r\n"
)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing request heads over the limits with 431."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0  # bytes received since the message began, until its head ends
        self._in_head = True
        self._headers = 0
        self._refused = False

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._in_head:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._refuse(f"the request head may be at most {MAX_HEAD_BYTES} bytes")
                return
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._head_bytes, self._headers = True, 0, 0

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers += 1
        if self._headers > MAX_HEADERS:
            self._refuse(f"a request may have at most {MAX_HEADERS} headers")
            # stops the parser; uvicorn's 400 for it is not sent (send_400_response below)
            raise ValueError("too many headers")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        if not self._refused:  # the 431 went out already
            super().send_400_response(msg)

    def _refuse(self, detail: str) -> None:
        self._refused = True
        body = b'{"detail":"' + detail.encode("ascii") + b'"}'
        length = b"content-length: " + str(len(body)).encode("ascii") + b"\r\n\r\n"
        self.transport.write(REFUSAL + length + body)
        self.transport.close()
