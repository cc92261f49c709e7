"""The figure pipe's reader (figures.py): whatever the sandbox writes, it keeps only bounded,
PNG-looking images and counts the rest."""

from __future__ import annotations

import base64
import struct

import pytest

from athenic.orchestrator.sandbox.figures import PNG_SIGNATURE, FigureCollector

pytestmark = pytest.mark.unit


def fake_png(width: int, height: int, body: int = 100) -> bytes:
    ihdr = struct.pack(">I", 13) + b"IHDR" + struct.pack(">II", width, height) + b"\x08\x06\x00\x00\x00"
    return PNG_SIGNATURE + ihdr + b"\x00" * body


def frame(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def test_frames_split_at_every_byte_are_read_whole() -> None:
    stream = frame(fake_png(640, 480)) + frame(fake_png(10, 20))
    collector = FigureCollector(max_images=4, max_bytes=1 << 20)
    for i in range(len(stream)):
        collector.feed(stream[i:i + 1])
    collector.finish()
    assert [r["text"] for r in collector.results()] == ["<Figure 640x480 px>", "<Figure 10x20 px>"]
    assert base64.b64decode(collector.results()[0]["png"]) == fake_png(640, 480)
    assert collector.dropped == 0


def test_limits_of_count_and_bytes_drop_and_count() -> None:
    collector = FigureCollector(max_images=2, max_bytes=500)
    collector.feed(b"".join(frame(fake_png(1, 1, body=100)) for _ in range(3)))  # the third: over the count
    collector.feed(frame(fake_png(1, 1, body=1000)))  # over the bytes
    collector.finish()
    assert len(collector.images) == 2
    assert collector.dropped == 2


def test_an_oversized_image_does_not_block_a_smaller_one_after_it() -> None:
    collector = FigureCollector(max_images=4, max_bytes=500)
    collector.feed(frame(fake_png(1, 1, body=1000)) + frame(fake_png(2, 2)))
    collector.finish()
    assert [r["text"] for r in collector.results()] == ["<Figure 2x2 px>"]
    assert collector.dropped == 1


def test_garbage_empty_and_cut_frames_are_dropped() -> None:
    collector = FigureCollector(max_images=4, max_bytes=1 << 20)
    collector.feed(frame(b"GIF89a not a png at all") + struct.pack(">I", 0) + frame(PNG_SIGNATURE))
    collector.feed(frame(fake_png(3, 3))[:-5])  # the writer died mid-image
    collector.finish()
    assert collector.images == []
    assert collector.dropped == 4


def test_a_huge_declared_length_is_skipped_without_being_held() -> None:
    collector = FigureCollector(max_images=4, max_bytes=1000)
    collector.feed(struct.pack(">I", 0xFFFFFFFF))
    for _ in range(64):
        collector.feed(b"\xff" * 65536)
    collector.finish()
    assert collector.images == []
    assert collector.dropped == 1
