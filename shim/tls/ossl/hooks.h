/* tls/ossl/hooks.h — the OpenSSL hooks' bodies carry internal names
 * (ks_hook_SSL_read, ...); the names a program's calls land on are the
 * gates of tls/ossl/gates.c, one per symbol version (OpenSSL 3 and 1.1), which
 * send each call to the body or, for the other OpenSSL of a process that
 * has both, past the library to its own real function.
 *
 * Include this FIRST (before any OpenSSL header) in every file that defines
 * a hook body: the defines below rename the definitions and OpenSSL's
 * prototypes alike, so each body keeps OpenSSL's exact signature. A hook
 * added to one of those files gets a line here and a row in tls/ossl/gates.c.
 * BIO_* bodies (biosock/bio.c) are renamed only where KS_HOOKS_BIO is defined:
 * elsewhere BIO_ctrl is also a field of the OpenSSL table. */
#ifndef KTLSSHIM_OSSL_HOOKS_H
#define KTLSSHIM_OSSL_HOOKS_H

#ifdef OPENSSL_SSL_H
#error "tls/ossl/hooks.h must come before OpenSSL's headers"
#endif

#define SSL_CTX_new ks_hook_SSL_CTX_new
#define SSL_CTX_new_ex ks_hook_SSL_CTX_new_ex
#define SSL_accept ks_hook_SSL_accept
#define SSL_connect ks_hook_SSL_connect
#define SSL_do_handshake ks_hook_SSL_do_handshake
#define SSL_read ks_hook_SSL_read
#define SSL_read_ex ks_hook_SSL_read_ex
#define SSL_write ks_hook_SSL_write
#define SSL_write_ex ks_hook_SSL_write_ex
#define SSL_sendfile ks_hook_SSL_sendfile
#define SSL_CTX_set_info_callback ks_hook_SSL_CTX_set_info_callback
#define SSL_CTX_get_info_callback ks_hook_SSL_CTX_get_info_callback
#define SSL_set_info_callback ks_hook_SSL_set_info_callback
#define SSL_get_info_callback ks_hook_SSL_get_info_callback
#define SSL_CTX_set_tlsext_ticket_key_evp_cb ks_hook_SSL_CTX_set_tlsext_ticket_key_evp_cb
#define SSL_CTX_ctrl ks_hook_SSL_CTX_ctrl
#define SSL_CTX_callback_ctrl ks_hook_SSL_CTX_callback_ctrl
#define SSL_peek ks_hook_SSL_peek
#define SSL_peek_ex ks_hook_SSL_peek_ex
#define SSL_pending ks_hook_SSL_pending
#define SSL_has_pending ks_hook_SSL_has_pending
#define SSL_in_init ks_hook_SSL_in_init
#define SSL_is_init_finished ks_hook_SSL_is_init_finished
#define SSL_get_error ks_hook_SSL_get_error
#define SSL_shutdown ks_hook_SSL_shutdown
#define SSL_clear ks_hook_SSL_clear
#define SSL_CTX_set_keylog_callback ks_hook_SSL_CTX_set_keylog_callback
#define SSL_CTX_get_keylog_callback ks_hook_SSL_CTX_get_keylog_callback
#define SSL_CTX_clear_options ks_hook_SSL_CTX_clear_options
#define SSL_new ks_hook_SSL_new
#define SSL_CTX_set_msg_callback ks_hook_SSL_CTX_set_msg_callback
#define SSL_set_msg_callback ks_hook_SSL_set_msg_callback
#define BIO_f_ssl ks_hook_BIO_f_ssl
#ifdef KS_HOOKS_BIO
#define BIO_ctrl ks_hook_BIO_ctrl
#define BIO_write ks_hook_BIO_write
#define BIO_read ks_hook_BIO_read
#endif

#endif
