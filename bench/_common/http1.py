"""The benches' HTTP/1.1 response framing: their load clients read responses straight from
asyncio protocol callbacks (a stream reader per connection costs the client CPU that, on a
2-core machine, is taken from the server it measures)."""

from __future__ import annotations


def split_response(buffer: bytes | bytearray) -> tuple[int, bytes, int] | None:
    """The first whole response in `buffer` (one with a Content-Length, or none and no body):
    its status, its body and how many bytes of `buffer` it took. None while it is still
    coming."""
    end = buffer.find(b"\r\n\r\n")
    if end == -1:
        return None
    head = bytes(buffer[:end])
    length = 0
    at = head.lower().find(b"\r\ncontent-length:")
    if at != -1:
        stop = head.find(b"\r\n", at + 2)
        length = int(head[at + 17 : stop if stop != -1 else len(head)])
    used = end + 4 + length
    if len(buffer) < used:
        return None  # body still coming
    return int(head[9:12]), bytes(buffer[end + 4 : used]), used
