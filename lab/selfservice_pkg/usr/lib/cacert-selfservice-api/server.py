#!/usr/bin/python3
"""Lab stand-in for CAcert's self-service API: https with client certificates, GET /health.

    server.py /etc/cacert-selfservice-api/config.yaml

Reads the same config.yaml the deploy writes for the real package (listen address and port,
server certificate and key, the CA that client certificates must chain to, an optional CRL),
refuses any client without a valid certificate, and answers GET /health with JSON naming the
client, its own pid and the digest of the config it loaded, so a test can see a restart.
Runs on the container's python3 (3.9 on bullseye up to 3.13 on trixie); needs python3-yaml.
"""
import hashlib
import http.server
import json
import os
import socket
import ssl
import sys

import yaml


def load(path):
    with open(path, "rb") as handle:
        raw = handle.read()
    config = yaml.safe_load(raw)
    for section, keys in (("listen", ("address", "port")),
                          ("tls", ("certificate", "private_key", "client_ca"))):
        for key in keys:
            if key not in (config.get(section) or {}):
                sys.exit(f"{path}: {section}.{key} is missing")
    return config, hashlib.sha256(raw).hexdigest()


def tls_context(tls):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(tls["certificate"], tls["private_key"])
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cafile=tls["client_ca"])
    crl = tls.get("crl")
    if crl and os.path.exists(crl):
        context.load_verify_locations(cafile=crl)
        context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    return context


class Handler(http.server.BaseHTTPRequestHandler):
    server_version = "cacert-selfservice-api-lab/0.1"

    def do_GET(self):
        if self.path != "/health":
            self.send_error(404)
            return
        peer = self.connection.getpeercert() or {}
        subject = dict(item for rdn in peer.get("subject", ()) for item in rdn)
        body = json.dumps({"status": "ok", "client": subject.get("commonName"),
                           "pid": os.getpid(), "config_sha256": self.server.config_digest})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())


class Server(http.server.ThreadingHTTPServer):
    def __init__(self, address, context, digest):
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)
        self.context = context
        self.config_digest = digest

    def get_request(self):
        sock, addr = super().get_request()
        sock.settimeout(10)
        return self.context.wrap_socket(sock, server_side=True), addr

    def handle_error(self, request, client_address):
        print(f"{client_address[0]}: {sys.exc_info()[1]}", file=sys.stderr, flush=True)


def main():
    config, digest = load(sys.argv[1] if len(sys.argv) > 1 else
                          "/etc/cacert-selfservice-api/config.yaml")
    listen = config["listen"]
    server = Server((listen["address"], int(listen["port"])), tls_context(config["tls"]), digest)
    print(f"listening on {listen['address']}:{listen['port']}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
