# OpenSSH's server (Debian's `openssh-server`) and client (`openssh-client`), for the test of the
# `git` CLI fetch over ssh (tests/fetch_ssh.rs). Installed if missing; no daemon is started here
# (the package's own service is stopped if the install started it): the test runs its own
# `sshd -D` on a free port of 127.0.0.1 with a configuration, host key and authorized key of its
# own. Exports DEPLOYER_TEST_SSHD (the absolute path sshd must be started by).
sshd_program=/usr/sbin/sshd

if [ ! -x "$sshd_program" ] || ! command -v ssh >/dev/null 2>&1 || ! command -v ssh-keygen >/dev/null 2>&1; then
    echo "installing openssh-server and openssh-client (apt)" >&2
    if ! { DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            openssh-server openssh-client >&2; }; then
        echo "error: cannot install the Debian packages openssh-server and openssh-client" >&2
        exit 1
    fi
    # Where an init system runs, the package starts sshd on port 22; the tests do not need it.
    if command -v systemctl >/dev/null 2>&1; then
        systemctl stop ssh >/dev/null 2>&1 || true
    fi
    service ssh stop >/dev/null 2>&1 || true
fi
if [ ! -x "$sshd_program" ]; then
    echo "error: $sshd_program is missing after installing openssh-server" >&2
    exit 1
fi
# sshd refuses to start without its privilege-separation directory (made by its service at boot).
if ! mkdir -p /run/sshd; then
    echo "error: cannot create /run/sshd, the directory sshd needs to start" >&2
    exit 1
fi
echo "sshd $sshd_program ($("$sshd_program" -V 2>&1 | head -1))" >&2
export DEPLOYER_TEST_SSHD="$sshd_program"
