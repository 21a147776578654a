"""nginx: the community site on https, and plain http redirected to it.

One file, /etc/nginx/nginx.conf, holds the whole configuration (see files/nginx/nginx.conf.j2),
so the exact text that goes live is what `nginx -t -c <staged copy>` checked.
"""
from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import File
from pyinfra.operations import apt, files, systemd

from operations import staging

WEB_ROOT = "/var/www/community"
CONFIG = "/etc/nginx/nginx.conf"
STAGE = f"{staging.STAGING_ROOT}/nginx"
# nginx reads the staged copy as its main configuration: what goes live is exactly what passed.
CHECK = "nginx -t -q -c {stage}/nginx.conf"


def template_vars(data, ipv6):
    """The values files/nginx/nginx.conf.j2 needs, from inventory `data`.

    + ipv6: also listen on [::] (the container has an IPv6 stack)
    """
    community = data.hostnames["community"]
    cert = data.certificates["community"]
    return {
        "community": community,
        "cert": cert["cert"],
        "key": cert["key"],
        "http_port": data.ports["http"]["port"],
        "https_port": data.ports["https"]["port"],
        "web_root": WEB_ROOT,
        "ipv6": ipv6,
    }


@deploy("nginx")
def server():
    """nginx serving the community site; config checked before it replaces the live one."""
    # An IPv6 listener on a host without IPv6 would stop nginx from starting at all.
    ipv6 = bool(host.get_fact(File, path="/proc/net/if_inet6"))
    values = template_vars(host.data, ipv6)

    apt.packages(name="nginx", packages=["nginx"])
    files.directory(name="Web root", path=WEB_ROOT, mode="755")
    files.template(name="Community start page", src="files/nginx/index.html.j2",
                   dest=f"{WEB_ROOT}/index.html", mode="644", community=values["community"])
    config = staging.files(
        name="nginx.conf (checked with nginx -t)",
        config_files=[staging.ConfigFile(
            CONFIG, staging.render("files/nginx/nginx.conf.j2", **values))],
        stage=STAGE, check=CHECK)
    systemd.service(name="nginx running", service="nginx", running=True, enabled=True)
    systemd.service(name="Reload nginx", service="nginx", reloaded=True,
                    _if=config.did_change)
