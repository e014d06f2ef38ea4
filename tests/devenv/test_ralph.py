"""The local Ralph LRS: private to 127.0.0.1, needs its credentials, leaves nothing behind, and the two
defects that ralph_app.py corrects are still there in the pinned Ralph (else the patches are dead)."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
from pathlib import Path

from hrlms.devenv.ralph import (
    REQUIREMENTS,
    STAMP_NAME,
    LocalRalph,
    basic_auth_status,
    ensure_venv,
    requirements_digest,
)


def listening_addresses(port: int) -> set[str]:
    """Local IPv4/IPv6 addresses with a LISTEN socket on ``port`` (from /proc/net/tcp{,6})."""
    found: set[str] = set()
    for name, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        path = Path("/proc/net") / name
        for line in path.read_text().splitlines()[1:] if path.exists() else []:
            fields = line.split()
            addr, port_hex = fields[1].split(":")
            if fields[3] == "0A" and int(port_hex, 16) == port:  # 0A = LISTEN
                raw = b"".join(bytes.fromhex(addr[i : i + 8])[::-1] for i in range(0, len(addr), 8))
                found.add(socket.inet_ntop(family, raw))
    return found


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_ralph_is_private_needs_its_credentials_and_cleans_up(tmp_path: Path) -> None:
    ralph = LocalRalph(tmp_path)
    with ralph:
        assert ralph.base_url == f"http://127.0.0.1:{ralph.port}"
        port, instance = ralph.port, ralph.instance_dir
        assert port is not None and instance is not None
        assert listening_addresses(port) == {"127.0.0.1"}
        whoami = f"{ralph.base_url}/whoami"
        assert basic_auth_status(whoami, ralph.username, ralph.password) == 200
        assert basic_auth_status(whoami) == 401
        assert basic_auth_status(whoami, ralph.username, "not-the-password") == 401
        assert basic_auth_status(f"{ralph.base_url}/xAPI/statements") == 401
        assert basic_auth_status(f"{ralph.base_url}/__heartbeat__") == 200  # fs backend dir is usable
        assert stat.S_IMODE(ralph.auth_file.stat().st_mode) == 0o600
        assert ralph.password not in ralph.auth_file.read_text()
        assert ralph.password not in ralph.log_path.read_text()
        assert ralph.password not in Path(f"/proc/{ralph._proc.pid}/cmdline").read_text()  # type: ignore[union-attr]
    assert not port_open(port)
    assert not instance.exists()


def test_two_instances_get_their_own_credentials_and_data(tmp_path: Path) -> None:
    with LocalRalph(tmp_path) as one, LocalRalph(tmp_path) as two:
        assert one.port != two.port and one.data_dir != two.data_dir
        assert basic_auth_status(f"{two.base_url}/whoami", one.username, one.password) == 401


def test_the_venv_is_built_once_per_requirements() -> None:
    python = ensure_venv()
    assert ensure_venv() == python
    stamp = python.parent.parent / STAMP_NAME
    assert stamp.read_text().strip() == requirements_digest()
    pins = [line for line in REQUIREMENTS.read_text().splitlines() if line and not line.startswith("#")]
    assert pins and all("==" in line for line in pins) and "ralph-malph==5.1.0" in pins


_STOCK_RALPH = """
import json, sys
from ralph.backends.lrs.base import RalphStatementsQuery
from ralph.backends.lrs.fs import FSLRSBackend, FSLRSBackendSettings
from ralph.exceptions import BackendException
from ralph.models.xapi.base.common import IRI

backend = FSLRSBackend(FSLRSBackendSettings(DEFAULT_DIRECTORY_PATH=sys.argv[1]))
verb = "http://adlnet.gov/expapi/verbs/completed"
statement = {"verb": {"id": verb}, "timestamp": "2026-01-01T00:00:00+00:00"}
backend.write([{**statement, "id": "1"}])
try:
    backend.write([{**statement, "id": "2"}])
    second_write = "ok"
except BackendException:
    second_write = "fails"
# The statements router passes the verb on as an IRI object (routers/statements.py).
found = backend.query_statements(RalphStatementsQuery.model_construct(verb=IRI(verb), limit=10))
print(json.dumps({"second_write": second_write, "verb_matches": len(found.statements)}))
"""


def test_stock_ralph_still_has_the_two_defects_ralph_app_patches(tmp_path: Path) -> None:
    """If an upgrade fixed them, drop the patches in ralph_app.py (the HTTP tests in tests/learning
    show the patched server appends and filters)."""
    python = ensure_venv()
    env = {"PATH": os.environ.get("PATH", ""), "RALPH_APP_DIR": str(tmp_path),
           "RALPH_HISTORY_FILE": str(tmp_path / "history.json")}
    out = subprocess.run([str(python), "-I", "-c", _STOCK_RALPH, str(tmp_path / "data")], env=env, cwd=tmp_path,
                         capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.splitlines()[-1]) == {"second_write": "fails", "verb_matches": 0}
