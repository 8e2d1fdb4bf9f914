"""Rotating API keys and the TLS certificate without a restart, and keys kept out of URLs.

A real `nebula-id serve` with HTTPS and a keys file.  The files are replaced the
way the kubelet updates a mounted Secret (a new file renamed over the old), and
the same process, same PID, takes the new key and serves the new certificate.
A key in the query string is refused and never reaches the audit log, and
there is no command-line flag to pass a key with.
"""

from __future__ import annotations

import os
import pathlib
import ssl
import subprocess
import sys
import time

from tests.support import http, pki, processes, waiting

NEBULA_ID = pathlib.Path(sys.executable).with_name("nebula-id")
OLD_KEY, NEW_KEY = "old-key-0123456789abcdef", "new-key-fedcba9876543210"


def replace(path: pathlib.Path, data: bytes) -> None:
    """Write `data` beside `path`, then rename it over: readers see old or new, never half."""
    scratch = path.with_name(path.name + ".new")
    scratch.write_bytes(data)
    os.replace(scratch, path)


def context_for(ca: pki.CertificateAuthority) -> ssl.SSLContext:
    return ssl.create_default_context(cadata=ca.pem.cert.decode())


def test_a_key_and_a_certificate_rotate_in_a_running_sidecar(tmp_path: pathlib.Path) -> None:
    old_ca, new_ca = pki.CertificateAuthority("old-ca"), pki.CertificateAuthority("new-ca")
    cert, key = old_ca.issue("localhost", ip_addresses=("127.0.0.1",), server=True).write(
        tmp_path, "server"
    )
    keys_file = tmp_path / "api-keys"
    keys_file.write_text(OLD_KEY + "\n")
    audit = tmp_path / "audit.log"
    port = processes.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEBULA_")}
    env |= {
        "NEBULA_PORT": str(port),
        "NEBULA_DATA_DIR": str(tmp_path / "data"),
        "NEBULA_TLS_CERT_FILE": str(cert),
        "NEBULA_TLS_KEY_FILE": str(key),
        "NEBULA_AUTH_API_KEYS_FILE": str(keys_file),
        "NEBULA_AUDIT_LOG": str(audit),
    }
    log = tmp_path / "serve.log"
    proc = processes.spawn([str(NEBULA_ID), "serve"], log_path=log, env=env)
    base = f"https://127.0.0.1:{port}"
    try:
        old_tls, new_tls = context_for(old_ca), context_for(new_ca)
        processes.wait_until(
            lambda: http.get(base + "/healthz", context=old_tls)[0] == 200,
            what="nebula-id serve over TLS",
            proc=proc,
            log_path=log,
            timeout=20,
        )

        def status(key: str, context: ssl.SSLContext = old_tls) -> int:
            return http.get(base + "/v1/ids/uuid4", headers={"X-API-Key": key}, context=context)[0]

        assert status(OLD_KEY) == 200
        assert status(NEW_KEY) == 401

        # 1. The key rotates.
        replace(keys_file, (NEW_KEY + "\n").encode())
        started = time.monotonic()
        waiting.eventually(lambda: status(NEW_KEY) == 200, 15, what="the new key to be accepted")
        took = time.monotonic() - started
        assert status(OLD_KEY) == 401
        print(f"new key accepted {took:.2f} s after the file changed")

        # A keys file caught empty keeps the previous keys.
        replace(keys_file, b"# nothing yet\n")
        waiting.eventually(
            lambda: "keeping the previous one" in log.read_text(),
            15,
            what="the empty keys file to be refused",
        )
        assert status(NEW_KEY) == 200

        # 2. The certificate rotates: a client that trusts only the new CA gets through.
        assert http.get(base + "/healthz", context=new_tls)[0] == 0
        new = new_ca.issue("localhost", ip_addresses=("127.0.0.1",), server=True)
        replace(key, new.key)
        replace(cert, new.cert)
        started = time.monotonic()
        waiting.eventually(
            lambda: http.get(base + "/healthz", context=new_tls)[0] == 200,
            15,
            what="the new certificate to be served",
        )
        took = time.monotonic() - started
        assert http.get(base + "/healthz", context=old_tls)[0] == 0
        assert status(NEW_KEY, new_tls) == 200
        print(f"new certificate served {took:.2f} s after the files changed")
        assert proc.poll() is None  # the same process all along

        # 3. A key in the URL is refused, even with a valid header, and not logged.
        code, body = http.get(
            base + f"/v1/ids/uuid4?api_key={NEW_KEY}",
            headers={"X-API-Key": NEW_KEY},
            context=new_tls,
        )
        assert code == 400, body
        assert b"never in the URL" in body
        assert http.get(base + f"/v1/ids?token={NEW_KEY}", context=new_tls)[0] in (400, 401)
    finally:
        processes.stop(proc)
    audit_text = audit.read_text()
    assert "/v1/ids/uuid4?api_key=***" in audit_text
    assert NEW_KEY not in audit_text
    assert OLD_KEY not in audit_text
    assert NEW_KEY not in log.read_text()


def test_api_keys_have_no_command_line_flag(tmp_path: pathlib.Path) -> None:
    proc = subprocess.run(
        [str(NEBULA_ID), "serve", "--auth-api-keys", "visible-in-ps"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2
    assert "unrecognized arguments: --auth-api-keys" in proc.stderr
    help_text = subprocess.run(
        [str(NEBULA_ID), "serve", "--help"], capture_output=True, text=True, timeout=30, check=False
    ).stdout
    assert "--auth-api-keys-file" in help_text
    assert "--auth-api-keys " not in help_text
