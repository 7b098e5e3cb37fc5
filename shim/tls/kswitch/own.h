/* tls/kswitch/own.h — the per-connection state of the library's own kTLS
 * switch, shared by its receive side (tls/kswitch/switch.c, rx.c), its send side
 * (tls/kswitch/tx.c) and KeyUpdate (tls/kswitch/rekey.c). Private to those files. */
#ifndef KTLSSHIM_KSWITCH_OWN_H
#define KTLSSHIM_KSWITCH_OWN_H

#include "core/common.h"
#include "kernel/uapi.h"
#include "tls/kswitch/kdf.h"
#include "tls/kswitch/lifetime.h"
#include "tls/kswitch/rxseq.h"
#include "tls/biosock/biosock.h"
#include "tls/ossl/api.h"

#include <openssl/ssl.h>

#define KS_OWN_SCRATCH 64 /* reads smaller than this go through our own buffer */
#define KS_OWN_HELD 16384 /* the most plaintext a TLS record carries */

enum ks_own_state { OWN_OPEN = 0, OWN_CLOSED, OWN_FAILED };

struct ks_own {
    bool rx_on;    /* the kernel has our receive keys */
    bool tx_on;    /* the kernel has our send keys (only ever with rx_on) */
    uint8_t state; /* enum ks_own_state */
    int version;
    int fd;
    int last_err; /* SSL_ERROR_* of the last call served here; -1: none */
    /* TLS 1.3 client application traffic secret: until switched, and after
     * that only where the kernel can rekey (a KeyUpdate: tls/kswitch/rekey.c). */
    uint8_t secret[KS_MAX_SECRET];
    size_t secret_len;
    uint8_t hash;                  /* enum ks_hash of the switched connection */
    uint8_t aead;                  /* enum ks_aead of the switched connection */
    bool ku_answer_due;            /* the peer asked for our KeyUpdate; not sent yet */
    uint8_t stash[KS_OWN_SCRATCH]; /* data received for a short read, not yet returned */
    size_t stash_off, stash_len;
    uint8_t *held; /* KS_OWN_HELD bytes (NULL until the first SSL_peek): the data SSL_peek
                      took from the kernel, not yet returned; what SSL_pending counts */
    size_t held_off, held_len;

    /* Send side (tls/kswitch/tx.c). */
    uint8_t tx_secret[KS_MAX_SECRET]; /* TLS 1.3 server traffic secret, as secret */
    size_t tx_secret_len;
    uint64_t tx_seq;       /* records libssl wrote under the current send keys */
    bool tx_seq_known;     /* the msg callback saw the keys change: tx_seq counts */
    bool msg_cb_own;       /* the program set this SSL's msg callback itself */
    bool msg_cb_restored;  /* counting is over: the program's callback is back */
    bool msg_cb_kept;      /* ... except that ours stayed on (tls/kswitch/lifetime.c) */
    ks_msg_cb_t msg_cb;    /* ... that callback (NULL: none) */
    const void *wpend_buf; /* an SSL_write cut short: the caller's buffer */
    size_t wpend_done;     /* ... and how much of it the kernel already took */
    bool alert_pending;    /* our close_notify is still to be sent */

    /* A long life (tls/kswitch/lifetime.c). */
    struct ks_ku_rate ku_rate; /* the peer's KeyUpdates in the current second */
    uint64_t tx_budget;        /* records that may go out before the kernel's count is read */
    bool tx_limit_done;        /* no more looks: not AES-GCM 1.3 in the kernel, or counted */
    bool ku_by_count;          /* the KeyUpdate due is ours for the record count */
    bool ku_flooded;           /* libssl's receive: cut off for too many KeyUpdates */

    /* Receive under the program's own BIO (tls/biosock/rxframe.c): the
     * records come framed through that BIO, not from the socket. */
    BIO *rx_bio;            /* NULL: from the socket (fd) */
    uint64_t rx_sock;       /* ... whose identity is this (biosock's) */
    struct ks_bio_rx rx_in; /* the reader's place in the framed stream */

    /* The deferred receive switch (tls/kswitch/defer.c). */
    struct ks_rxseq rxq; /* the client's records libssl has read (the msg callback) */
    bool rx_wait;        /* waiting for a record boundary: the msg callback stays on */
    bool fatal;          /* ended with an error libssl makes fatal (tls/kswitch/failstate.c) */
};

/* The state of s, made on first use (NULL without memory). */
struct ks_own *ks_own_make(SSL *s);

/* The state of s if it has one (never makes it). */
struct ks_own *ks_own_peek(const SSL *s);

/* An SSL error with reason on the error queue, as libssl raises it. */
void ks_own_push_error(int reason);

/* TLS 1.2: the keys of one direction (client_write: the client's, which the
 * server receives with) from s's master secret and randoms, through the
 * PRF. 0, or -1. The master secret is wiped before it returns. */
int ks_own_tls12_keys(SSL *s, enum ks_hash hash, enum ks_aead aead, bool client_write,
                      struct ks_keys *k);

/* Puts k into fd's receive (tx: send) direction at record sequence seq.
 * 0, or -1 with errno. */
int ks_own_install(int fd, int version, const struct ks_keys *k, uint64_t seq, bool tx);

/* tls/kswitch/tx.c: its ex_data index (after tls/kswitch/switch.c's setup), the msg
 * callback on a new SSL_CTX, the send keys changed (TLS 1.3 keylog). */
void ks_switch_tx_setup(void);
void ks_switch_tx_ctx_created(SSL_CTX *ctx);
void ks_own_tx_keys_changed(struct ks_own *o);

/* SSL_shutdown on a connection whose send side is the own switch's. */
int ks_own_shutdown_tx(SSL *s, struct ks_own *o);

/* Wipes the send side's secrets. */
void ks_own_tx_wipe(struct ks_own *o);

/* tls/kswitch/defer.c: a message libssl received on s (from the msg
 * callback: a record header, a handshake message): the deferred switch's
 * count. Returns o, or the state it made for s (a server's client Finished). */
struct ks_own *ks_defer_msg(SSL *s, struct ks_own *o, int content_type, const void *buf,
                            size_t len);

/* ---- TLS 1.3 KeyUpdate (tls/kswitch/rekey.c) ---- */

/* o is a TLS 1.3 connection whose receive was just switched: its traffic
 * secrets are worth keeping (the kernel can rekey). */
bool ks_own_rekey_possible(const struct ks_own *o);

/* A handshake record (its len bytes in msg) received on an own-RX TLS 1.3
 * connection that begins with a KeyUpdate: validated, applied (new receive
 * keys, and the answer when the peer asks for it). 0 when applied (read
 * on); otherwise the SSL_R_* reason that ends the connection. */
int ks_own_key_update(SSL *s, struct ks_own *o, const uint8_t *msg, size_t len);

/* o's receive side ended (closed or failed): no KeyUpdate can come any
 * more, so the receive secret goes, and the send secret too unless our
 * answer is still due on a connection that only closed. */
void ks_own_rx_ended(struct ks_own *o);

/* The kernel holds send keys for o's socket (the own switch's or libssl's). */
bool ks_own_tx_in_kernel(const struct ks_own *o);

/* ---- a long life (tls/kswitch/lifetime.c) ---- */

/* A KeyUpdate received on s: true when it is beyond KTLSSHIM_KEYUPDATE_LIMIT
 * within a second (counted; our alert sent where the kernel holds the send
 * keys; SSL_SENT_SHUTDOWN set): the caller ends the connection. */
bool ks_own_ku_flood(SSL *s, struct ks_own *o);

/* A TLS 1.3 KeyUpdate that libssl receives on s (its receive is libssl's;
 * the msg callback, tls/kswitch/tx.c): beyond KTLSSHIM_KEYUPDATE_LIMIT
 * within a second, counted, our alert sent where the kernel holds the send
 * keys, and SSL_RECEIVED_SHUTDOWN set: libssl then discards what follows
 * (SSL_read returns 0, SSL_ERROR_ZERO_RETURN). */
void ks_libssl_key_update(SSL *s, struct ks_own *o);

/* TLS 1.3 receive just switched: TLS_RX_EXPECT_NO_PAD where KTLSSHIM_RX_NO_PAD says so. */
void ks_own_rx_no_pad(struct ks_own *o);

/* Our KeyUpdate answer, if one is due, is sent and our send keys renewed.
 * 0 (nothing due, or done); -1 with errno (EAGAIN: still due, try again;
 * anything else: the connection cannot go on, o->state is OWN_FAILED). */
int ks_own_key_update_answer(struct ks_own *o);

#endif
