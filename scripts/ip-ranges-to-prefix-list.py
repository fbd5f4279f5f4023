#!/usr/bin/python3
"""Convert AWS prefix data into a natgw prefix-list file (one IPv4 CIDR per line).

Two inputs are accepted and told apart automatically:

  * AWS's public ip-ranges.json (https://ip-ranges.amazonaws.com/ip-ranges.json):
    {"prefixes": [{"ip_prefix", "region", "service", "network_border_group"}, ...]}
    filtered by --service (default S3) and --region (or --all-regions).
  * The output of `aws ec2 get-managed-prefix-list-entries --prefix-list-id pl-xxxx`:
    {"Entries": [{"Cidr": "...", "Description": ...}, ...]}

For an S3 gateway endpoint the managed prefix list (pl-xxxx) is authoritative: it is
what the VPC route table routes by. ip-ranges.json is a public superset that may also
hold ranges the endpoint does not serve. Prefer the managed list where the AWS CLI is
available.

IPv6 prefixes are ignored (natgw is IPv4 only). The output is sorted and deduplicated;
--aggregate also merges adjacent and contained prefixes.

Examples:
  ip-ranges-to-prefix-list.py ip-ranges.json --region ap-northeast-1 -o s3-prefixes.txt
  aws ec2 get-managed-prefix-list-entries --prefix-list-id pl-61a54008 > pl.json
  ip-ranges-to-prefix-list.py pl.json -o s3-prefixes.txt

Exit status: 0 on success, 2 on any error (unreadable or bad JSON, unknown format,
bad prefix, nothing matched). SOURCE_DATE_EPOCH, when set, fixes the date in the header.
"""

import argparse
import datetime
import ipaddress
import json
import os
import sys
import tempfile

PROG = "ip-ranges-to-prefix-list"


class ConvertError(Exception):
    """A problem with the input that the user has to fix."""


def load_json(path):
    try:
        if path == "-":
            return json.load(sys.stdin)
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except OSError as e:
        raise ConvertError(f"cannot read {path}: {e.strerror}") from e
    except json.JSONDecodeError as e:
        raise ConvertError(f"{path}: not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from e
    except UnicodeDecodeError as e:
        raise ConvertError(f"{path}: not valid JSON: not UTF-8 text") from e


def detect_format(doc):
    """'ip-ranges', 'managed-prefix-list', or None."""
    if isinstance(doc, dict):
        if isinstance(doc.get("prefixes"), list):
            return "ip-ranges"
        if isinstance(doc.get("Entries"), list):
            return "managed-prefix-list"
    return None


def ipv4_network(text, where):
    """An IPv4 network from text, None for IPv6; host bits set is an error."""
    try:
        net = ipaddress.ip_network(text, strict=True)
    except (ValueError, TypeError) as e:
        raise ConvertError(f"{where}: bad prefix {text!r}: {e}") from e
    return net if net.version == 4 else None


def from_ip_ranges(doc, service, region, all_regions):
    """IPv4 networks of `service` in `region` (any region with all_regions)."""
    nets = []
    regions_with_service = set()
    for i, p in enumerate(doc["prefixes"]):
        if not isinstance(p, dict) or "ip_prefix" not in p:
            raise ConvertError(f"prefixes[{i}]: expected an object with ip_prefix")
        if str(p.get("service", "")).upper() != service.upper():
            continue
        regions_with_service.add(p.get("region", "?"))
        if not all_regions and p.get("region") != region:
            continue
        net = ipv4_network(p["ip_prefix"], f"prefixes[{i}]")
        if net is not None:
            nets.append(net)
    if not nets:
        if not regions_with_service:
            raise ConvertError(f"no prefixes for service {service!r} (service names are like S3, EC2, AMAZON)")
        where = "any region" if all_regions else f"region {region!r}"
        raise ConvertError(f"no {service} IPv4 prefixes in {where}; regions with {service}: "
                           + ", ".join(sorted(regions_with_service)))
    return nets


def from_managed_list(doc):
    nets = []
    for i, e in enumerate(doc["Entries"]):
        if not isinstance(e, dict) or "Cidr" not in e:
            raise ConvertError(f"Entries[{i}]: expected an object with Cidr")
        net = ipv4_network(e["Cidr"], f"Entries[{i}]")
        if net is not None:
            nets.append(net)
    if not nets:
        raise ConvertError("the managed prefix list has no IPv4 entries")
    return nets


def generated_date():
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = (datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc) if epoch
            else datetime.datetime.now(datetime.timezone.utc))
    return when.strftime("%Y-%m-%d")


def command_line(args, source):
    """The command that makes this output again (input named by its file name)."""
    words = ["scripts/ip-ranges-to-prefix-list.py", source]
    if args.service:
        words += ["--service", args.service]
    if args.region:
        words += ["--region", args.region]
    if args.all_regions:
        words.append("--all-regions")
    if args.aggregate:
        words.append("--aggregate")
    return " ".join(words)


def render(nets, header):
    body = "".join(f"{n}\n" for n in nets)
    return "".join(f"# {h}\n" if h else "#\n" for h in header) + body


def write_output(text, path):
    if path is None or path == "-":
        sys.stdout.write(text)
        return
    # Write then rename, so a natgw reload never reads a half-written list.
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".prefix-list-")
    except OSError as e:
        raise ConvertError(f"cannot write {path}: {e.strerror}") from e
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as e:
        os.unlink(tmp)
        raise ConvertError(f"cannot write {path}: {e.strerror}") from e


def convert(args):
    doc = load_json(args.input)
    fmt = detect_format(doc)
    source = "stdin" if args.input == "-" else os.path.basename(args.input)
    service = (args.service or "S3").upper()  # AWS spells service names in capitals
    if fmt == "ip-ranges":
        if args.region and args.all_regions:
            raise ConvertError("give --region or --all-regions, not both")
        if not args.region and not args.all_regions:
            raise ConvertError("ip-ranges.json input needs --region REGION (or --all-regions)")
        nets = from_ip_ranges(doc, service, args.region, args.all_regions)
        meta = ", ".join(f"{k} {doc[k]}" for k in ("createDate", "syncToken") if k in doc)
        where = "all regions" if args.all_regions else f"region={args.region}"
        header = [
            f"natgw prefix list: {service} IPv4 prefixes from AWS ip-ranges.json",
            f"source: {source}" + (f" ({meta})" if meta else ""),
            f"filter: service={service} {where}",
        ]
    elif fmt == "managed-prefix-list":
        if args.service or args.region or args.all_regions:
            raise ConvertError("--service, --region and --all-regions apply to ip-ranges.json only: "
                               "a managed prefix list is already one service in one region")
        nets = from_managed_list(doc)
        header = [
            "natgw prefix list: IPv4 entries of an AWS managed prefix list",
            f"source: {source} (aws ec2 get-managed-prefix-list-entries)",
            "filter: none (every IPv4 entry)",
        ]
    else:
        raise ConvertError(f"{args.input}: unknown format: expected ip-ranges.json "
                           '({"prefixes": [...]}) or get-managed-prefix-list-entries output '
                           '({"Entries": [...]})')

    unique = sorted(set(nets), key=lambda n: (int(n.network_address), n.prefixlen))
    if args.aggregate:
        merged = list(ipaddress.collapse_addresses(unique))
        count = f"count: {len(merged)} prefixes (aggregated from {len(unique)})"
        unique = merged
    else:
        count = f"count: {len(unique)} prefixes"
    header += [
        count,
        f"generated: {generated_date()} with: {command_line(args, source)}",
        "For S3 gateway endpoints the VPC routes by the managed prefix list (pl-xxxx): it is",
        "authoritative; ip-ranges.json is a public superset.",
    ]
    write_output(render(unique, header), args.output)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__.split("\n\n")[0],
        epilog="Input format is detected automatically; see the script's docstring for both.")
    parser.add_argument("input", help="ip-ranges.json or get-managed-prefix-list-entries JSON ('-' = stdin)")
    parser.add_argument("--service", help="ip-ranges.json service to keep (default: S3)")
    parser.add_argument("--region", help="ip-ranges.json region to keep, e.g. ap-northeast-1")
    parser.add_argument("--all-regions", action="store_true", help="keep every region (ip-ranges.json)")
    parser.add_argument("--aggregate", action="store_true",
                        help="merge adjacent and contained prefixes into the fewest CIDRs")
    parser.add_argument("-o", "--output", help="output file (default: stdout)")
    args = parser.parse_args(argv)
    try:
        convert(args)
    except ConvertError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
