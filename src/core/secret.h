/*
 * secret.h — the node secret: 32 random bytes in <data_dir>/secret (mode
 * 0600), created on first start and kept across restarts, the root of every
 * value that must be unguessable yet stable across restarts and across the
 * nodes that share the file: fake SCRAM salts for unknown users (c2s) and
 * dialback keys (XEP-0185, s2s).
 *
 * Nothing uses the secret itself.  Each use asks for a key of its own
 * purpose (xd_node_key), so that no two uses share key material and a
 * value one of them shows the world says nothing about another's key.
 */
#ifndef XMPPD_CORE_SECRET_H
#define XMPPD_CORE_SECRET_H

#define XD_NODE_SECRET_LEN 32
#define XD_NODE_KEY_LEN 32

/* The purposes (labels of xd_node_key).  A new use gets a new label;
 * changing a label changes every value made with its key. */
#define XD_NODE_KEY_SCRAM_SALT "scram fake salt" /* stream/sasl.c */
#define XD_NODE_KEY_DIALBACK "dialback"          /* s2s/s2s.c, XEP-0185 */
#define XD_NODE_KEY_BIND2 "bind2 resource"      /* stream/c2s_sasl2.c, XEP-0386 */

/* Reads <data_dir>/secret, creating it when missing or short (written to a
 * temporary file, fsync'd, renamed).  Blocking; call once at start-up,
 * before the workers run.  0, -errno or XD_EINTERNAL. */
int xd_node_secret_load(const char *data_dir);

/* The key for `purpose` into out: HKDF-Expand with SHA-256 (RFC 5869 2.3;
 * the secret is uniformly random, so it is the PRK and Extract is skipped,
 * 3.3) with info "xmppd node key: " purpose, XD_NODE_KEY_LEN bytes.  Any
 * thread after the load.  Without a loaded secret (unit tests, before the
 * load, after xd_node_secret_clear) a random one made once per process
 * stands in: stable for the process, never written anywhere. */
void xd_node_key(const char *purpose, unsigned char out[XD_NODE_KEY_LEN]);

/* Wipes the loaded secret (shutdown). */
void xd_node_secret_clear(void);

#endif
