/* The keel command: one file per subcommand (cmd_<name>.c), one line per
 * subcommand in the table in main.c. A subcommand gets argv with argv[0]
 * set to its own name and returns the process exit status: 0 done, 1
 * failed, 2 a usage error (cli/opt.h prints those the same way for every
 * command). */
#ifndef KEEL_CLI_H
#define KEEL_CLI_H

#include "cli/opt.h"

int keel_cmd_version(int argc, char **argv);
int keel_cmd_topo(int argc, char **argv);
int keel_cmd_shards(int argc, char **argv);
int keel_cmd_mr(int argc, char **argv);
int keel_cmd_df(int argc, char **argv);
int keel_cmd_node(int argc, char **argv);
int keel_cmd_cluster(int argc, char **argv);
int keel_cmd_send(int argc, char **argv);
int keel_cmd_config(int argc, char **argv);
int keel_cmd_kv(int argc, char **argv);
int keel_cmd_status(int argc, char **argv);
int keel_cmd_lock(int argc, char **argv);
int keel_cmd_member(int argc, char **argv);

/* ---- client commands (cli/connect.c) ------------------------------------ */
struct keel_client;
/* Where a client command finds its cluster (its options fill this). */
struct keel_cli_cluster {
	const char *endpoints;  /* --endpoints HOST:PORT,... */
	const char *dir;        /* --dir of keel cluster up */
	const char *token_file; /* --token-file */
	uint64_t timeout_ms;    /* --timeout */
};
/* The exit status of a client command that cannot reach its cluster. */
#define KEEL_CLI_UNREACHABLE 3
/* Connects as the header of cli/connect.c says: 0 with *out, or the exit
 * status to return (2 usage, KEEL_CLI_UNREACHABLE), the message printed. */
int keel_cli_connect(const struct keel_cmd_spec *spec, const struct keel_cli_cluster *cl,
		     struct keel_client **out);
/* Only finds the cluster: its endpoints and token ("" when none) into
 * the buffers; 0, or the exit status to return, the message printed. */
int keel_cli_find_cluster(const struct keel_cmd_spec *spec, const struct keel_cli_cluster *cl,
			  char *eps, size_t eps_cap, char *token, size_t token_cap);

#endif
