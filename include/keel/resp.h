/*
 * keel/resp.h — the Redis protocol (RESP2 and RESP3) as keel's RESP
 * listener speaks it (services/resp_parse.c, services/resp_port.c).
 *
 * The parser reads commands: arrays of bulk strings (`*2\r\n$3\r\nGET\r\n
 * $1\r\nk\r\n`) and inline commands (`GET k\r\n`, split the way Redis
 * splits them, with its quoting rules). It is incremental in the sense a
 * listener needs: it is handed the bytes received so far, answers "a whole
 * command of n bytes", "not yet (come back with at least `need` bytes)" or
 * "a protocol error" (the listener answers `-ERR Protocol error: ...` and
 * closes, as Redis does). A bulk string split over many reads is not
 * parsed again for every read: `need` says how many bytes must have
 * arrived before a retry can succeed. Limits (bulk length, array size,
 * inline length) are checked on the header, before any byte of the body
 * is buffered.
 *
 * The encoder appends replies to a growable buffer in the shape of either
 * protocol: a RESP3 null is `_`, a RESP2 one `$-1` (or `*-1` for a null
 * array); a RESP3 map is `%n`, a RESP2 one a flat array of 2n elements;
 * RESP3's verbatim string (INFO) is a bulk string in RESP2.
 *
 * Ownership: a parsed command's argv points into the caller's buffer (for
 * arrays) or into the parser's own scratch (inline commands, unescaped);
 * both are valid until the next keel_resp_parse call on that parser or the
 * caller moves its buffer. A keel_resp_buf owns its bytes (free them with
 * keel_resp_buf_free or take b->p).
 */
#ifndef KEEL_RESP_H
#define KEEL_RESP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct keel_resp_limits {
	uint64_t max_bulk;     /* bytes of one bulk string; 0: 4 MiB */
	uint32_t max_args;     /* elements of one command array; 0: 65536 */
	uint32_t max_inline;   /* bytes of an inline command line; 0: 64 KiB */
};

struct keel_resp_parser {
	struct keel_resp_limits lim;
	/* the command's arguments (grown as needed, owned by the parser) */
	const uint8_t **argv;
	size_t *argl;
	uint32_t argc, cap;
	/* inline commands: the unescaped arguments */
	uint8_t *scratch;
	size_t scratch_cap;
	/* bytes the buffer must hold before the next parse can succeed */
	size_t need;
	/* a protocol error's text, as Redis words it ("Protocol error: ...") */
	char error[96];
};

/* lim may be NULL (the defaults). */
void keel_resp_parser_init(struct keel_resp_parser *p, const struct keel_resp_limits *lim);
void keel_resp_parser_free(struct keel_resp_parser *p);

/* Parses one command from buf[0..len). Returns n > 0: a command of n bytes
 * (p->argc arguments in p->argv/p->argl; argc 0 for an empty inline line
 * or `*0`, which Redis ignores: skip n bytes and go on); 0: incomplete
 * (p->need is the least total length worth retrying with); KEEL_EPROTO:
 * malformed or over a limit (p->error says which, in Redis's words);
 * -ENOMEM. */
int keel_resp_parse(struct keel_resp_parser *p, const uint8_t *buf, size_t len);

/* A decimal as Redis reads one (string2ll): optional '-', digits, no
 * leading zero, no "-0", within int64. */
bool keel_resp_ll(const uint8_t *s, size_t n, long long *out);

/* ---- replies ------------------------------------------------------------ */

struct keel_resp_buf {
	uint8_t *p;
	size_t len, cap;
	bool oom;        /* an append failed: the buffer is incomplete */
};

void keel_resp_buf_free(struct keel_resp_buf *b);
void keel_resp_simple(struct keel_resp_buf *b, const char *s);        /* +s */
/* -msg: msg starts with its prefix ("ERR ...", "WRONGTYPE ..."); CR and
 * LF in it become spaces, so a reply can never be split. */
void keel_resp_error(struct keel_resp_buf *b, const char *msg);
void keel_resp_errorf(struct keel_resp_buf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void keel_resp_int(struct keel_resp_buf *b, int64_t v);               /* :v */
void keel_resp_bulk(struct keel_resp_buf *b, const void *p, size_t n); /* $n */
void keel_resp_bulk_str(struct keel_resp_buf *b, const char *s);
void keel_resp_null(struct keel_resp_buf *b, int proto);              /* $-1 | _ */
void keel_resp_null_array(struct keel_resp_buf *b, int proto);        /* *-1 | _ */
void keel_resp_array(struct keel_resp_buf *b, size_t n);              /* *n */
void keel_resp_map(struct keel_resp_buf *b, int proto, size_t n);     /* *2n | %n */
void keel_resp_set(struct keel_resp_buf *b, int proto, size_t n);     /* *n | ~n */
/* A text (INFO): RESP3 verbatim `=n\r\ntxt:...`, RESP2 a bulk string. */
void keel_resp_verbatim(struct keel_resp_buf *b, int proto, const char *s, size_t n);
/* Raw bytes (a reply encoded elsewhere). */
void keel_resp_raw(struct keel_resp_buf *b, const void *p, size_t n);

/* ---- forwarded writes (the peer mesh's "fwd" messages) -------------------
 * A node that does not lead a key's group sends the write to the leader
 * it knows: [u8 1][u64 id][an encoded keel_kv_cmd] (keel/kv.h); the
 * leader answers [u8 2][u64 id][i32 status][u8 kv status][u64 rev]
 * [u64 mod_rev], little-endian. */
struct keel_resp_fwd {
	uint8_t kind;              /* 1 request, 2 result */
	uint64_t id;
	const uint8_t *cmd;        /* request: borrowed from the message */
	size_t cmd_len;
	int32_t status;            /* result */
	uint8_t kv_status;
	uint64_t rev, mod_rev;
};
/* 0, or KEEL_EPROTO for bytes that are neither (never reads past len). */
int keel_resp_fwd_decode(const uint8_t *buf, size_t len, struct keel_resp_fwd *out);

/* ---- the listener (services/resp_port.c) ----------------------------------
 * Started on shard 0's endpoint from a node's start hooks, after every
 * shard's services and keel_resp_shard_start (which every shard runs: it
 * joins the "fwd" messages of its groups); stopped from the stop hooks,
 * the port before the shards. The password is borrowed and outlives the
 * port; password_len 0 lets every client in without AUTH. */
struct keel_node;
struct keel_endpoint;
struct keel_resp_port;
struct keel_resp_port_config {
	struct keel_node *node;
	const char *listen;        /* HOST:PORT */
	uint32_t groups;           /* G, as the services run */
	const uint8_t *password;
	size_t password_len;
	uint32_t max_conns;        /* 0: 1024 */
};
struct keel_resp_port_stats {
	uint64_t accepted, refused, auth_failed, bad_input, slow_closed, closed_bad;
	uint64_t commands;         /* key commands run on the groups */
};
int keel_resp_shard_start(struct keel_endpoint *ep, uint32_t groups, char *errmsg);
void keel_resp_shard_stop(struct keel_endpoint *ep);
int keel_resp_port_start(const struct keel_resp_port_config *cfg, struct keel_endpoint *ep,
			 struct keel_resp_port **out, char *errmsg);
void keel_resp_port_stop(struct keel_resp_port *p);
void keel_resp_port_get_stats(const struct keel_resp_port *p, struct keel_resp_port_stats *st);
/* The group of a key as the RESP port places it: by its {hash tag} when
 * it has a non-empty one, else by the whole key (keel_service_group_of). */
uint32_t keel_resp_group_of(const uint8_t *key, size_t len, uint32_t groups);

#ifdef __cplusplus
}
#endif
#endif /* KEEL_RESP_H */
