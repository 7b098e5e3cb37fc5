#!/usr/bin/env bats
# Smoke tests of the kTLS VM itself. They run INSIDE the VM started by
# scripts/vm-run (make test-vm); see docs/vm.md.

load '/usr/lib/bats/bats-support/load'
load '/usr/lib/bats/bats-assert/load'

ROOT="$(cd "$BATS_TEST_DIRNAME/../.." && pwd)"

setup() {
    if [ "${KTLSSHIM_VM_INSIDE:-0}" != 1 ]; then
        fail "not inside the kTLS VM: run these through scripts/vm-run (make test-vm)"
    fi
}

@test "vm: a Debian 6.1/6.12 kernel, not the host's" {
    run uname -r
    assert_success
    assert_output --regexp '^6\.(1|12)\.[0-9]+.*-amd64$'
    refute_output "$KTLSSHIM_VM_HOST_KERNEL"
}

@test "vm: the tls ULP is registered" {
    run cat /proc/sys/net/ipv4/tcp_available_ulp
    assert_success
    assert_output --regexp '(^| )tls( |$)'
}

@test "vm: /proc/net/tls_stat exists" {
    [ -r /proc/net/tls_stat ]
    run cat /proc/net/tls_stat
    assert_line --regexp '^TlsCurrTxSw[[:space:]]+[0-9]+$'
}

@test "vm: setsockopt(TCP_ULP, \"tls\") succeeds on a loopback connection" {
    run /usr/bin/python3 -c '
import socket
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
c = socket.create_connection(srv.getsockname()); s, _ = srv.accept()
c.setsockopt(socket.IPPROTO_TCP, 31, b"tls")  # TCP_ULP
print(c.getsockopt(socket.IPPROTO_TCP, 31, 16).rstrip(b"\0").decode())
'
    assert_success
    assert_output "tls"
}

@test "vm: TLS_TX with AES-128-GCM sends TLS 1.3 records (kernel crypto)" {
    run /usr/bin/python3 -c '
import socket, struct
SOL_TLS, TLS_TX = 282, 1
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
c = socket.create_connection(srv.getsockname()); s, _ = srv.accept()
c.setsockopt(socket.IPPROTO_TCP, 31, b"tls")
# struct tls12_crypto_info_aes_gcm_128: version, cipher_type, iv, key, salt, rec_seq
info = struct.pack("=HH8s16s4s8s", 0x0304, 51, b"\1" * 8, b"\2" * 16, b"\3" * 4, bytes(8))
c.setsockopt(SOL_TLS, TLS_TX, info)
c.sendall(b"hello")
rec = b""
while len(rec) < 27:
    rec += s.recv(64)
# 5-byte header (application_data, legacy 3.3, length) + 5 + 1 (inner type) + 16 (tag)
print(rec[:5].hex(), len(rec))
'
    assert_success
    assert_output "1703030016 27"
    run grep -E '^TlsTxSw[[:space:]]' /proc/net/tls_stat
    assert_output --regexp '[1-9][0-9]*$'
}

@test "vm: loopback is up for IPv4 and IPv6" {
    run /usr/bin/python3 -c '
import socket
for fam, addr in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
    srv = socket.socket(fam); srv.bind((addr, 0)); srv.listen(1)
    socket.create_connection(srv.getsockname()[:2]).close()
print("ok")
'
    assert_success
    assert_output "ok"
}

@test "vm: /tmp is a writable tmpfs" {
    run stat -f -c %T /tmp
    assert_output "tmpfs"
    echo data >"$BATS_TEST_TMPDIR/probe"
    run cat "$BATS_TEST_TMPDIR/probe"
    assert_output "data"
    tmp=$(mktemp /tmp/vm-smoke.XXXXXX)
    echo x >"$tmp"
    rm "$tmp"
}

@test "vm: the project tree is visible at the host's path, read-only" {
    [ -x "$ROOT/scripts/vm-run" ]
    [ -f "$ROOT/tests/vm/00-vm-smoke.bats" ]
    [ -f "$ROOT/Makefile" ]
    if [ -n "${KTLSSHIM_BUILD:-}" ]; then
        [ -d "$KTLSSHIM_BUILD" ]
    fi
    run touch "$ROOT/.vm-smoke-write-probe"
    assert_failure
    assert_output --partial "Read-only file system"
}

@test "vm: the host's tools run unchanged" {
    run openssl version
    assert_success
    assert_output --regexp '^OpenSSL 3\.'
    run nginx -v
    assert_success
    run curl --version
    assert_success
    [ -e /dev/fd/0 ] && [ -e /dev/stdin ] && [ -e /dev/stdout ] && [ -e /dev/stderr ]
}
