"""Append one call of a stand-in to $ACT_STANDIN_LOG as a JSON line: the action and its inputs.

Used by the release stand-ins (login, trivy, cosign, attest), found through $ACT_STANDIN_RECORD: a test reads what each was given.
"""

import json
import os
import sys

log = os.environ.get("ACT_STANDIN_LOG")
if not log:
    sys.exit(f"{sys.argv[1]} stand-in: set ACT_STANDIN_LOG")
record = {"action": sys.argv[1], "inputs": dict(arg.split("=", 1) for arg in sys.argv[2:])}
with open(log, "a") as f:
    f.write(json.dumps(record) + "\n")
