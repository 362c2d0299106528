"""The allocator settings of the session's and the viewer's processes."""

from __future__ import annotations

import subprocess
import sys

_PROBE = """
import ctypes, ctypes.util, os, re, sys, tempfile, threading
from monitor_core import tune_allocator
if sys.argv[1] == "tuned":
    assert tune_allocator()
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.fopen.restype = ctypes.c_void_p
libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
libc.fclose.argtypes = [ctypes.c_void_p]
ready = threading.Barrier(7)
def work():
    kept = [bytes(1000 + i) for i in range(100)]  # from the C allocator, in this thread's arena
    ready.wait()
    ready.wait()
threads = [threading.Thread(target=work) for _ in range(6)]
for thread in threads:
    thread.start()
ready.wait()
path = os.path.join(tempfile.mkdtemp(), "info.xml")
stream = libc.fopen(path.encode(), b"w")
libc.malloc_info(0, stream)
libc.fclose(stream)
ready.wait()
print(len(re.findall("<heap nr=", open(path).read())))
"""


def _arenas(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, timeout=60, check=True)
    return int(done.stdout)


def test_worker_threads_share_two_allocator_arenas_instead_of_keeping_one_each() -> None:
    assert _arenas("default") > 2  # what an untuned process does, or the check below proves nothing
    assert _arenas("tuned") <= 2
