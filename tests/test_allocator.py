"""The serve factory fixes the C allocator's mmap threshold (:mod:`service.allocator`), so that
a large delivery's freed buffers leave the process; checked in fresh interpreters."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from service import allocator
from tests.support.server import run_probe

# Frees one large block first (with glibc's defaults this raises the threshold above the
# blocks that follow), then holds 64 MiB in 4 MiB blocks, each followed by a small block that
# pins the heap behind it, frees the large blocks and reports how much RSS went away.
_PROBE = """
import json, sys

def rss():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024

if sys.argv[1] == "serve":
    from service.app import app_from_env
    app_from_env()
first = bytearray(8 << 20)
del first
blocks, pins = [], []
for _ in range(16):
    blocks.append(bytearray(4 << 20))
    pins.append(bytearray(2000))
held = rss()
del blocks
print(json.dumps({"returned": held - rss()}))
"""


def _returned(tmp_path: Path, mode: str) -> int:
    found: int = json.loads(run_probe(_PROBE, tmp_path, mode))["returned"]
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_serving_process_gives_freed_large_blocks_back_where_the_default_allocator_keeps_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    assert _returned(tmp_path, "plain") < 16 << 20  # glibc's default: the heap keeps them
    assert _returned(tmp_path, "serve") > 56 << 20  # after the serve factory: unmapped


def test_an_operators_own_threshold_is_left_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert allocator.return_large_blocks() is False
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_")
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=65536")
    assert allocator.return_large_blocks() is False
