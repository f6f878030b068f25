"""Unseen out-of-domain text for measuring int8 fidelity: the one-line descriptions of Debian
packages (technical, mostly neutral one-liners: the kind of text a public endpoint gets and
SST-2 does not have), read from this machine's apt lists. Nothing is downloaded.

    python bench/ood.py [--count 20000] > ood.txt

The build never sees these lines: it calibrates, chooses and reports on Python standard-library
docstrings and the labelled set (handler/compiler/agreement.py). `bench/accuracy.py` uses them
for its out-of-domain columns.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import subprocess
import sys

APT_LISTS = "/var/lib/apt/lists/*_Packages*"
APT_HELPER = "/usr/lib/apt/apt-helper"
MIN_CHARS = 12


def debian_descriptions(count: int = 20_000) -> list[str]:
    """`count` package descriptions, chosen by a hash of each line (the same on every machine
    with the same apt lists); [] where there are none."""
    lines: set[str] = set()
    for path in sorted(glob.glob(APT_LISTS)):
        # apt-helper decompresses whatever apt stored (lz4, gz, xz or plain).
        text = subprocess.run(  # nosec B603: a fixed local binary on a local file
            [APT_HELPER, "cat-file", path], capture_output=True, text=True, check=True
        ).stdout
        for line in text.splitlines():
            if line.startswith("Description: "):
                desc = line[len("Description: ") :].strip()
                if len(desc) >= MIN_CHARS:
                    lines.add(desc)
    ranked = sorted(lines, key=lambda t: hashlib.sha256(("fid" + t).encode()).digest())
    return ranked[:count]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20_000)
    texts = debian_descriptions(parser.parse_args().count)
    if not texts:
        print(f"no Debian package lists at {APT_LISTS}", file=sys.stderr)
        return 1
    sys.stdout.write("".join(t + "\n" for t in texts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
