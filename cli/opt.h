/*
 * cli/opt.h — the one option parser every keel subcommand uses.
 *
 * A command declares its options in a table (name, short name, kind, where
 * the value goes, accepted range, help text) and calls keel_opt_parse once;
 * `--help` is printed from the same table. Every command then behaves the
 * same way:
 *
 *   keel CMD --help | -h      help on stdout, exit 0 (`keel help CMD` too)
 *   unknown option            "keel CMD: unknown option '--x'"       exit 2
 *   missing value             "keel CMD: --count needs a value (N)"   exit 2
 *   bad number                "keel CMD: --count: 'abc' is not a number
 *                              (expected 1..1000000000)"              exit 2
 *   missing required option   "keel CMD: --config FILE is required"  exit 2
 *   stray argument            "keel CMD: unexpected argument 'x'"    exit 2
 *
 * and each error message is followed by "try 'keel CMD --help'", on stderr.
 *
 *   const char *path = NULL;
 *   uint64_t count = 100000, timeout_ms = 120000;
 *   const struct keel_opt opts[] = {
 *       {"config", 'c', KEEL_OPT_STR, &path, .arg = "FILE",
 *        .help = "the node configuration", .flags = KEEL_OPT_REQUIRED},
 *       {"count", 'n', KEEL_OPT_U64, &count, 1, 1000000000, "N", "messages to send"},
 *       {"timeout-ms", 0, KEEL_OPT_MS, &timeout_ms, 1, 86400000, "MS", "give up after MS"},
 *       {0},
 *   };
 *   const struct keel_cmd_spec spec = {"send", "--config FILE [options]", "sends ...", opts};
 *   int st = keel_opt_parse(&spec, argc, argv, NULL);
 *   if (st != KEEL_OPT_RUN)
 *       return st;
 *
 * Syntax: --name VALUE, --name=VALUE, -x VALUE, -xVALUE; options and
 * positional arguments may be mixed; "--" ends the options. Long names
 * match exactly (no GNU-style abbreviations: adding an option must never
 * change what an existing command line means). An option given twice keeps
 * the last value (a KEEL_OPT_LIST collects every one).
 *
 * Ownership: string values (and list items) point into argv and live as
 * long as it does; a KEEL_OPT_LIST's array is malloc'd and the caller frees
 * it with keel_opt_list_free. The tables are only read.
 */
#ifndef KEEL_CLI_OPT_H
#define KEEL_CLI_OPT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "keel/base.h"

enum keel_opt_kind {
	KEEL_OPT_FLAG, /* bool *out = true; takes no value */
	KEEL_OPT_STR,  /* const char **out: the value, borrowed from argv */
	KEEL_OPT_LIST, /* struct keel_opt_list *out: every value, in order */
	KEEL_OPT_U32,  /* uint32_t *out: decimal digits, min..max */
	KEEL_OPT_U64,  /* uint64_t *out: decimal digits, min..max */
	KEEL_OPT_SIZE, /* uint64_t *out: bytes; digits with an optional K, M, G or
			* T suffix (powers of 1024), min..max in bytes */
	KEEL_OPT_MS,   /* uint64_t *out: milliseconds; digits (ms) or digits with
			* ms, s, m or h, min..max in ms */
};

enum {
	KEEL_OPT_REQUIRED = 1u << 0, /* an error when absent */
	KEEL_OPT_HIDDEN = 1u << 1,   /* accepted, not listed in --help */
};

struct keel_opt {
	const char *name;     /* long name, without "--"; NULL ends the table */
	char short_name;      /* 0: none */
	enum keel_opt_kind kind;
	void *out;            /* see the kind; holds the default before parsing */
	uint64_t min, max;    /* numbers: the accepted range, inclusive
			       * (max 0 means the type's maximum) */
	const char *arg;      /* the value's name in help and messages: "N", "FILE" */
	const char *help;     /* one line; '\n' starts an indented continuation */
	const char *def;      /* the default as --help shows it; NULL: the value
			       * *out holds, when it is in range (a sentinel out of
			       * range, like 0 for "one per core", is not shown) */
	unsigned flags;       /* KEEL_OPT_REQUIRED, KEEL_OPT_HIDDEN */
};

struct keel_opt_list {
	const char **v;
	size_t n, cap;
};
void keel_opt_list_free(struct keel_opt_list *l);

struct keel_cmd_spec {
	const char *name;     /* as typed after "keel": "send", "mr run" */
	const char *synopsis; /* the usage line after "keel NAME ": "--config FILE [options]" */
	const char *about;    /* what it does: lines printed after the usage line */
	const struct keel_opt *opts; /* ends with {0}; may be NULL (no options) */
	unsigned min_args, max_args; /* positional arguments accepted */
	const char *args_name; /* for "missing JOB"; default "argument" */
	const char *epilog;   /* printed after the options, or NULL */
};

/* keel_opt_parse's answer when the command should go on. */
#define KEEL_OPT_RUN (-1)

/* Parses argv[1..argc-1] (argv[0] is the command's own name) against
 * cmd->opts, writing each value through its option's out pointer. Returns
 * KEEL_OPT_RUN to go on, or the exit status the command must return now:
 * 0 after --help (printed to stdout), 2 after a usage error (printed to
 * stderr with the "try" line). The positional arguments are moved, in
 * order, to argv[1..*nargs] (nargs may be NULL when max_args is 0). */
int keel_opt_parse(const struct keel_cmd_spec *cmd, int argc, char **argv, int *nargs);

/* The help text built from the table, as --help prints it. */
void keel_opt_help(const struct keel_cmd_spec *cmd, FILE *f);

/* A usage error found after parsing (options that conflict, a value out of
 * what another option allows): prints "keel NAME: <message>" and the "try"
 * line to stderr and returns 2, so `return keel_opt_usage(&spec, ...);`. */
int keel_opt_usage(const struct keel_cmd_spec *cmd, const char *fmt, ...) KEEL_PRINTF(2, 3);

/* Parses one value as opt would (for values that come from elsewhere, like
 * an environment variable): 0, or KEEL_EBADINPUT with the reason in errmsg
 * ("--count: 'abc' is not a number (expected 1..1000000000)"). */
int keel_opt_value(const struct keel_opt *opt, const char *value, char *errmsg);

#endif /* KEEL_CLI_OPT_H */
