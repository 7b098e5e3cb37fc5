#!/usr/bin/env bats
# More real servers (Debian packages) that the other suites do not start,
# with kernel TLS, in the VM: each is run without the library, then with it
# (unsharded: the host's tests/host/45-more-servers.bats shards them), the
# same client exchange each time (bodies hashed, DNS answers exact). With
# the library it must serve the same, stop on its signal with the same exit
# status and log no new problem; its records count every connection, and
# each gets kTLS both ways (the kernel's TlsTxSw/TlsRxSw move by as many,
# TlsDecryptError does not), or, for servers on memory BIOs, stays in user
# space with its reason. Helpers: tests/helpers/servers.bash. The servers
# on memory BIOs (twistd, aiohttp, hypercorn) are on the host only: the
# kernel has nothing to do with them, and the VM is slow.

load '../helpers/common'
load '../helpers/tls'
load '../helpers/bioservers'
load '../helpers/servers'

setup() {
    if [ "${KTLSSHIM_VM_INSIDE:-0}" != 1 ]; then
        fail "not inside the kTLS VM: run these through scripts/vm-run (make test-vm)"
    fi
    srv_setup
}
teardown() { teardown_servers; }

# vm_case NAME: the server without the library, then with it; kTLS checked.
vm_case() {
    srv_matrix "$1" lib || return 1
    srv_vm_check
}

@test "lighttpd (mod_openssl)" { run vm_case lighttpd; assert_success; }
@test "Apache httpd, prefork MPM" { run vm_case apache_prefork; assert_success; }
@test "Apache httpd, worker MPM" { run vm_case apache_worker; assert_success; }
@test "Mojolicious daemon (IO::Socket::SSL)" { run vm_case mojo; assert_success; }
@test "cheroot (thread pool, ssl)" { run vm_case cheroot; assert_success; }
@test "nghttpd (HTTP/2)" { run vm_case nghttpd; assert_success; }
@test "ncat --ssl --sh-exec" { run vm_case ncat; assert_success; }
@test "mosquitto (MQTT)" { run vm_case mosquitto; assert_success; }
@test "unbound (DNS over TLS)" { run vm_case unbound; assert_success; }
@test "dnsdist (DNS over TLS)" { run vm_case dnsdist; assert_success; }
@test "nsd (DNS over TLS)" { run vm_case nsd; assert_success; }
@test "proftpd (FTPS)" { run vm_case proftpd; assert_success; }
