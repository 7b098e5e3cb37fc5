#!/usr/bin/perl
# forking_https.pl — an HTTPS server in the classic Perl shape, with
# IO::Socket::SSL (Debian's libio-socket-ssl-perl) and nothing else: the
# parent's accept() does the TLS handshake, a forked child serves the
# connection, the parent closes its copy (close(SSL_no_shutdown => 1), as
# IO::Socket::SSL's documentation says a parent should after fork).
#
# Requests (HTTP/1.1, keep-alive, one connection may carry several):
#   GET /NAME          the file NAME of --dir
#   POST /echo         the request body back (Content-Length bodies)
#   POST /fork-echo    (--mode inline) the same, after forking a helper
#                      child that holds a copy of the connection and exits
#                      (exit(), so Perl's global destruction frees its copy
#                      of the SSL object) before the parent answers
#
# --mode child  (default) the child serves the connection, as above.
# --mode inline the parent serves every connection itself; POST /fork-echo
#               forks as described (a CGI-style fork for other work).
# --child-end _exit  a serving child ends with POSIX::_exit (after closing
#               its connection) rather than exit (global destruction).
# --serve N     after N connections, wait for the children and exit 0.
# --max 1.2|1.3 the highest TLS version.
#
# usage: forking_https.pl --port P --cert C --key K --dir D [options]
use strict;
use warnings;
use Getopt::Long;
use IO::Socket::SSL;
use POSIX ();

my ($port, $cert, $key, $dir, $max, $mode, $serve, $end) = (0, '', '', '.', '', 'child', 0, 'exit');
GetOptions('port=i' => \$port, 'cert=s' => \$cert, 'key=s' => \$key, 'dir=s' => \$dir,
    'max=s' => \$max, 'mode=s' => \$mode, 'serve=i' => \$serve, 'child-end=s' => \$end)
    or die "bad options\n";

my %ver = ('1.2' => 'TLSv1_2', '1.3' => 'TLSv1_3');
my $srv = IO::Socket::SSL->new(
    LocalAddr => '127.0.0.1', LocalPort => $port, Listen => 16, ReuseAddr => 1,
    SSL_server => 1, SSL_cert_file => $cert, SSL_key_file => $key,
    ($max ? (SSL_version => "SSLv23:!SSLv3:!TLSv1:!TLSv1_1" . ($max eq '1.2' ? ':!TLSv1_3' : ''))
          : ()),
) or die "listen: $! $SSL_ERROR\n";

my $stop = 0;
$SIG{TERM} = sub { $stop = 1 };

# Reads one request (the head line by line with readline, as Perl servers
# do: IO::Socket::SSL peeks, then reads what SSL_pending says); serves it;
# false when the connection is over.
sub serve_one {
    my ($c) = @_;
    my $line = <$c>;
    return 0 if !defined $line;    # end of connection
    my ($meth, $path) = split / /, $line;
    my $len = 0;
    while (defined(my $h = <$c>)) {
        last if $h eq "\r\n";
        $len = $1 if $h =~ /^content-length:\s*(\d+)/i;
    }
    my $body = '';
    while (length $body < $len) {
        my $n = read($c, $body, $len - length $body, length $body);
        die "short body\n" if !$n;
    }
    my $out;
    if ($meth eq 'POST' && $path eq '/echo') {
        $out = $body;
    } elsif ($meth eq 'POST' && $path eq '/fork-echo') {
        my $pid = fork() // die "fork: $!\n";
        exit 0 if !$pid;    # the helper: global destruction frees its copy
        waitpid($pid, 0);
        die "helper failed\n" if $?;
        $out = $body;
    } elsif ($meth eq 'GET' && $path =~ m{^/([\w.-]+)$} && open(my $f, '<', "$dir/$1")) {
        local $/;
        $out = <$f> // '';
    } else {
        print $c "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        return 1;
    }
    my $all = "HTTP/1.1 200 OK\r\nContent-Length: " . length($out) . "\r\n\r\n" . $out;
    for (my $off = 0; $off < length $all;) {
        my $n = syswrite($c, $all, length($all) - $off, $off);
        die "write: $!\n" if !defined $n;
        $off += $n;
    }
    return 1;
}

my ($accepted, $bad) = (0, 0);
while (!$stop && (!$serve || $accepted < $serve)) {
    my $c = $srv->accept;
    if (!$c) {
        next if $!{EINTR} || $SSL_ERROR;    # a failed handshake: serve on
        die "accept: $!\n";
    }
    $accepted++;
    if ($mode eq 'inline') {
        1 while serve_one($c);
        $c->close;
        next;
    }
    my $pid = fork() // die "fork: $!\n";
    if (!$pid) {
        $srv->close(SSL_no_shutdown => 1);
        1 while serve_one($c);
        $c->close;
        POSIX::_exit(0) if $end eq '_exit';
        exit 0;
    }
    $c->close(SSL_no_shutdown => 1);
    while (waitpid(-1, POSIX::WNOHANG()) > 0) {
        $bad++ if $?;
    }
}
while (waitpid(-1, 0) > 0) {
    $bad++ if $?;
}
exit($bad ? 1 : 0);
