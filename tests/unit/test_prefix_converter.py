#!/usr/bin/python3
"""Tests of scripts/ip-ranges-to-prefix-list.py on small JSON documents it writes itself,
plus one run on the real ip-ranges.json when ../shared/data holds a copy."""

import json
import os
import subprocess
import sys
import tempfile
import unittest

SRC = os.environ.get("NATGW_SRC") or os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(SRC, "scripts", "ip-ranges-to-prefix-list.py")
REAL_IP_RANGES = os.path.normpath(os.path.join(SRC, "..", "shared", "data", "aws-ip-ranges.json"))
EPOCH = "1767225600"  # 2026-01-01 UTC: fixes the header's date
TAIL = ("# For S3 gateway endpoints the VPC routes by the managed prefix list (pl-xxxx): it is\n"
        "# authoritative; ip-ranges.json is a public superset.\n")

IP_RANGES = {
    "syncToken": "1700000000",
    "createDate": "2026-01-01-00-00-00",
    "prefixes": [
        {"ip_prefix": "52.219.16.0/22", "region": "ap-northeast-1", "service": "S3",
         "network_border_group": "ap-northeast-1"},
        {"ip_prefix": "3.5.152.0/21", "region": "ap-northeast-1", "service": "S3",
         "network_border_group": "ap-northeast-1"},
        {"ip_prefix": "52.219.0.0/20", "region": "ap-northeast-1", "service": "S3",
         "network_border_group": "ap-northeast-1"},
        # The same prefix twice: the output lists it once.
        {"ip_prefix": "3.5.152.0/21", "region": "ap-northeast-1", "service": "S3",
         "network_border_group": "ap-northeast-1"},
        {"ip_prefix": "52.219.20.0/24", "region": "ap-northeast-1", "service": "S3",
         "network_border_group": "ap-northeast-1"},
        {"ip_prefix": "52.219.21.0/24", "region": "ap-northeast-1", "service": "S3",
         "network_border_group": "ap-northeast-1"},
        {"ip_prefix": "52.219.16.0/24", "region": "ap-northeast-1", "service": "S3",
         "network_border_group": "ap-northeast-1"},
        {"ip_prefix": "3.4.12.4/32", "region": "ap-northeast-1", "service": "AMAZON",
         "network_border_group": "ap-northeast-1"},
        {"ip_prefix": "52.95.128.0/21", "region": "us-east-1", "service": "S3",
         "network_border_group": "us-east-1"},
    ],
    "ipv6_prefixes": [
        {"ipv6_prefix": "2406:da14::/36", "region": "ap-northeast-1", "service": "S3",
         "network_border_group": "ap-northeast-1"},
    ],
}

MANAGED = {
    "Entries": [
        {"Cidr": "52.219.136.0/22"},
        {"Cidr": "3.5.152.0/21", "Description": "s3"},
        {"Cidr": "2406:da14::/36"},
        {"Cidr": "52.219.136.0/22"},
    ]
}


class ConverterTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="natgw-converter-")
        self.addCleanup(self.tmp.cleanup)

    def write(self, name, content):
        path = os.path.join(self.tmp.name, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(content if isinstance(content, str) else json.dumps(content))
        return path

    def run_script(self, *args):
        env = dict(os.environ, SOURCE_DATE_EPOCH=EPOCH)
        return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, env=env)

    def assert_fails(self, result, phrase):
        self.assertEqual(result.returncode, 2, result.stderr)
        self.assertEqual(result.stdout, "")
        self.assertIn(phrase, result.stderr)

    def test_ip_ranges_region_filter_sorted_and_deduplicated(self):
        src = self.write("ip-ranges.json", IP_RANGES)
        r = self.run_script(src, "--region", "ap-northeast-1")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, (
            "# natgw prefix list: S3 IPv4 prefixes from AWS ip-ranges.json\n"
            "# source: ip-ranges.json (createDate 2026-01-01-00-00-00, syncToken 1700000000)\n"
            "# filter: service=S3 region=ap-northeast-1\n"
            "# count: 6 prefixes\n"
            "# generated: 2026-01-01 with: scripts/ip-ranges-to-prefix-list.py ip-ranges.json"
            " --region ap-northeast-1\n"
            + TAIL +
            "3.5.152.0/21\n"
            "52.219.0.0/20\n"
            "52.219.16.0/22\n"
            "52.219.16.0/24\n"
            "52.219.20.0/24\n"
            "52.219.21.0/24\n"))

    def test_aggregate_merges_adjacent_and_contained(self):
        src = self.write("ip-ranges.json", IP_RANGES)
        r = self.run_script(src, "--region", "ap-northeast-1", "--aggregate")
        self.assertEqual(r.returncode, 0, r.stderr)
        body = [l for l in r.stdout.splitlines() if not l.startswith("#")]
        # 52.219.16.0/24 sits inside /22; 20.0/24 + 21.0/24 make 20.0/23.
        self.assertEqual(body, ["3.5.152.0/21", "52.219.0.0/20", "52.219.16.0/22", "52.219.20.0/23"])
        self.assertIn("# count: 4 prefixes (aggregated from 6)\n", r.stdout)

    def test_all_regions_and_other_service(self):
        src = self.write("ip-ranges.json", IP_RANGES)
        r = self.run_script(src, "--all-regions")
        self.assertEqual(r.returncode, 0, r.stderr)
        body = [l for l in r.stdout.splitlines() if not l.startswith("#")]
        self.assertEqual(body, ["3.5.152.0/21", "52.95.128.0/21", "52.219.0.0/20", "52.219.16.0/22",
                                "52.219.16.0/24", "52.219.20.0/24", "52.219.21.0/24"])
        self.assertIn("# filter: service=S3 all regions\n", r.stdout)
        r = self.run_script(src, "--service", "amazon", "--region", "ap-northeast-1")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual([l for l in r.stdout.splitlines() if not l.startswith("#")], ["3.4.12.4/32"])

    def test_managed_prefix_list_entries(self):
        src = self.write("pl.json", MANAGED)
        out = os.path.join(self.tmp.name, "s3.txt")
        r = self.run_script(src, "-o", out)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, "")
        with open(out, encoding="utf-8") as f:
            self.assertEqual(f.read(), (
                "# natgw prefix list: IPv4 entries of an AWS managed prefix list\n"
                "# source: pl.json (aws ec2 get-managed-prefix-list-entries)\n"
                "# filter: none (every IPv4 entry)\n"
                "# count: 2 prefixes\n"
                "# generated: 2026-01-01 with: scripts/ip-ranges-to-prefix-list.py pl.json\n"
                + TAIL +
                "3.5.152.0/21\n"
                "52.219.136.0/22\n"))

    def test_output_file_is_replaced_whole(self):
        src = self.write("pl.json", MANAGED)
        out = self.write("s3.txt", "old content that must go\n" * 100)
        r = self.run_script(src, "--output", out)
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(out, encoding="utf-8") as f:
            self.assertNotIn("old content", f.read())
        self.assertEqual(sorted(os.listdir(self.tmp.name)), ["pl.json", "s3.txt"])  # no temp file left

    def test_errors(self):
        self.assert_fails(self.run_script(os.path.join(self.tmp.name, "missing.json"), "--region", "x"),
                          "cannot read")
        self.assert_fails(self.run_script(self.write("bad.json", '{"prefixes": [\n  {"ip_prefix": }\n]}'),
                                          "--region", "x"),
                          "not valid JSON: Expecting value at line 2")
        self.assert_fails(self.run_script(self.write("other.json", {"items": []}), "--region", "x"),
                          "unknown format")
        self.assert_fails(self.run_script(self.write("list.json", [1, 2]), "--region", "x"), "unknown format")
        src = self.write("ip-ranges.json", IP_RANGES)
        self.assert_fails(self.run_script(src), "needs --region")
        self.assert_fails(self.run_script(src, "--region", "ap-northeast-1", "--all-regions"), "not both")
        self.assert_fails(self.run_script(src, "--region", "eu-west-9"),
                          "no S3 IPv4 prefixes in region 'eu-west-9'; regions with S3: ap-northeast-1, us-east-1")
        self.assert_fails(self.run_script(src, "--service", "NOPE", "--all-regions"), "no prefixes for service")
        self.assert_fails(self.run_script(self.write("v6.json", {"Entries": [{"Cidr": "2406:da14::/36"}]})),
                          "no IPv4 entries")
        self.assert_fails(self.run_script(self.write("pl.json", MANAGED), "--region", "ap-northeast-1"),
                          "apply to ip-ranges.json only")
        self.assert_fails(self.run_script(self.write("host.json", {"Entries": [{"Cidr": "10.0.0.1/8"}]})),
                          "Entries[0]: bad prefix '10.0.0.1/8'")

    def test_real_ip_ranges_json(self):
        if not os.path.exists(REAL_IP_RANGES):
            self.skipTest(f"{REAL_IP_RANGES} is absent: the real-data check needs AWS's ip-ranges.json there")
        r = self.run_script(REAL_IP_RANGES, "--region", "ap-northeast-1")
        self.assertEqual(r.returncode, 0, r.stderr)
        body = [l for l in r.stdout.splitlines() if not l.startswith("#")]
        self.assertEqual(len(body), 22)
        self.assertIn("# count: 22 prefixes\n", r.stdout)
        self.assertEqual(len(set(body)), 22)
        self.assertIn("52.219.0.0/20", body)


if __name__ == "__main__":
    unittest.main(verbosity=2)
