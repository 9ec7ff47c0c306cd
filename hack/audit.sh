#!/usr/bin/env bash
# `make audit`: every locked dependency (requirements/test.txt, which includes the runtime set) checked against a
# vulnerability database with pip-audit. Which database: PyPI's JSON API if it answers, else OSV. When neither can be
# reached this says so and exits 2: nothing was audited, which is not the same as nothing found.
# Usage: hack/audit.sh [REQUIREMENTS_FILE]   (AUDIT_PYPI_URL and AUDIT_OSV_URL replace the services' addresses)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
requirements="${1:-$repo/requirements/test.txt}"
python="$repo/.venv/bin/python"
[ -x "$python" ] || python="$(command -v python3)"

# Prints the service name pip-audit should use, or nothing; the reason for each refusal goes to stderr. Each service is
# asked about a package of the lock, at its locked version, the way pip-audit will ask.
pick_service() {
  "$python" - "$requirements" <<'EOF'
import json
import os
import sys
import urllib.error
import urllib.request

PYPI = os.environ.get("AUDIT_PYPI_URL", "https://pypi.org/pypi")
OSV = os.environ.get("AUDIT_OSV_URL", "https://api.osv.dev/v1/query")

name, version = next(
    line.strip().split("==") for line in open(sys.argv[1]) if "==" in line and not line.startswith("#")
)

def probe(name, request, ok):
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            if ok(json.load(response)):
                return True
            print(f"  {name}: answered, but not with vulnerability data", file=sys.stderr)
    except urllib.error.HTTPError as error:
        print(f"  {name}: HTTP {error.code}", file=sys.stderr)
    except (urllib.error.URLError, OSError, ValueError) as error:
        print(f"  {name}: {getattr(error, 'reason', error)}", file=sys.stderr)
    return False

pypi = urllib.request.Request(f"{PYPI}/{name}/{version}/json")
osv = urllib.request.Request(
    OSV,
    data=json.dumps({"package": {"name": name, "ecosystem": "PyPI"}, "version": version}).encode(),
    headers={"Content-Type": "application/json"},
)
if probe(f"PyPI JSON API ({pypi.full_url})", pypi, lambda body: "vulnerabilities" in body):
    print("pypi")
elif probe(f"OSV ({OSV})", osv, lambda body: isinstance(body, dict)):
    print("osv")
EOF
}

echo "make audit: looking for a vulnerability database..."
service="$(pick_service)"
if [ -z "$service" ]; then
  echo "make audit: NOT AUDITED - no vulnerability database can be reached from this machine (reasons above)." >&2
  echo "make audit: run it where https://pypi.org/pypi/<package>/json or https://api.osv.dev answers." >&2
  exit 2
fi
echo "make audit: auditing $(grep -c '==' "$requirements") pinned packages in ${requirements#"$repo"/} against $service"
exec "$python" -m pip_audit --requirement "$requirements" --no-deps --disable-pip --vulnerability-service "$service" \
  --progress-spinner off --strict
