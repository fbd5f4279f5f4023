#!/usr/bin/python3
"""natgwctl's exit status against a fake natgw on a Unix socket (a thread that answers one canned reply per
connection): `health` exits 0 healthy, 1 unhealthy (the verdict on stdout), 3 when there is no verdict (no
answer, a natgw that does not know the command, no socket); any command with no answer exits 3, a refused
one 1. NATGWCTL_BIN names the binary."""

import os
import socket
import subprocess
import tempfile
import threading
import unittest
from pathlib import Path

SRC = Path(os.environ.get("NATGW_SRC") or Path(__file__).resolve().parents[2])
NATGWCTL = os.environ.get("NATGWCTL_BIN") or str(SRC / "build" / "src" / "natgwctl" / "natgwctl")


class FakeNatgw:
    """Accepts connections on `path`; to each, after its request line, sends `reply` (bytes) and closes."""

    def __init__(self, path: str, reply: bytes):
        self.reply, self.requests = reply, []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(8)
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while not data.endswith(b"\n"):
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                self.requests.append(data)
                conn.sendall(self.reply)

    def close(self):
        self.sock.close()


@unittest.skipUnless(os.access(NATGWCTL, os.X_OK), f"no natgwctl at {NATGWCTL}")
class NatgwctlExitStatus(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory(prefix="natgwctl-test-")
        self.addCleanup(tmp.cleanup)
        self.path = os.path.join(tmp.name, "natgw.sock")

    def ctl(self, reply: bytes | None, *args: str) -> subprocess.CompletedProcess:
        if reply is not None:
            fake = FakeNatgw(self.path, reply)
            self.addCleanup(fake.close)
        return subprocess.run([NATGWCTL, "--socket", self.path, *args], capture_output=True, text=True, timeout=30)

    def test_health_healthy(self):
        r = self.ctl(b"OK\nok\n", "health")
        self.assertEqual((r.returncode, r.stdout, r.stderr), (0, "ok\n", ""))

    def test_health_unhealthy_is_1_with_the_reasons_on_stdout(self):
        r = self.ctl(b"ERR unhealthy\nworker 0 (lcore 1) made no progress for 1.0 s\ninside: link down\n", "health")
        self.assertEqual((r.returncode, r.stderr), (1, ""))
        self.assertEqual(r.stdout, "unhealthy\nworker 0 (lcore 1) made no progress for 1.0 s\ninside: link down\n")

    def test_health_without_a_verdict_is_3(self):
        for reply, why in ((b"ERR unknown command 'health' (try help)\n", "unknown command"),
                           (b"", "gave no answer"), (b"HTTP/1.0 400 Bad Request\r\n\r\n", "gave no answer")):
            with self.subTest(reply=reply):
                if os.path.exists(self.path):
                    os.unlink(self.path)
                r = self.ctl(reply, "health")
                self.assertEqual((r.returncode, r.stdout), (3, ""), r.stderr)
                self.assertIn(why, r.stderr)
        os.unlink(self.path)
        r = self.ctl(None, "health")
        self.assertEqual((r.returncode, r.stdout), (3, ""), r.stderr)
        self.assertIn("no natgw is running at", r.stderr)

    def test_other_commands_no_answer_is_3_refused_is_1(self):
        r = self.ctl(b"", "stats")
        self.assertEqual((r.returncode, r.stdout), (3, ""), r.stderr)
        self.assertIn("gave no answer", r.stderr)
        os.unlink(self.path)
        r = self.ctl(b"ERR unknown command 'frobnicate'\n", "frobnicate")
        self.assertEqual((r.returncode, r.stdout), (1, ""))
        self.assertIn("natgwctl: unknown command 'frobnicate'", r.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
