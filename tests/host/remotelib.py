"""Helpers for the remote-control tests: throwaway certificates (scripts/gen-certs), an agent with a mutual-TLS
listener and a plain metrics listener on loopback, and HTTPS clients built on Python's ssl module."""
from __future__ import annotations

import http.client
import json
import socket
import ssl
import subprocess
from pathlib import Path

from chaoslib import REPO, HTTPResult

GEN_CERTS = REPO / "scripts" / "gen-certs"


def make_certs(out: Path) -> Path:
    subprocess.run([str(GEN_CERTS), "--out", str(out), "--test-set"], check=True, capture_output=True, timeout=60)
    return out


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def remote_config(certs: Path, port: int, metrics_port: int | None = None, max_ttl: str = "2m") -> str:
    text = f'''[policy]
max-ttl = "{max_ttl}"
[remote]
listen = "127.0.0.1:{port}"
certificate = "{certs}/server.pem"
private-key = "{certs}/server.key"
client-ca = "{certs}/ca.pem"
[remote.roles]
"viewer" = "viewer"
"operator" = "operator"
"admin" = "admin"
'''
    if metrics_port:
        text += f'[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n'
    return text


def tls_context(certs: Path, who: str | None) -> ssl.SSLContext:
    """A client context trusting the test CA, presenting `who`.pem (or no certificate when `who` is None)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(str(certs / "ca.pem"))
    if who is not None:
        ctx.load_cert_chain(str(certs / f"{who}.pem"), str(certs / f"{who}.key"))
    return ctx


class TLSClient:
    """Keep-alive HTTPS to the agent as one identity."""

    def __init__(self, certs: Path, port: int, who: str | None, timeout: float = 15):
        self.ctx = tls_context(certs, who)
        self.port = port
        self.timeout = timeout
        self.conn: http.client.HTTPSConnection | None = None

    def _connection(self) -> http.client.HTTPSConnection:
        if self.conn is None:
            self.conn = http.client.HTTPSConnection("localhost", self.port, context=self.ctx, timeout=self.timeout)
        return self.conn

    def request(self, method: str, path: str, body=None, headers: dict | None = None) -> HTTPResult:
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
        hdrs = {"Content-Type": "application/json"} if body is not None else {}
        hdrs.update(headers or {})
        for attempt in (0, 1):
            conn = self._connection()
            try:
                conn.request(method, path, body=body, headers=hdrs)
                r = conn.getresponse()
                data = r.read()
                if r.getheader("connection", "").lower() == "close":
                    self.close()
                return HTTPResult(r.status, {k.lower(): v for k, v in r.getheaders()}, data)
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                # A kept-alive connection the server closed while idle: retry once on a new one (GET only).
                self.close()
                if attempt == 1 or method != "GET":
                    raise
        raise AssertionError("unreachable")

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def https_once(certs: Path, port: int, who: str | None, method: str, path: str, body=None,
               headers: dict | None = None, timeout: float = 10) -> HTTPResult:
    c = TLSClient(certs, port, who, timeout=timeout)
    try:
        return c.request(method, path, body, headers)
    finally:
        c.close()


def plain_get(port: int, path: str, timeout: float = 10) -> HTTPResult:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return HTTPResult(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
    finally:
        conn.close()


def metric_samples(text: str) -> dict:
    """Parses the Prometheus text format with prometheus_client's parser: {(name, frozenset(labels)): value}."""
    from prometheus_client.parser import text_string_to_metric_families
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def sample(samples: dict, name: str, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)
