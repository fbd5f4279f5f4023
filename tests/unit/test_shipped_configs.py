#!/usr/bin/python3
"""`natgw --check` accepts every config shipped in config/, and the prefix-list converter's output (from a
sample in the real `aws ec2 get-managed-prefix-list-entries` format) plugs into the EC2 example."""

import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

SRC = os.environ.get("NATGW_SRC") or os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NATGW = os.environ.get("NATGW_BIN") or os.path.join(SRC, "build", "src", "natgw", "natgw")
CONVERTER = os.path.join(SRC, "scripts", "ip-ranges-to-prefix-list.py")
NO_XDP = "needs a natgw built with libbpf"

# `aws ec2 get-managed-prefix-list-entries --prefix-list-id pl-61a54008 --output json`, as the CLI prints it
# (entries of com.amazonaws.ap-northeast-1.s3; the CLI merges pages, so there is no NextToken).
MANAGED_CLI_OUTPUT = """{
    "Entries": [
        {
            "Cidr": "52.219.0.0/20"
        },
        {
            "Cidr": "3.5.152.0/21"
        },
        {
            "Cidr": "52.219.136.0/22"
        },
        {
            "Cidr": "52.219.16.0/22"
        },
        {
            "Cidr": "52.219.68.0/22"
        }
    ]
}
"""


def check(path):
    return subprocess.run([NATGW, "--check", path], capture_output=True, text=True, timeout=60)


class ShippedConfigs(unittest.TestCase):
    def setUp(self):
        if not os.access(NATGW, os.X_OK):
            self.skipTest(f"natgw not built ({NATGW}); meson test sets NATGW_BIN")
        self.tmp = tempfile.TemporaryDirectory(prefix="natgw-configs-")
        self.addCleanup(self.tmp.cleanup)

    def test_every_shipped_config_passes_check(self):
        # ha.example.toml is the failover agent's (scripts/natgw-ha.py), checked by test_natgw_ha.py.
        configs = sorted(c for c in glob.glob(os.path.join(SRC, "config", "*.toml"))
                         if os.path.basename(c) != "ha.example.toml")
        names = [os.path.basename(c) for c in configs]
        for expected in ("lab.toml", "lab-forward.toml", "ec2.toml", "ec2-af-xdp.toml"):
            self.assertIn(expected, names)
        for c in configs:
            with self.subTest(config=os.path.basename(c)):
                r = check(c)
                if r.returncode != 0 and NO_XDP in r.stderr:
                    print(f"note: {os.path.basename(c)}: this natgw has no XDP support: {r.stderr.strip()}")
                    continue
                self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
                self.assertRegex(r.stdout, r": OK: \d+ interfaces, \d+ routes")
                self.assertEqual(r.stderr, "")

    def test_check_fails_with_file_and_line_when_the_prefix_list_is_missing(self):
        # The same EC2 example copied alone: its prefix list is not next to it any more.
        cfg = os.path.join(self.tmp.name, "ec2.toml")
        shutil.copy(os.path.join(SRC, "config", "ec2.toml"), cfg)
        r = check(cfg)
        self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
        with open(cfg, encoding="utf-8") as f:
            line = next(i for i, l in enumerate(f, 1) if l.startswith("prefix_list"))
        self.assertRegex(r.stderr, rf"{re.escape(cfg)}:{line}: .*s3-prefixes.example.txt")

    def test_converted_managed_prefix_list_routes_in_the_ec2_example(self):
        pl_json = os.path.join(self.tmp.name, "pl.json")
        with open(pl_json, "w", encoding="utf-8") as f:
            f.write(MANAGED_CLI_OUTPUT)
        out = os.path.join(self.tmp.name, "s3-prefixes.txt")
        r = subprocess.run([sys.executable, CONVERTER, pl_json, "-o", out], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(out, encoding="utf-8") as f:
            body = [l.strip() for l in f if l.strip() and not l.startswith("#")]
        # Sorted by address, each once, IPv4 only.
        self.assertEqual(body, ["3.5.152.0/21", "52.219.0.0/20", "52.219.16.0/22", "52.219.68.0/22",
                                "52.219.136.0/22"])
        self.assertEqual(len(json.loads(MANAGED_CLI_OUTPUT)["Entries"]), len(body))
        with open(os.path.join(SRC, "config", "ec2.toml"), encoding="utf-8") as f:
            text = f.read()
        text, n = re.subn(r'^prefix_list = "[^"]*"', 'prefix_list = "s3-prefixes.txt"', text, flags=re.M)
        self.assertEqual(n, 1)
        cfg = os.path.join(self.tmp.name, "natgw.toml")
        with open(cfg, "w", encoding="utf-8") as f:
            f.write(text)
        r = check(cfg)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("2 routes (6 prefixes)", r.stdout)  # 0.0.0.0/0 + the 5 converted S3 prefixes


if __name__ == "__main__":
    unittest.main(verbosity=2)
