#!/usr/bin/env bash
# Installs what the PACS tests (tests/pacs) run against: Debian packages orthanc, orthanc-dicomweb,
# dicom3tools (dciodvfy) and dcmtk (dsrdump). Best effort: prints one line and exits 0 whatever
# happens; without the packages those tests skip and say why.
#
# The orthanc package's postinst may start a system Orthanc service (ports 8042 / 4242) or be denied
# by policy-rc.d: either way the tests are unaffected, they start their own Orthanc on a free port
# with their own configuration and storage.
set -u

PACKAGES=(orthanc orthanc-dicomweb dicom3tools dcmtk)
NEEDED_FILES=(/usr/sbin/Orthanc /usr/share/orthanc/plugins/libOrthancDicomWeb.so /usr/bin/dciodvfy /usr/bin/dsrdump)
APT_TIMEOUT_S=900

say() { echo "install-pacs-deps: $*"; }

missing=()
for file in "${NEEDED_FILES[@]}"; do
    [ -e "$file" ] || missing+=("$file")
done
if [ ${#missing[@]} -eq 0 ]; then
    say "${PACKAGES[*]} already installed"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    say "not installing ${PACKAGES[*]}: no apt-get (not Debian/Ubuntu); missing ${missing[*]}; the PACS tests will skip"
    exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
else
    say "not installing ${PACKAGES[*]}: not root and no password-less sudo; missing ${missing[*]}; the PACS tests will skip"
    exit 0
fi
with_timeout=()
command -v timeout >/dev/null 2>&1 && with_timeout=(timeout "$APT_TIMEOUT_S")

log=$(mktemp)
trap 'rm -f "$log"' EXIT
apt() {
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive "${with_timeout[@]}" apt-get "$@" >>"$log" 2>&1
}
install() {
    apt install -y --no-install-recommends "${PACKAGES[@]}"
}

if install; then
    say "installed ${PACKAGES[*]} (were missing: ${missing[*]})"
    exit 0
fi
# a fresh image ships without package lists: fetch them only then, not on every run
if grep -qE "Unable to locate package|has no installation candidate|Failed to fetch" "$log"; then
    if apt update && install; then
        say "installed ${PACKAGES[*]} after apt-get update (were missing: ${missing[*]})"
        exit 0
    fi
fi
reason=$(grep -E "^(E|Err):" "$log" | tail -n 1)
say "could not install ${PACKAGES[*]}: ${reason:-apt-get failed, see apt-get output}; the PACS tests will skip"
exit 0
