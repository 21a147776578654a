"""operations/nginx.py: the rendered configuration and the check-before-activate order."""
from tests.unit.deploy import fake_host  # noqa: F401  (puts the repository on sys.path)
from tests.unit.deploy.fake_host import run

from operations import nginx

STAGED = "/var/lib/cacert-deploy/staging/nginx/nginx.conf"


def _config_op(ops):
    (op,) = [op for op in ops if op.name.startswith("nginx | nginx.conf")]
    return op


def test_site_uses_the_community_certificate_and_name_from_the_inventory():
    ops = run(nginx.server, facts={"File": lambda path: {"mode": 444} if "inet6" in path else None})
    conf = _config_op(ops).uploads[STAGED]
    assert "listen 443 ssl default_server;" in conf
    assert "listen [::]:443 ssl default_server;" in conf
    assert "server_name community.cacert.org;" in conf
    assert "ssl_certificate /etc/ssl/public/community.cacert.org.chain.pem;" in conf
    assert "ssl_certificate_key /etc/ssl/private/community.cacert.org.key.pem;" in conf


def test_port_80_redirects_permanently_keeping_path_and_query():
    ops = run(nginx.server, data={"hostnames": {"email": "email.example.org",
                                                "community": "web.example.org"},
                                  "ports": {"http": {"port": 8080, "from": "any"},
                                            "https": {"port": 8443, "from": "any"}}})
    conf = _config_op(ops).uploads[STAGED]
    http_block = conf.split("listen 8080 default_server;")[1].split("}")[0]
    # $request_uri is the original path with its query string.
    assert "return 301 https://web.example.org$request_uri;" in http_block
    assert "listen 8443 ssl default_server;" in conf


def test_no_ipv6_listener_without_an_ipv6_stack():
    ops = run(nginx.server, facts={"File": lambda path: None})
    assert "[::]" not in _config_op(ops).uploads[STAGED]


def test_staged_copy_is_checked_before_it_replaces_the_live_file():
    commands = _config_op(run(nginx.server)).commands
    check = commands.index(f"nginx -t -q -c {STAGED}")
    install = next(i for i, c in enumerate(commands) if "mv -f" in c)
    assert check < install
    assert "/etc/nginx/nginx.conf.new /etc/nginx/nginx.conf" in commands[install]


def test_unchanged_config_uploads_nothing():
    from operations.staging import render
    values = nginx.template_vars(_Data(), ipv6=False)
    live = render("files/nginx/nginx.conf.j2", **values)
    import hashlib
    sha = hashlib.sha1(live.encode()).hexdigest()
    ops = run(nginx.server, facts={
        "File": lambda path: ({"mode": 644, "user": "root", "group": "root"}
                              if path == "/etc/nginx/nginx.conf" else None),
        "Sha1File": lambda path: sha if path == "/etc/nginx/nginx.conf" else None,
    })
    assert _config_op(ops).commands == []


class _Data:
    """Inventory defaults with attribute access, as pyinfra's host.data gives them."""

    def __getattr__(self, name):
        from operations.defaults import defaults
        return defaults()[name]
