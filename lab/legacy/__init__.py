"""The lab's legacy server: a container filled the way the Puppet era left the live
email.cacert.org, from hand-written files (lab/legacy/rootfs, lab/legacy/lxc.conf), so that
adopting a live server can be proven in the lab. lab/containers.py calls build() and clean().
"""
from lab.legacy.builder import ACCOUNTS, ALIASES, BuildError, build, clean

__all__ = ["ACCOUNTS", "ALIASES", "BuildError", "build", "clean"]
