#!/bin/sh
# Build the lab's stand-in cacert-selfservice-api package and a signed apt repository with it.
#
#   build-repo.sh REPO_DIR PACKAGE_SOURCE SUITE DIGEST
#
# Called by operations/lab_selfservice_repo.py when PACKAGE_SOURCE (lab/selfservice_pkg) has a
# DIGEST other than the one recorded after the last build. A throwaway GPG key is made once in
# REPO_DIR/gnupg; REPO_DIR/public is what the lab's http server serves:
#   archive-key.asc, pool/main/*.deb, dists/SUITE/{InRelease,Release,Release.gpg,main/...}
set -eu

dir=$1 src=$2 suite=$3 digest=$4
public="$dir/public"
export GNUPGHOME="$dir/gnupg"
umask 022
install -d -m 0700 "$GNUPGHOME"
mkdir -p "$public/pool/main" "$public/dists/$suite/main/binary-amd64"

if [ -z "$(gpg --batch --list-secret-keys 2>/dev/null)" ]; then
    gpg --batch --passphrase '' --quick-gen-key \
        "cacert-email lab apt repository <root@cacert.test>" rsa3072 sign never
fi
gpg --batch --armor --export >"$public/archive-key.asc.new"
mv "$public/archive-key.asc.new" "$public/archive-key.asc"

# Build from a copy: owner, modes and a version that grows with every build are the
# package's business, not the checkout's.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$src" "$work/root"
find "$work/root" -name __pycache__ -prune -exec rm -rf {} +
chmod -R u=rwX,go=rX "$work/root"
chmod 0755 "$work/root/DEBIAN"/postinst "$work/root/DEBIAN"/prerm
sed -i "s/^Version: .*/&.$(date -u +%Y%m%d%H%M%S)/" "$work/root/DEBIAN/control"
rm -f "$public/pool/main/"*.deb
dpkg-deb --root-owner-group --build "$work/root" "$public/pool/main/" >/dev/null

cd "$public"
apt-ftparchive packages pool/main >"dists/$suite/main/binary-amd64/Packages"
gzip -9c "dists/$suite/main/binary-amd64/Packages" >"dists/$suite/main/binary-amd64/Packages.gz"
apt-ftparchive \
    -o APT::FTPArchive::Release::Origin=cacert-email-lab \
    -o APT::FTPArchive::Release::Label=cacert-email-lab \
    -o APT::FTPArchive::Release::Suite="$suite" \
    -o APT::FTPArchive::Release::Codename="$suite" \
    -o APT::FTPArchive::Release::Architectures=amd64 \
    -o APT::FTPArchive::Release::Components=main \
    release "dists/$suite" >"$work/Release"
mv "$work/Release" "dists/$suite/Release"
gpg --batch --yes --clearsign -o "dists/$suite/InRelease" "dists/$suite/Release"
gpg --batch --yes --armor --detach-sign -o "dists/$suite/Release.gpg" "dists/$suite/Release"
gpgconf --kill gpg-agent
echo "$digest" >"$dir/built.sha256"
